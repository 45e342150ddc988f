"""The estimate for this machine: its RAM, its capture kernel and initramfs, measured.

A file that is missing (no image built yet) or cannot be read is counted as the figure
from the benchmark machine, and the report says so: an estimate with one stand-in is still
what an admin needs before the first build.
"""

from __future__ import annotations

import os
import shutil

from .. import system
from ..config import Config
from ..errors import KdumpError
from .estimate import (
    INITRAMFS_STAND_IN,
    KERNEL_STAND_IN,
    Estimate,
    Part,
    agent_part,
    links_part,
    makedumpfile_part,
    mib,
    runtime_part,
)
from .hostpaths import HostPaths, crash_size, system_ram
from .imagesize import initramfs_unpacked_bytes, kernel_memory
from .mkinitrd import hostonly_wanted, target_device
from .netpack import record_here, server_host
from .stackpack import storage_pack

# Programs every capture image holds (module-setup.sh, dracut's base and udev): a storage
# tool's libraries that these need too are in the stand-in image already.
BASE_PROGRAMS = ("blkid", "udevadm", "kmod", "makedumpfile", "bash")
BASE_LIBRARIES = ("libm.so.",)  # module-setup.sh installs libm for the frozen agent


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


def libraries(program: str) -> set[str]:
    """The shared libraries a program loads, as ldd resolves them on this host."""
    result = system.run(["ldd", program], timeout=30, check=False, echo=False)
    return {os.path.realpath(fields[2]) for line in result.stdout.decode(errors="replace").splitlines()
            if len(fields := line.split()) >= 3 and fields[1] == "=>" and fields[2].startswith("/")}


def storage_part(config: Config | None, image: str) -> Part | None:
    """The storage stack's tools when the image is not built yet: the stand-in image has
    none, and a built image's measured size counts them already. Their files and the
    libraries only they need, measured here; None for a target on a plain disk."""
    if config is None or os.path.exists(image):
        return None
    try:
        device = target_device(config)
        programs = storage_pack(config, device, "", hostonly=hostonly_wanted(config.dracut_args)).programs \
            if device else []
    except (KdumpError, OSError):
        return None  # status and mkinitrd say what is wrong with the target
    if not programs:
        return None
    base = set().union(*(libraries(found) for name in BASE_PROGRAMS
                         if (found := shutil.which(name, path=system.CLEAN_PATH))))
    files = set(map(os.path.realpath, programs)).union(*(libraries(program) for program in programs)) - base
    size = sum(os.path.getsize(path) for path in files
               if os.path.exists(path) and not os.path.basename(path).startswith(BASE_LIBRARIES))
    names = ", ".join(os.path.basename(program) for program in programs)
    return Part("storage tools", size, f"{names} and the libraries only they need, measured here "
                "(the image is not built yet)")


def network_links_part(config: Config | None) -> Part | None:
    """What building bonds, VLANs or bridges on the way to the server costs the capture
    kernel (hostonly: the route mkinitrd records), as `make bench` measured it; None for a
    server reached through a plain NIC, a local target, or a route that cannot be recorded
    (mkinitrd says why)."""
    host = server_host(config) if config is not None else None
    if config is None or host is None or not hostonly_wanted(config.dracut_args):
        return None
    try:
        plan = record_here(host).plan()
    except KdumpError:
        return None
    return links_part(plan.modules()) if plan.links else None


def estimate_here(config: Config | None, paths: HostPaths, *, kernel: str, image: str) -> Estimate:
    """The estimate for this machine with the config's target (a local one without a config)."""
    ram = system_ram(paths)
    kind = config.target.kind if config is not None and config.target is not None else None
    extras = [part for part in (storage_part(config, image), network_links_part(config)) if part]
    parts = (kernel_part(kernel), runtime_part(), initramfs_part(image), *extras, agent_part(kind),
             makedumpfile_part(ram))
    return Estimate(ram=ram, parts=parts, reserved=crash_size(paths))
