"""SAVE_DMESG: the crashed kernel's log, saved before the vmcore, and why the kernel died.

It is a few hundred kilobytes and often all an admin needs; if the vmcore then fails (a
full disk, a dead collector) this file still tells why the machine died. The destination
says where makedumpfile writes it (the dump directory, or RAM for a file bound for an SSH
server or only read, on a raw device) and gives it its final name there or deletes it.
Before that the log is read into the record's `panic` object (panic.py); reading it never
fails the dump.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .. import panic, system
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
    capture.dump.panic = read_panic(incomplete, capture.notes)
    kept = destination.keep_dmesg(capture.dump, incomplete, DMESG)
    return f"{kept}; panic: {panic.describe(capture.dump.panic)}"


def read_panic(log_file: Path, notes: list[str]) -> dict[str, object]:
    """The panic object of the saved log; a log we cannot read gives kind "other"."""
    try:
        text = log_file.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        log.warning("could not read %s for the panic: %s", log_file, error)
        notes.append(f"the panic was not read from {DMESG}: {error}")
        text = ""
    return panic.parse(text)
