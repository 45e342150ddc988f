"""The one place that maps a kind of target to its Destination."""

from __future__ import annotations

from .base import Destination
from .local import FilesystemTarget, LocalDirectory
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
