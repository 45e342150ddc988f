"""Local file-system targets: find the device by path, UUID= or LABEL=, wait for it, mount it.

The capture kernel probes its disks in parallel with our start, so the device may appear
seconds later: we wait for it, but never longer than disk_timeout.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import system
from ..errors import CommandFailed, MountError

log = logging.getLogger("kdump-agent")

DEFAULT_DISK_TIMEOUT = 180.0
POLL_SECONDS = 0.5

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
                    sleep: Callable[[float], None] = time.sleep) -> str:
    """Poll for the device until it appears or timeout seconds pass, then fail clearly."""
    give_up = clock() + timeout
    log.info("waiting up to %g s for %s", timeout, spec)
    while True:
        device = find_device(spec)
        if device:
            log.info("target %s is %s", spec, device)
            return device
        if clock() >= give_up:
            raise MountError(f"target device {spec} did not appear within {timeout:g} s")
        sleep(POLL_SECONDS)


def mount_target(target: FilesystemTarget, mountpoint: str, disk_timeout: float) -> str:
    """Wait for the target device and mount it read-write; returns the mountpoint."""
    device = wait_for_device(target.spec, disk_timeout)
    system.mount(device, mountpoint, target.fstype)
    return mountpoint
