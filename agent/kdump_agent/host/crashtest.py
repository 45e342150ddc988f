"""`kdump-agent test`: crash the running kernel on purpose, to prove the dump works.

The seed article's test: `echo c > /proc/sysrq-trigger`. It is refused unless a capture
kernel is loaded (otherwise the machine just goes down and nothing is learned), asks
first, and syncs the file systems before, so the crash loses no written data.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from ..errors import KdumpError
from .hostpaths import HostPaths, crash_loaded
from .prompt import confirm

log = logging.getLogger("kdump-agent")

CRASH = "c"


def sync() -> None:
    """Write every dirty page out before the crash."""
    os.sync()


def trigger(sysrq_trigger: str) -> None:
    """Ask the kernel to crash now (sysrq-c); returns only if it did not."""
    with open(sysrq_trigger, "w", encoding="ascii") as trigger_file:
        trigger_file.write(CRASH)


def crash_now(paths: HostPaths, *, assume_yes: bool = False, ask: Callable[[str], str] = input) -> None:
    """Crash the kernel into the capture kernel. Returns only when the admin did not say yes.

    Raises KdumpError when no capture kernel is loaded, or when the kernel survived.
    """
    if not crash_loaded(paths):
        raise KdumpError(f"no capture kernel is loaded ({paths.crash_loaded} is not 1): a crash now "
                         "would not be dumped. Run `kdump-agent start` first, then `kdump-agent status`")
    question = ("This crashes the running kernel NOW: every program stops, the capture kernel "
                "saves the dump, then the machine reboots.")
    if not assume_yes and not confirm(question, ask):
        return
    log.info("syncing file systems, then crashing through %s", paths.sysrq_trigger)
    sync()
    trigger(paths.sysrq_trigger)
    raise KdumpError(f"wrote {CRASH!r} to {paths.sysrq_trigger} but the kernel is still running")
