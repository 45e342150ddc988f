"""The one place that maps a kind of target to its Destination, and finds the targets that
the image carries records of (mkinitrd's target.json and rootfs.json).

The steps choose their Destination here and ask it everything else (targets/base.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import KdumpError
from .base import Destination
from .local import FilesystemTarget, LocalDirectory, RunningRoot
from .nfs import NfsDirectory, NfsTarget
from .raw import RawDevice, RawTarget
from .sshdest import SshDestination
from .sshserver import SshServer

Target = FilesystemTarget | NfsTarget | RawTarget | SshDestination


def destination_for(target: Target) -> Destination:
    """The Destination that saves a dump on target."""
    if isinstance(target, NfsTarget):
        return NfsDirectory(target)
    if isinstance(target, RawTarget):
        return RawDevice(target)
    if isinstance(target, SshDestination):
        return SshServer(target)
    return LocalDirectory(target)


def configured(target: Target | None, *, source: str, recorded_target: str, known_hosts: str) -> Destination:
    """The configured target's Destination (an SSH server's host keys read from the pin the
    image carries); with no target line, the file system mkinitrd recorded (RHEL's rule)."""
    if isinstance(target, SshDestination):
        return destination_for(dataclasses.replace(target, known_hosts_path=known_hosts))
    if target is not None:
        return destination_for(target)
    try:
        return destination_for(FilesystemTarget.from_json(Path(recorded_target).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError) as error:
        raise KdumpError(f"{source}: no dump target configured and none recorded by mkinitrd "
                         f"({recorded_target}: {error})") from error


def running_root(directory: str, root: str) -> Destination:
    """`capture --from-rootfs`: `path` on the root file system this process runs on."""
    return RunningRoot(directory, root)


def recorded_root(recorded_rootfs: str, directory: str) -> LocalDirectory:
    """The root file system mkinitrd recorded, for dump_to_rootfs and mount_root_run_init."""
    try:
        root = FilesystemTarget.from_json(Path(recorded_rootfs).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError) as error:
        raise KdumpError(f"no root file system recorded by mkinitrd ({recorded_rootfs}: {error})") from error
    return LocalDirectory(dataclasses.replace(root, directory=directory))
