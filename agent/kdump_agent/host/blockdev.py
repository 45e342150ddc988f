"""Block devices on the host: which file system holds a path, which drivers reach a disk.

mkinitrd uses these to build a lean hostonly image: the capture kernel gets exactly the
drivers that lead to the dump target, nothing else (every module costs reserved memory).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .. import system
from ..errors import KdumpError


@dataclass(frozen=True)
class HostFilesystem:
    """The mounted file system that holds some path on this machine."""

    device: str
    fstype: str
    mountpoint: str
    uuid: str


def nearest_existing(path: str) -> str:
    """path itself or its closest existing ancestor (the dump path may not exist yet)."""
    candidate = Path(path)
    while not candidate.exists() and candidate != candidate.parent:
        candidate = candidate.parent
    return str(candidate)


def filesystem_holding(path: str) -> HostFilesystem:
    """Ask findmnt which file system holds path (RHEL's rule for a config with no target)."""
    result = system.run(
        ["findmnt", "--noheadings", "--first-only", "--output", "SOURCE,FSTYPE,TARGET",
         "--target", nearest_existing(path)],
        timeout=30,
    )
    fields = result.stdout.decode().split()
    if len(fields) != 3:
        raise KdumpError(f"cannot tell which file system holds {path}: findmnt said {fields}")
    device, fstype, mountpoint = fields
    return HostFilesystem(device=device, fstype=fstype, mountpoint=mountpoint, uuid=uuid_of(device))


def uuid_of(device: str) -> str:
    """The file system UUID on device, probed by blkid ("" when it has none)."""
    if not device.startswith("/dev/"):
        return ""
    result = system.run(["blkid", "-p", "-o", "value", "-s", "UUID", device], timeout=30, check=False)
    return result.stdout.decode().strip()


def resolve_spec(spec: str) -> str:
    """The device node of /dev/..., UUID=, LABEL=... on this machine, or a clear error."""
    if spec.startswith("/"):
        if not os.path.exists(spec):
            raise KdumpError(f"target device {spec} does not exist on this machine")
        return os.path.realpath(spec)
    result = system.run(["blkid", "-l", "-o", "device", "-t", spec], timeout=30, check=False)
    device = result.stdout.decode().strip()
    if not device:
        raise KdumpError(f"no device with {spec} on this machine")
    return device


def drivers_for(device: str, sysfs: Path = Path("/sys")) -> list[str]:
    """Kernel modules of every device on the path from the bus to this block device."""
    name = os.path.basename(os.path.realpath(device))
    return drivers_above(sysfs / "class" / "block" / name, sysfs)


def nic_drivers(interface: str, sysfs: Path = Path("/sys")) -> list[str]:
    """Kernel modules of a network interface and the bus it hangs on (virtio_net, virtio_pci)."""
    return drivers_above(sysfs / "class" / "net" / interface, sysfs)


def drivers_above(device_node: Path, sysfs: Path) -> list[str]:
    """Walks a /sys/class entry up through its parents; each `driver/module` link names a
    module (built-in drivers have none and need nothing in the initramfs)."""
    node = device_node.resolve()
    modules: list[str] = []
    while node != node.parent and str(node).startswith(str(sysfs.resolve())):
        module_link = node / "driver" / "module"
        if module_link.exists():
            module = module_link.resolve().name
            if module not in modules:
                modules.append(module)
        node = node.parent
    return modules
