"""MOUNT_TARGET: reach the target as its Destination does it: mount a file system or an NFS
export, wait for a raw device, or log in to an SSH server (the connection then serves
every later state up to the action)."""

from __future__ import annotations

from ..context import Capture
from ..deadlines import disk_timeout

ROOT = "/"  # the running root file system, for `capture --from-rootfs`


def mount(capture: Capture) -> str:
    assert capture.destination is not None, "LOAD_CONFIG chose the destination"
    return capture.destination.attach(capture.dump, mountpoint=capture.paths.mountpoint,
                                      disk_timeout=disk_timeout(capture))
