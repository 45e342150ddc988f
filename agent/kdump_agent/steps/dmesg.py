"""SAVE_DMESG: the crashed kernel's log, saved before the vmcore.

It is a few hundred kilobytes and often all an admin needs; if the vmcore then fails (a
full disk, a dead collector) this file still tells why the machine died.
"""

from __future__ import annotations

import logging
import os

from .. import system
from ..context import Capture
from ..errors import CommandFailed

log = logging.getLogger("kdump-agent")

DMESG_NAME = "vmcore-dmesg.txt"
DMESG_PARTIAL = "vmcore-dmesg-incomplete.txt"


def save_dmesg(capture: Capture, timeout: float) -> str:
    """Extract the log with makedumpfile --dump-dmesg; a failure here does not stop the dump."""
    if capture.dump_dir is None:
        return "no dump directory on this target (the log is inside the vmcore)"
    partial = capture.dump_dir / DMESG_PARTIAL
    try:
        system.run(["makedumpfile", "--dump-dmesg", capture.paths.vmcore, str(partial)],
                   timeout=timeout, stdout=None)
    except CommandFailed as error:
        log.warning("could not save the crashed kernel's log: %s; going on with the vmcore", error)
        capture.notes.append(f"vmcore-dmesg.txt not saved: {error}")
        return f"not saved: {error}"
    os.chmod(partial, 0o600)
    os.rename(partial, capture.dump_dir / DMESG_NAME)
    return DMESG_NAME
