"""A dump directory on a file system this machine has mounted: made, checked, written.

`path` is a path inside the target file system, and symbolic links on the way are
followed inside it, as if the target's root were `/`: `/var/crash -> /srv/crash` on the
target leads to the target's /srv/crash, never to the capture kernel's own /srv (its
initramfs, in RAM, where a dump is gone at the reboot). Once made, the dump directory must
be on the file system we mounted; anywhere else the dump would not survive.

The record's files get their space before the collector runs (`reserve`) and are written
into it in place later, so a collector that fills the disk cannot leave us unable to say so.
Like system.py, this module touches the machine: it makes directories and writes files.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import KdumpError
from ..layout import KEXEC_DMESG, MANIFEST

log = logging.getLogger("kdump-agent")

MAX_SYMLINKS = 40  # the kernel's own limit when it resolves a path
# Room kept for the record: a manifest is a few KiB, the capture kernel's log rarely 1 MiB.
RESERVED_BYTES = {MANIFEST: 256 << 10, KEXEC_DMESG: 2 << 20}


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


def device_of(path: str) -> int:
    """The device number of the file system that holds path."""
    return os.stat(path).st_dev


def check_on_target(directory: Path, root: str, crosses_mounts: bool) -> None:
    """The dump directory must be on the mounted target, or the dump is lost at the reboot.

    A local target is one file system: the same device as its mountpoint. An NFS export
    may have other exports below it (NFSv4 crosses into them: `crosses_mounts`), so there
    the rule is only that it is not the capture kernel's own root file system.
    """
    made, mounted = device_of(str(directory)), device_of(root)
    if made == mounted or (crosses_mounts and made != device_of("/")):
        return
    raise KdumpError(f"{directory} is not on the dump target mounted on {root} (device "
                     f"{made:#x}, the target's is {mounted:#x}): a dump there would be "
                     f"lost; check `path` and the links along it on the target")


def make_on_target(root: str, directory: str, name: str, *, check: bool, crosses_mounts: bool) -> Path:
    """The dump directory `name` under `directory` of the target reachable at root.

    `check`: the target is a file system we mounted, so the directory must be on it.
    """
    parent = resolve_within(Path(root), directory)
    try:
        made = make_dump_dir(parent, name)
    except (NotADirectoryError, FileExistsError) as error:
        raise KdumpError(f"cannot make the dump directory under {directory} on the dump target: "
                         f"{error.filename} is not a directory") from error
    if check:
        try:
            check_on_target(made, root, crosses_mounts)
        except KdumpError:
            made.rmdir()
            raise
    return made


def reserve(dump_dir: Path) -> None:
    """Allocate the record's files before the collector runs.

    A collector that fills the disk must not leave us unable to say so: the record is later
    written into these blocks in place. Without room even for this, we go on unreserved.
    """
    for name, size in RESERVED_BYTES.items():
        fd = os.open(dump_dir / name, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as error:
            log.warning("could not reserve %d bytes for %s: %s", size, name, error)
        finally:
            os.close(fd)


def write_in_place(path: Path, data: bytes) -> None:
    """Overwrite a (reserved) file from its start, cut it to the new length, fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)
