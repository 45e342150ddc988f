"""`kdump-agent start` and `stop`: what the boot service runs (`service kdump start` in the seed).

start, in kdumpctl's order: refuse without a reservation; restore a dump left on a raw
target (before anything could overwrite it); rebuild the capture initramfs if its inputs
changed; load the capture kernel. It fails loudly (non-zero, one line saying why) so that
`systemctl status` shows a machine that will not be dumped. One failure keeps the machine
protected anyway: when the rebuild fails but an earlier image exists, that image is
loaded first, then the failure is reported.
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path

from ..config import Config, TargetKind
from ..errors import KdumpError
from .hostpaths import HostPaths
from .kexec import default_kernel, load, plan_load, require_reservation, unload
from .mkinitrd import default_output, mkinitrd
from .restore_raw import Outcome, restore_raw

log = logging.getLogger("kdump-agent")


def restore_raw_dump(config: Config) -> None:
    """A dump the capture kernel wrote to a raw device becomes a vmcore under `path`.

    An incomplete one is kept as vmcore-incomplete and the device left as it was
    (restore_raw's rules); the capture kernel is loaded all the same.
    """
    if config.target is None or config.target.kind is not TargetKind.RAW:
        return
    result = restore_raw(config.target.spec, config.path)
    if result.outcome is Outcome.INCOMPLETE:
        log.warning("%s", result.message)
    else:
        log.info("%s", result.message)


def start(config: Config, paths: HostPaths, *, binary: Path | None = None, kver: str | None = None) -> str:
    """Arm kdump for this boot; returns the line to print. Raises KdumpError."""
    require_reservation(paths)
    restore_raw_dump(config)
    kver = kver or platform.release()
    image = default_output(kver, paths)
    try:
        built = mkinitrd(config, output=image, binary=binary, kver=kver, paths=paths)
        rebuilt = built.skipped is None
    except KdumpError as error:
        if not image.exists():
            raise
        log.error("rebuilding %s failed: %s; loading the image built before", image, error)
        load(plan_load(paths, kernel=default_kernel(paths, kver), initrd=str(image)), paths)
        raise KdumpError(f"the capture kernel is loaded with the previous {image}, which may not match "
                         f"{config.source}: {error}") from error
    how = load(plan_load(paths, kernel=default_kernel(paths, kver), initrd=str(image)), paths)
    return (f"kdump armed: capture kernel {default_kernel(paths, kver)} loaded ({how}) with {image} "
            f"({'rebuilt' if rebuilt else 'up to date'})")


def stop(paths: HostPaths) -> str:
    """Disarm kdump: unload the capture kernel."""
    if unload(paths):
        return "kdump disarmed: capture kernel unloaded"
    return "no capture kernel was loaded: nothing to unload"
