"""PREPARE_DIR: make `<path>/<host-ip>-<YYYY-MM-DD-HH:MM:SS>/`, mode 0700, on the target.

The name is the one RHEL's tools and admins' scripts expect: network targets use our
address towards the server, local targets 127.0.0.1.

`path` is a path inside the target file system, and symbolic links on the way are
followed inside it, as if the target's root were `/`: `/var/crash -> /srv/crash` on the
target leads to the target's /srv/crash, never to the capture kernel's own /srv (its
initramfs, in RAM, where a dump is gone at the reboot). Once made, the dump directory must
be on the file system we mounted; anywhere else the dump would not survive, so the state
fails and the failure action runs.

A raw device has no directory: its "preparation" is the check that it holds nothing a
dump would destroy (targets/raw.py), made here, before the collector writes a byte.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..context import Capture
from ..errors import CommandFailed, KdumpError
from ..targets import raw
from ..targets.nfs import NfsTarget
from .record import reserve

LOCAL_HOST_ADDRESS = "127.0.0.1"
MAX_SYMLINKS = 40  # the kernel's own limit when it resolves a path


def dump_dir_name(host_address: str, when: time.struct_time) -> str:
    return f"{host_address}-{time.strftime('%Y-%m-%d-%H:%M:%S', when)}"


def make_dump_dir(parent: Path, name: str) -> Path:
    """Create parent (0700 parts as needed) and a fresh dump directory in it.

    An existing directory of the same name (two dumps in one second) is never reused: the
    new one gets a suffix, so nothing already saved is overwritten.
    """
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    candidate = parent / name
    suffix = 1
    while True:
        try:
            candidate.mkdir(mode=0o700)
        except FileExistsError:
            suffix += 1
            candidate = parent / f"{name}-{suffix}"
            continue
        os.chmod(candidate, 0o700)
        return candidate


def resolve_within(root: Path, directory: str) -> Path:
    """`directory` below root, its symbolic links followed as if root were `/`.

    An absolute link starts again at root, `..` never climbs above it, and the part of
    the path that does not exist yet is kept as written (make_dump_dir creates it). Like
    openat2(RESOLVE_IN_ROOT), which Python does not offer.
    """
    pending = [part for part in directory.split("/") if part]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        here = root.joinpath(*resolved, part)
        if not here.is_symlink():
            resolved.append(part)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise KdumpError(f"{directory} on the dump target: more than {MAX_SYMLINKS} symbolic links")
        target = os.readlink(here)
        if target.startswith("/"):
            resolved = []
        pending = [p for p in target.split("/") if p] + pending
    return root.joinpath(*resolved)


def check_on_target(directory: Path, root: str, network: bool) -> None:
    """The dump directory must be on the mounted target, or the dump is lost at the reboot.

    A local target is one file system: the same device as its mountpoint. An NFS export
    may have other exports below it (NFSv4 crosses into them), so there the rule is only
    that it is not the capture kernel's own root file system.
    """
    made, mounted = device_of(str(directory)), device_of(root)
    if made == mounted or (network and made != device_of("/")):
        return
    raise KdumpError(f"{directory} is not on the dump target mounted on {root} (device "
                     f"{made:#x}, the target's is {mounted:#x}): a dump there would be "
                     f"lost; check `path` and the links along it on the target")


def device_of(path: str) -> int:
    """The device number of the file system that holds path."""
    return os.stat(path).st_dev


def check_raw_device(device: str) -> str:
    """Refuse a raw target that holds anything: a dump would overwrite it from byte 0."""
    try:
        found = raw.signature(device)
    except CommandFailed as error:
        raise KdumpError(f"cannot tell what raw target {device} holds ({error}): "
                         "not writing to it") from error
    if found:
        raise KdumpError(f"raw target {device} holds {found} (blkid): a raw dump would destroy it, "
                         f"so it is left untouched; point `raw` at an empty partition or LV")
    return f"raw device {device} holds no file system, RAID, LVM or partition table"


def prepare(capture: Capture) -> str:
    if isinstance(capture.target, raw.RawTarget):
        return check_raw_device(capture.target.device)
    when = time.localtime(capture.started_wall)
    if capture.remote is not None:  # SSH: the directory is made on the server
        capture.remote_dir = capture.remote.make_dump_dir(dump_dir_name(capture.remote.local_address, when))
        return f"{capture.target}:{capture.remote_dir}"
    assert capture.target is not None and capture.target_root, "MOUNT_TARGET ran"
    root = Path(capture.target_root)
    parent = resolve_within(root, capture.target.directory)
    name = dump_dir_name(capture.local_address or LOCAL_HOST_ADDRESS, when)
    try:
        made = make_dump_dir(parent, name)
    except (NotADirectoryError, FileExistsError) as error:
        raise KdumpError(f"cannot make the dump directory under {capture.target.directory} on the "
                         f"dump target: {error.filename} is not a directory") from error
    if capture.target_root in capture.mounted:
        try:
            check_on_target(made, capture.target_root, isinstance(capture.target, NfsTarget))
        except KdumpError:
            made.rmdir()
            raise
    capture.dump_dir = made
    reserve(made)
    return str(made)
