"""Where `kdump-agent dumps` finds the dumps of the configured target, read-only.

- no target line (or a raw one, whose dumps restore-raw rebuilds there): `path` on this
  machine, as restore-raw uses it;
- a local file system: where this host has it mounted, `path` resolved inside it as the
  capture kernel does; not mounted here, it cannot be reached (we do not mount disks);
- NFS: the export mounted read-only on a directory of our own, with the capture's soft
  options, unmounted afterwards;
- SSH: a login with `sshkey`, the server's host key checked against the keys this host's
  known_hosts files pin for it, as mkinitrd pins them.

Each is a `dumps.Store`; none of them writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import stat
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .. import system
from ..config import Config
from ..errors import KdumpError, MountError
from ..targets.directory import resolve_within
from ..targets.local import FilesystemTarget
from ..targets.nfs import NfsTarget, mount_options, source
from ..targets.raw import RawTarget
from ..targets.sshdest import SshDestination
from .blockdev import resolve_spec
from .dumps import Entry, Store
from .hostpaths import HostPaths

if TYPE_CHECKING:
    from ..ssh.connection import SshTarget

READ_CHUNK = 1 << 20
SSH_TIMEOUT = 20.0
_OCTAL = re.compile(r"\\([0-7]{3})")  # mountinfo's escapes: space is \040


class LocalStore:
    """A directory this machine can read: `path`, a mounted file system, an NFS mount."""

    def __init__(self, root: Path, where: str | None = None) -> None:
        self.root = root
        self.where = where or str(root)

    def entries(self, path: str) -> list[Entry]:
        found = []
        with os.scandir(self.root / path) as names:
            for each in names:
                try:
                    info = each.stat(follow_symlinks=False)
                except OSError:
                    continue  # gone meanwhile
                found.append(Entry(each.name, stat.S_ISDIR(info.st_mode), info.st_size, info.st_mtime))
        return found

    def read_small(self, path: str, limit: int) -> bytes:
        with open(self.root / path, "rb") as file:
            return file.read(limit)

    def sha256(self, path: str, size: int) -> str:
        digest = hashlib.sha256()
        with open(self.root / path, "rb") as file:
            while chunk := file.read(READ_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()


class SshStore:
    """The dump directories on an SSH server, read through the logged-in connection."""

    def __init__(self, connection: SshTarget, directory: str) -> None:
        self.connection = connection
        self.directory = directory
        self.where = f"{connection.destination}:{directory}"

    def entries(self, path: str) -> list[Entry]:
        return [Entry(each.name, each.is_dir, each.size, each.mtime)
                for each in self.connection.listdir(self._path(path))]

    def read_small(self, path: str, limit: int) -> bytes:
        return self.connection.read_small(self._path(path), limit)

    def sha256(self, path: str, size: int) -> str:
        return self.connection.sha256(self._path(path), size)

    def _path(self, path: str) -> str:
        return posixpath.join(self.directory, path) if path else self.directory


@dataclass(frozen=True)
class MountEntry:
    """A line of /proc/self/mountinfo, as far as finding a target needs it."""

    device: int  # st_rdev of the source (makedev of maj:min)
    root: str  # the part of the file system mounted there: "/" for all of it
    mountpoint: str
    fstype: str
    source: str


def read_mountinfo(path: str) -> list[MountEntry]:
    """This machine's mounts (octal escapes in paths undone, as the kernel writes them)."""
    entries = []
    for raw in (system.read_text(path) or "").splitlines():
        fields, _, tail = raw.partition(" - ")
        parts, rest = fields.split(), tail.split()
        if len(parts) < 5 or len(rest) < 2:
            continue
        major, _, minor = parts[2].partition(":")
        entries.append(MountEntry(os.makedev(int(major), int(minor)), _unescape(parts[3]),
                                  _unescape(parts[4]), rest[0], _unescape(rest[1])))
    return entries


def _unescape(text: str) -> str:
    return _OCTAL.sub(lambda match: chr(int(match[1], 8)), text)


def mounted_at(target: FilesystemTarget, mounts: Sequence[MountEntry]) -> str:
    """Where this host has the target's whole file system mounted; KdumpError if nowhere."""
    if target.fstype == "virtiofs":
        found = [m for m in mounts if m.fstype == "virtiofs" and m.source == target.spec and m.root == "/"]
    else:
        device = os.stat(resolve_spec(target.spec)).st_rdev
        found = [m for m in mounts if m.device == device and m.root == "/"]
    if not found:
        raise KdumpError(f"{target.spec} ({target.fstype}) is not mounted on this host: its dumps cannot "
                         f"be reached here (mount it, or give --path)")
    return found[0].mountpoint


def nfs_read_only_options(version: str, server_address: str) -> tuple[str, str]:
    """The fstype and options the export is listed with: the capture's, read-only."""
    return ("nfs4" if version == "4" else "nfs"), f"ro,{mount_options(version, server_address, None)}"


def reachable_here(config: Config) -> bool:
    """Whether the target's dumps are on this machine (no network): status and the boot
    line look only there."""
    return not isinstance(config.dump_target, (NfsTarget, SshDestination))


@contextlib.contextmanager
def open_store(config: Config | None, *, path: str | None = None,
               known_hosts_files: Sequence[str] = (),
               mountinfo: str = HostPaths.mountinfo) -> Iterator[Store]:
    """The store of `--path`, else of the config's target; let go of it afterwards."""
    if path is not None:
        yield LocalStore(Path(path))
        return
    assert config is not None, "without --path the config says where"
    target = config.dump_target
    if target is None or isinstance(target, RawTarget):
        yield LocalStore(Path(config.path))
    elif isinstance(target, FilesystemTarget):
        mountpoint = mounted_at(target, read_mountinfo(mountinfo))
        root = resolve_within(Path(mountpoint), target.directory)
        yield LocalStore(root, f"{target.spec}:{target.directory} (on {mountpoint})")
    elif isinstance(target, NfsTarget):
        with nfs_store(target) as store:
            yield store
    else:
        with ssh_store(target, known_hosts_files) as ssh:
            yield ssh


@contextlib.contextmanager
def nfs_store(target: NfsTarget) -> Iterator[LocalStore]:
    """The export mounted read-only on a fresh directory; unmounted and removed after."""
    from ..network.bringup import resolve

    address = resolve(target.server)
    with tempfile.TemporaryDirectory(prefix="kdump-agent-nfs-") as mountpoint:
        refused = []
        for version in target.versions:  # newest first, as the capture mounts it
            fstype, options = nfs_read_only_options(version, address)
            try:
                system.mount(source(address, target.export), mountpoint, fstype, options)
                break
            except MountError as error:
                refused.append(f"NFSv{version}: {error}")
        else:
            raise MountError(f"cannot mount {target.spec} read-only: {'; '.join(refused)}")
        try:
            root = resolve_within(Path(mountpoint), target.directory)
            yield LocalStore(root, f"{target.spec}:{target.directory}")
        finally:
            system.umount(mountpoint)


@contextlib.contextmanager
def ssh_store(target: SshDestination, known_hosts_files: Sequence[str]) -> Iterator[SshStore]:
    """A login to the server with the host's pins written where SshTarget reads them."""
    from ..ssh.connection import SshTarget  # paramiko: SSH only
    from .netpack import pinned_known_hosts

    pins = pinned_known_hosts(target, f"ssh {target}", known_hosts_files)
    with tempfile.TemporaryDirectory(prefix="kdump-agent-pins-") as scratch:
        known_hosts = os.path.join(scratch, "known_hosts")
        Path(known_hosts).write_text(pins, encoding="utf-8")
        connection = SshTarget.connect(replace(target, known_hosts_path=known_hosts), SSH_TIMEOUT)
    with connection:
        yield SshStore(connection, target.directory)
