"""When the boot before this one started: what "a dump taken since the last boot" is measured by.

The dump of a panic is made in the capture kernel, after the crashed boot began and before
this one did, so this boot's own start (/proc/stat's btime) comes after it. What bounds it
is the start of the boot before: `kdump-agent start` records each boot's id and btime in
the state directory (`boots.json`), and a later boot reads it back. Starting again in the same
boot (a restart of the service) keeps the answer the first start found.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..system import read_text
from .hostpaths import HostPaths, boot_time

log = logging.getLogger("kdump-agent")

BOOTS_FILE = "boots.json"


def previous_boot_start(paths: HostPaths) -> float | None:
    """The epoch second the boot before this one started, and record this one's; None the
    first time (nothing recorded) or when this boot cannot be told apart.

    A boot is known by its boot_id (btime moves when the clock is stepped after boot).
    """
    boot_id, now = (read_text(paths.boot_id) or "").strip(), boot_time(paths)
    if not boot_id or now is None:
        return None
    record = Path(paths.state_dir) / BOOTS_FILE
    previous: float | None = None
    try:
        known = json.loads(record.read_text(encoding="utf-8"))
        if known["boot_id"] != boot_id:
            previous = float(known["btime"])
        elif known.get("previous") is not None:
            previous = float(known["previous"])
    except (OSError, ValueError, KeyError, TypeError):
        previous = None
    try:
        os.makedirs(paths.state_dir, mode=0o755, exist_ok=True)
        partial = record.with_name(BOOTS_FILE + ".new")
        partial.write_text(json.dumps({"boot_id": boot_id, "btime": now, "previous": previous}) + "\n",
                           encoding="utf-8")
        partial.replace(record)
    except OSError as error:
        log.warning("cannot record this boot in %s: %s", record, error)
    return previous
