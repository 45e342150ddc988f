"""SAVE_DMESG: the crashed kernel's log, saved before the vmcore.

It is a few hundred kilobytes and often all an admin needs; if the vmcore then fails (a
full disk, a dead collector) this file still tells why the machine died.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .. import system
from ..context import Capture, FileRecord
from ..errors import CommandFailed

log = logging.getLogger("kdump-agent")

DMESG_NAME = "vmcore-dmesg.txt"
DMESG_PARTIAL = "vmcore-dmesg-incomplete.txt"


def save_dmesg(capture: Capture, timeout: float) -> str:
    """Extract the log with makedumpfile --dump-dmesg; a failure here does not stop the dump.

    For an SSH target it is made in RAM first (a few hundred KiB) and then sent.
    """
    if capture.remote is not None:
        directory = Path(capture.paths.scratch)
    elif capture.dump_dir is not None:
        directory = capture.dump_dir
    else:
        return "no dump directory on this target (the log is inside the vmcore)"
    partial = directory / DMESG_PARTIAL
    try:
        system.run(["makedumpfile", "--dump-dmesg", capture.paths.vmcore, str(partial)],
                   timeout=timeout, stdout=None)
    except CommandFailed as error:
        log.warning("could not save the crashed kernel's log: %s; going on with the vmcore", error)
        capture.notes.append(f"vmcore-dmesg.txt not saved: {error}")
        return f"not saved: {error}"
    os.chmod(partial, 0o600)
    if capture.remote is not None:
        try:
            size = capture.remote.put_file(partial, DMESG_NAME)
            capture.files.append(FileRecord.of(partial, DMESG_NAME))
        finally:
            partial.unlink()
        return f"{DMESG_NAME} sent ({size} bytes)"
    os.rename(partial, directory / DMESG_NAME)
    return DMESG_NAME

