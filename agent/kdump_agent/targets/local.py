"""Local file-system targets: find the device by path, UUID= or LABEL=, wait for it, mount it,
and save the dump in a directory on it (`LocalDirectory`).

The capture kernel probes its disks in parallel with our start, so the device may appear
seconds later: we wait for it, but never longer than disk_timeout. A file system on LVM, md
RAID, multipath or iSCSI comes up first, layer by layer (storage/), within the same
disk_timeout (`reach`).

The vmcore counts as saved once it is renamed from vmcore-incomplete, after its fsync.
A vmcore that COLLECT wrote here in order (a collector on its standard output) was hashed
as it was written. One that makedumpfile or cp wrote with seeks is read back for the
record's sha256 (steps/collect.py says why): work that grows with the dump (a 1 TiB
machine's vmcore over 1 GbE NFS is hours of it); it gets a share of FINALIZE's deadline,
which grows with the dump as the collector's does, and past it the record says the vmcore
was not hashed. Nothing after the rename may fail the dump, or the failure action would
save the same dump a second time.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .. import system
from ..errors import CommandFailed, KdumpError, MountError
from ..layout import (
    DMESG,
    KEXEC_DMESG,
    LOCAL_HOST_ADDRESS,
    MANIFEST,
    VMCORE,
    dump_dir_name,
    parse_dump_dir_name,
    partial,
)
from ..rotation import MANIFEST_READ_LIMIT, Entry, ExistingDump, examine, removal_order
from ..storage.base import PLAIN_DISK, Stack
from .base import Destination, DumpState, FileRecord, FileSink, Sink, log_manifest, record_document
from .directory import make_on_target, reserve, resolve_within, write_in_place

log = logging.getLogger("kdump-agent")

DEFAULT_DISK_TIMEOUT = 180.0
POLL_SECONDS = 0.5
RESCAN_SECONDS = 3.0
# Kept back from FINALIZE's deadline for what follows the vmcore's sha256.
HASH_MARGIN_SECONDS = 10.0

# udev's persistent-storage rules make these links; blkid is the fallback when udev did not.
_BY_LINK = {"UUID": "by-uuid", "LABEL": "by-label", "PARTUUID": "by-partuuid", "PARTLABEL": "by-partlabel"}


@dataclass(frozen=True)
class FilesystemTarget:
    """A file system to dump to, and the directory on it (relative to its root)."""

    spec: str  # /dev/vdb, UUID=..., LABEL=...
    fstype: str
    directory: str  # e.g. "/var/crash"

    def as_json(self) -> str:
        return json.dumps({"spec": self.spec, "fstype": self.fstype, "directory": self.directory})

    @classmethod
    def from_json(cls, text: str) -> FilesystemTarget:
        data = json.loads(text)
        return cls(spec=str(data["spec"]), fstype=str(data["fstype"]), directory=str(data["directory"]))


def udev_link(spec: str) -> str | None:
    """The /dev/disk/by-* link udev makes for a TAG=value spec (with udev's escaping)."""
    tag, sep, value = spec.partition("=")
    if not sep or tag not in _BY_LINK:
        return None
    escaped = "".join(c if c.isalnum() or c in "#+-.:=@_" else f"\\x{ord(c):02x}" for c in value)
    return f"/dev/disk/{_BY_LINK[tag]}/{escaped}"


def find_device(spec: str) -> str | None:
    """The device node for spec now, or None if it has not appeared (yet)."""
    if spec.startswith("/"):
        return spec if os.path.exists(spec) else None
    link = udev_link(spec)
    if link and os.path.exists(link):
        return os.path.realpath(link)
    try:
        found = system.run(["blkid", "-c", "/dev/null", "-l", "-o", "device", "-t", spec],
                           timeout=10, check=False, echo=False)
    except CommandFailed:
        return None
    device = found.stdout.decode(errors="replace").strip()
    return device or None


def wait_for_device(spec: str, timeout: float, clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep, also: str | None = None,
                    between: Callable[[], None] | None = None,
                    find: Callable[[str], str | None] | None = None) -> str:
    """Poll for the device until it appears or timeout seconds pass, then fail clearly.
    `also`: the node a storage stack made for it, for a name that needs a udev link the
    capture kernel lacks (/dev/disk/by-id/dm-name-...). `between`: called every
    RESCAN_SECONDS while waiting (a generic image's stack, assembling what appeared). `find`:
    how the device is found (a multipath map's, among the map's devices only)."""
    started = clock()
    give_up = started + timeout
    rescanned = started
    log.info("waiting up to %g s for %s", timeout, spec)
    while True:
        device = (find or find_device)(spec) or (find_device(also) if also else None)
        if device:
            log.info("target %s is %s", spec, device)
            return device
        if clock() >= give_up:
            raise MountError(f"target device {spec} did not appear within {timeout:g} s")
        sleep(POLL_SECONDS)
        if between is not None and clock() - rescanned >= RESCAN_SECONDS:
            between()
            rescanned = clock()


def reach(spec: str, stack: Stack, timeout: float) -> tuple[str, str]:
    """The device for spec, its storage stack brought up first, all within timeout seconds:
    (device, what the stack's layers did, for the journal)."""
    give_up_at = time.monotonic() + timeout
    notes = stack.bring_up(give_up_at) if stack else []
    # What the stack left of disk_timeout (a plain disk has it all, and its error says so).
    left = round(max(0.0, give_up_at - time.monotonic()), 1) if stack else timeout
    device = wait_for_device(spec, left, also=stack.node(),
                             between=(lambda: stack.bring_up_again(give_up_at)) if stack.generic else None,
                             find=stack.locator())
    return device, "; ".join(notes)


class MountedTarget(Protocol):
    """What LocalDirectory needs of its target: a file system (on a disk, or NFS) and `path`."""

    @property
    def spec(self) -> str: ...
    @property
    def fstype(self) -> str: ...
    @property
    def directory(self) -> str: ...


class LocalDirectory(Destination):
    """A file system on a disk: mounted by the capture kernel, the dump in a directory on it."""

    crosses_mounts = False  # the dump directory must be on the mounted device itself

    def __init__(self, target: MountedTarget, stack: Stack = PLAIN_DISK) -> None:
        self.target = target
        self.stack = stack
        self.server = stack.server()  # an iSCSI portal: NETWORK_UP reaches it first

    def describe(self) -> str:
        on = f" on {self.stack.describe()}" if self.stack else ""
        return f"{self.target.fstype} {self.target.spec}{on}, path {self.target.directory}"

    def manifest_target(self) -> dict[str, str | None]:
        return {"spec": self.target.spec, "fstype": self.target.fstype, "path": self.target.directory}

    def attach(self, state: DumpState, *, mountpoint: str, disk_timeout: float) -> str:
        device, stacked = reach(self.target.spec, self.stack, disk_timeout)
        system.mount(device, mountpoint, self.target.fstype)
        state.mounted.append(mountpoint)
        state.root = mountpoint
        return f"{self.target.spec} on {mountpoint}" + (f" ({stacked})" if stacked else "")

    def prepare(self, state: DumpState, when: time.struct_time) -> str:
        assert state.root is not None, "MOUNT_TARGET ran"
        name = dump_dir_name(state.local_address or LOCAL_HOST_ADDRESS, when)
        made = make_on_target(state.root, self.target.directory, name, check=state.root in state.mounted,
                              crosses_mounts=self.crosses_mounts)
        state.directory = str(made)
        reserve(made)
        return str(made)

    def local_directory(self, state: DumpState) -> Path | None:
        return Path(state.directory) if state.directory else None

    def dmesg_scratch(self, state: DumpState, scratch: str) -> Path | None:
        return self.local_directory(state)

    def keep_dmesg(self, state: DumpState, partial_path: Path, name: str) -> str:
        os.rename(partial_path, partial_path.with_name(name))
        return name

    def sink(self, state: DumpState) -> Sink:
        assert state.directory is not None, "PREPARE_DIR ran"
        return FileSink(Path(state.directory) / partial(VMCORE))

    def finalize(self, state: DumpState, timeout: float) -> str:
        started = time.monotonic()
        assert state.directory is not None, "PREPARE_DIR ran"
        directory = Path(state.directory)
        incomplete = directory / partial(VMCORE)
        os.chmod(incomplete, 0o600)
        system.fsync(incomplete)
        os.rename(incomplete, directory / VMCORE)
        system.fsync(directory)
        state.vmcore_saved = True
        give_up_at = started + max(0.0, timeout - HASH_MARGIN_SECONDS)
        if (directory / DMESG).exists():
            state.files.append(_recorded(state, directory / DMESG, give_up_at))
        written = state.written
        if written is not None and written.size == (directory / VMCORE).stat().st_size:
            state.files.append(FileRecord(VMCORE, written.size, written.sha256))
        else:
            state.files.append(_recorded(state, directory / VMCORE, give_up_at))
        vmcore = state.files[-1]
        return f"{VMCORE}: {vmcore.size} bytes" + ("" if vmcore.sha256 else ", not hashed")

    def save_record(self, state: DumpState, manifest: dict[str, object], kernel_log: str) -> None:
        if state.directory is None or not os.path.isdir(state.directory):
            log_manifest(manifest)  # nowhere to write it: the kernel log keeps it
            return
        for name, data in ((MANIFEST, record_document(manifest)), (KEXEC_DMESG, kernel_log.encode())):
            try:
                write_in_place(Path(state.directory) / name, data)
            except OSError as error:
                log.error("could not write %s: %s", name, error)
        system.sync()

    def release(self, state: DumpState) -> None:
        """Sync and unmount what we mounted; a busy mount is left as it is (it is synced)."""
        system.sync()
        self._unmount(state, force=False)

    def _unmount(self, state: DumpState, *, force: bool) -> None:
        while state.mounted:
            mountpoint = state.mounted.pop()
            try:
                system.umount(mountpoint, force=force)
            except OSError as error:
                log.warning("%s", error)

    def where(self, state: DumpState) -> str | None:
        return state.directory

    def dump_host(self, state: DumpState) -> str | None:
        return state.local_address or LOCAL_HOST_ADDRESS

    def _parent(self, state: DumpState) -> Path:
        """`path` on the target: where the dump directories are."""
        assert state.root is not None, "MOUNT_TARGET ran"
        return resolve_within(Path(state.root), self.target.directory)

    def old_dumps(self, state: DumpState) -> list[ExistingDump]:
        parent = self._parent(state)
        if not parent.is_dir():
            return []
        found = []
        with os.scandir(parent) as listing:
            for item in listing:
                if parse_dump_dir_name(item.name) is None or not item.is_dir(follow_symlinks=False):
                    continue
                try:
                    dump = _examine_local(Path(item.path))
                except OSError as error:
                    log.warning("rotation: cannot read %s: %s; leaving it alone", item.path, error)
                    continue
                if dump is not None:
                    found.append(dump)
        return found

    def remove_dump(self, state: DumpState, name: str) -> None:
        directory = self._parent(state) / name
        if directory.is_symlink() or _examine_local(directory) is None:
            raise KdumpError(f"{directory} is no longer a dump directory of ours: left alone")
        for file in removal_order(os.listdir(directory)):
            os.unlink(directory / file)
        os.rmdir(directory)
        system.fsync(directory.parent)

    def free_bytes(self, state: DumpState) -> int | None:
        where = state.directory or str(self._parent(state))
        stats = os.statvfs(where)
        return stats.f_bavail * stats.f_frsize

    def mount_for_init(self, newroot: str, disk_timeout: float) -> str:
        """mount_root_run_init: mount this file system where dracut's init switches to it,
        if it has an init to switch to."""
        device, _ = reach(self.target.spec, self.stack, disk_timeout)
        system.mount(device, newroot, self.target.fstype)
        if not os.path.lexists(os.path.join(newroot, "sbin", "init")):
            system.umount(newroot)
            raise KdumpError(f"the root file system {self.target.spec} has no /sbin/init")
        return f"{self.target.spec} mounted on {newroot}; its /sbin/init carries on"


class RunningRoot(LocalDirectory):
    """`capture --from-rootfs`: the root file system this process runs on, mounted by its
    own boot (the seed's steps 12-13 after mount_root_run_init)."""

    def __init__(self, directory: str, root: str) -> None:
        super().__init__(FilesystemTarget(spec="/", fstype="rootfs", directory=directory))
        self.root = root

    def attach(self, state: DumpState, *, mountpoint: str, disk_timeout: float) -> str:
        state.root = self.root
        return "the running root file system: nothing to mount"


def _examine_local(directory: Path) -> ExistingDump | None:
    """rotation.examine on a directory here: its entries as lstat shows them, its record."""
    entries = []
    manifest = None
    with os.scandir(directory) as listing:
        for item in listing:
            info = item.stat(follow_symlinks=False)
            regular = item.is_file(follow_symlinks=False)
            entries.append(Entry(item.name, info.st_size, regular))
            if item.name == MANIFEST and regular:
                with open(item.path, "rb") as record:
                    manifest = record.read(MANIFEST_READ_LIMIT + 1)
    return examine(directory.name, entries, manifest)


def _recorded(state: DumpState, path: Path, give_up_at: float) -> FileRecord:
    """The file's size and sha256; without the sha256 (and a note saying why) when reading
    it back fails or runs out of time."""
    size = path.stat().st_size
    try:
        return FileRecord(path.name, size, system.file_sha256(path, give_up_at=give_up_at))
    except (OSError, TimeoutError) as error:
        log.warning("%s is saved, but not hashed: %s", path, error)
        state.notes.append(f"{path.name} not hashed: {error}")
        return FileRecord(path.name, size, None)
