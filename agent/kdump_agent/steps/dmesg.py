"""SAVE_DMESG: the crashed kernel's log, saved before the vmcore.

It is a few hundred kilobytes and often all an admin needs; if the vmcore then fails (a
full disk, a dead collector) this file still tells why the machine died. The destination
says where makedumpfile writes it (the dump directory, or RAM for a file bound for an SSH
server) and gives it its final name there.
"""

from __future__ import annotations

import logging
import os

from .. import system
from ..context import Capture
from ..errors import CommandFailed
from ..layout import DMESG, partial

log = logging.getLogger("kdump-agent")


def save_dmesg(capture: Capture, timeout: float) -> str:
    """Extract the log with makedumpfile --dump-dmesg; a failure here does not stop the dump."""
    destination = capture.destination
    assert destination is not None, "LOAD_CONFIG chose the destination"
    directory = destination.dmesg_scratch(capture.dump, capture.paths.scratch)
    if directory is None:
        return "no dump directory on this target (the log is inside the vmcore)"
    incomplete = directory / partial(DMESG)
    try:
        system.run(["makedumpfile", "--dump-dmesg", capture.paths.vmcore, str(incomplete)],
                   timeout=timeout, stdout=None)
    except CommandFailed as error:
        log.warning("could not save the crashed kernel's log: %s; going on with the vmcore", error)
        capture.notes.append(f"{DMESG} not saved: {error}")
        return f"not saved: {error}"
    os.chmod(incomplete, 0o600)
    return destination.keep_dmesg(capture.dump, incomplete, DMESG)
