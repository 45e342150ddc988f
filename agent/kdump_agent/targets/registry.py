"""The one place that maps a kind of target to its Destination, and finds the targets that
the image carries records of (mkinitrd's target.json and rootfs.json, and storage.json: the
storage stack under each, storage/kinds.py).

The steps choose their Destination here and ask it everything else (targets/base.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import KdumpError
from ..storage.base import PLAIN_DISK, Stack
from .base import Destination
from .local import FilesystemTarget, LocalDirectory, RunningRoot
from .nfs import NfsDirectory, NfsTarget
from .raw import RawDevice, RawTarget
from .sshdest import SshDestination

Target = FilesystemTarget | NfsTarget | RawTarget | SshDestination


def destination_for(target: Target, stack: Stack = PLAIN_DISK) -> Destination:
    """The Destination that saves a dump on target, on the storage stack under it."""
    if isinstance(target, NfsTarget):
        return NfsDirectory(target)
    if isinstance(target, RawTarget):
        return RawDevice(target, stack)
    if isinstance(target, SshDestination):
        from .sshserver import SshServer  # the SSH side loads only for an SSH target
        return SshServer(target)
    return LocalDirectory(target, stack)


def recorded_stack(recorded_storage: str, role: str) -> Stack:
    """The stack mkinitrd found under the target ("target") or the root ("rootfs"); an empty
    one when the image has no record (a plain disk, a network target)."""
    if not Path(recorded_storage).exists():
        return Stack()
    from ..storage.kinds import stacks_from_json  # the layers' modules load only for a stack
    try:
        stacks = stacks_from_json(Path(recorded_storage).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise KdumpError(f"the storage stack recorded by mkinitrd cannot be read ({recorded_storage}: "
                         f"{error})") from error
    return stacks.get(role, Stack())


def configured(target: Target | None, *, source: str, recorded_target: str, known_hosts: str,
               recorded_storage: str) -> Destination:
    """The configured target's Destination (an SSH server's host keys read from the pin the
    image carries); with no target line, the file system mkinitrd recorded (RHEL's rule)."""
    if isinstance(target, SshDestination):
        return destination_for(dataclasses.replace(target, known_hosts_path=known_hosts))
    stack = recorded_stack(recorded_storage, "target")
    if target is not None:
        return destination_for(target, stack)
    try:
        recorded = FilesystemTarget.from_json(Path(recorded_target).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError) as error:
        raise KdumpError(f"{source}: no dump target configured and none recorded by mkinitrd "
                         f"({recorded_target}: {error})") from error
    return destination_for(recorded, stack)


def running_root(directory: str, root: str) -> Destination:
    """`capture --from-rootfs`: `path` on the root file system this process runs on."""
    return RunningRoot(directory, root)


def recorded_root(recorded_rootfs: str, directory: str, recorded_storage: str) -> LocalDirectory:
    """The root file system mkinitrd recorded, for dump_to_rootfs and mount_root_run_init."""
    try:
        root = FilesystemTarget.from_json(Path(recorded_rootfs).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError) as error:
        raise KdumpError(f"no root file system recorded by mkinitrd ({recorded_rootfs}: {error})") from error
    return LocalDirectory(dataclasses.replace(root, directory=directory),
                          recorded_stack(recorded_storage, "rootfs"))
