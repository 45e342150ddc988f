"""MOUNT_TARGET: wait for the target device and mount it."""

from __future__ import annotations

from ..context import Capture
from ..targets.local import DEFAULT_DISK_TIMEOUT, mount_target, wait_for_device
from ..targets.raw import RawTarget


def disk_timeout(capture: Capture) -> float:
    """disk_timeout from kdump.conf, or the default wait for the target device."""
    configured = capture.config.disk_timeout if capture.config else None
    return float(configured) if configured is not None else DEFAULT_DISK_TIMEOUT


def mount(capture: Capture) -> str:
    assert capture.target is not None, "LOAD_CONFIG resolves the target"
    if isinstance(capture.target, RawTarget):
        device = wait_for_device(capture.target.device, disk_timeout(capture))
        return f"raw device {device} is there"
    mountpoint = mount_target(capture.target, capture.paths.mountpoint, disk_timeout(capture))
    capture.mounted.append(mountpoint)
    return f"{capture.target.spec} on {mountpoint}"
