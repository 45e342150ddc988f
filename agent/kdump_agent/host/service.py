"""`kdump-agent start` and `stop`: what the boot service runs (`service kdump start` in the seed).

start, in kdumpctl's order: refuse without a reservation; restore a dump left on a raw
target (before anything could overwrite it); log one line for each dump taken since the
last boot; rebuild the capture initramfs if its inputs changed; load the capture kernel.
It fails loudly (non-zero, one line saying why) so that `systemctl status` shows a
machine that will not be dumped, or a dump left unrestored.

Nothing but a missing reservation keeps the machine unprotected:
- a restore that fails (a full `path`, an incomplete dump) is logged, kdump is armed all
  the same, and the failure is reported after; the dump stays on the device for the next
  try (restore_raw's rules);
- when the rebuild fails, whatever the reason, but an earlier image exists, that image is
  loaded first, then the failure is reported.
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path

from ..config import Config
from ..errors import KdumpError
from ..targets.raw import RawTarget
from .dumps import list_dumps, summary, taken_since
from .dumpstore import open_store, reachable_here
from .hostpaths import HostPaths
from .kexec import default_kernel, load, plan_load, require_reservation, unload
from .lastboot import previous_boot_start
from .mkinitrd import default_output, mkinitrd
from .restore_raw import Outcome, restore_raw

log = logging.getLogger("kdump-agent")


def restore_raw_dump(config: Config) -> str | None:
    """A dump the capture kernel wrote to a raw device becomes a vmcore under `path`.

    Returns why it did not (logged already), or None. Any error counts: nothing here may
    stop start from arming kdump.
    """
    target = config.dump_target
    if not isinstance(target, RawTarget):
        return None
    try:
        result = restore_raw(target.device, config.path)
    except Exception as error:  # noqa: BLE001 - arming must go on whatever the restore ran into
        failure = f"restore-raw {target.device}: {_one_line(error)}"
        log.error("%s", failure)
        return failure
    if result.outcome is Outcome.INCOMPLETE:
        log.warning("%s", result.message)
        return result.message
    log.info("%s", result.message)
    return None


def log_dumps_since_last_boot(config: Config, paths: HostPaths) -> list[str]:
    """One line in the journal for each dump taken since the boot before this one started
    (its directory, its panic), so that journald and monitoring see a crash. Returns them.

    Only targets this host reaches without the network are looked at: a boot must not wait
    on a server. Any error is logged: nothing here may stop start from arming kdump.
    """
    if not reachable_here(config):
        return []
    try:
        since = previous_boot_start(paths)
        if since is None:
            return []
        with open_store(config, mountinfo=paths.mountinfo) as store:
            found = taken_since(list_dumps(store), since)
            lines = [f"dump taken since the last boot: {summary(dump, store.where)}" for dump in found]
    except Exception as error:  # noqa: BLE001 - arming must go on whatever the listing ran into
        log.warning("could not look for dumps since the last boot: %s", _one_line(error))
        return []
    for line in lines:
        log.warning("%s", line)
    return lines


def start(config: Config, paths: HostPaths, *, binary: Path | None = None, kver: str | None = None) -> str:
    """Arm kdump for this boot; returns the line to print. Raises KdumpError, also when kdump
    is armed but a raw dump could not be restored."""
    require_reservation(paths)
    restore_failure = restore_raw_dump(config)
    log_dumps_since_last_boot(config, paths)
    try:
        armed = arm(config, paths, binary=binary, kver=kver or platform.release())
    except KdumpError as error:
        if restore_failure is None:
            raise
        raise KdumpError(f"{error}; {restore_failure}") from error
    if restore_failure is not None:
        raise KdumpError(f"{armed}; but {restore_failure}")
    return armed


def arm(config: Config, paths: HostPaths, *, binary: Path | None, kver: str) -> str:
    """Rebuild the capture initramfs if needed and load it; returns the line to print.

    A rebuild that fails for any reason (KdumpError, OSError, a bug) falls back to the
    image built before, if there is one: an old image dumps; no image does not.
    """
    image = default_output(kver, paths)
    try:
        built = mkinitrd(config, output=image, binary=binary, kver=kver, paths=paths)
        rebuilt = built.skipped is None
    except Exception as error:
        if not image.exists():
            raise
        reason = _one_line(error)
        log.error("rebuilding %s failed: %s; loading the image built before", image, reason)
        load(plan_load(paths, kernel=default_kernel(paths, kver), initrd=str(image)), paths)
        raise KdumpError(f"the capture kernel is loaded with the previous {image}, which may not match "
                         f"{config.source}: {reason}") from error
    how = load(plan_load(paths, kernel=default_kernel(paths, kver), initrd=str(image)), paths)
    return (f"kdump armed: capture kernel {default_kernel(paths, kver)} loaded ({how}) with {image} "
            f"({'rebuilt' if rebuilt else 'up to date'})")


def _one_line(error: BaseException) -> str:
    """An error as the admin reads it: our errors and the system's speak for themselves; a
    bug is named by its type, since its text alone may say nothing."""
    if isinstance(error, (KdumpError, OSError)):
        return str(error)
    return f"{type(error).__name__}: {error}"


def stop(paths: HostPaths) -> str:
    """Disarm kdump: unload the capture kernel."""
    if unload(paths):
        return "kdump disarmed: capture kernel unloaded"
    return "no capture kernel was loaded: nothing to unload"
