"""The estimate for this machine: its RAM, its capture kernel and initramfs, measured.

A file that is missing (no image built yet) or cannot be read is counted as the figure
from the benchmark machine, and the report says so: an estimate with one stand-in is still
what an admin needs before the first build.
"""

from __future__ import annotations

import os

from ..config import Config
from ..errors import KdumpError
from .estimate import (
    INITRAMFS_STAND_IN,
    KERNEL_STAND_IN,
    Estimate,
    Part,
    agent_part,
    makedumpfile_part,
    mib,
    runtime_part,
)
from .hostpaths import HostPaths, crash_size, system_ram
from .imagesize import initramfs_unpacked_bytes, kernel_memory


def kernel_part(kernel: str) -> Part:
    try:
        size, how = kernel_memory(kernel)
    except OSError as error:
        return Part("capture kernel", KERNEL_STAND_IN,
                    f"{kernel}: {error.strerror or error}; counted as Debian 12's cloud kernel")
    return Part("capture kernel", size, how)


def initramfs_part(image: str) -> Part:
    try:
        size = initramfs_unpacked_bytes(image)
    except FileNotFoundError:
        return Part("initramfs, unpacked", INITRAMFS_STAND_IN,
                    f"{image} not built yet; counted as the benchmark's image")
    except (OSError, KdumpError) as error:
        return Part("initramfs, unpacked", INITRAMFS_STAND_IN,
                    f"cannot measure {image} ({error}); counted as the benchmark's image")
    return Part("initramfs, unpacked", size,
                f"measured: {image} ({mib(os.path.getsize(image))} compressed)")


def estimate_here(config: Config | None, paths: HostPaths, *, kernel: str, image: str) -> Estimate:
    """The estimate for this machine with the config's target (a local one without a config)."""
    ram = system_ram(paths)
    kind = config.target.kind if config is not None and config.target is not None else None
    parts = (kernel_part(kernel), runtime_part(), initramfs_part(image), agent_part(kind),
             makedumpfile_part(ram))
    return Estimate(ram=ram, parts=parts, reserved=crash_size(paths))
