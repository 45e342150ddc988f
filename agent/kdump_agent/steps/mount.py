"""MOUNT_TARGET: wait for the target device and mount it."""

from __future__ import annotations

from ..context import Capture
from ..deadlines import disk_timeout
from ..targets.local import mount_target, wait_for_device
from ..targets.raw import RawTarget

ROOT = "/"  # the running root file system, for `capture --from-rootfs`


def mount(capture: Capture) -> str:
    assert capture.target is not None, "LOAD_CONFIG resolves the target"
    if isinstance(capture.target, RawTarget):
        device = wait_for_device(capture.target.device, disk_timeout(capture))
        return f"raw device {device} is there"
    if capture.from_rootfs:
        capture.target_root = ROOT
        return "the running root file system: nothing to mount"
    mountpoint = mount_target(capture.target, capture.paths.mountpoint, disk_timeout(capture))
    capture.mounted.append(mountpoint)
    capture.target_root = mountpoint
    return f"{capture.target.spec} on {mountpoint}"
