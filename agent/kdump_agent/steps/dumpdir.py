"""PREPARE_DIR: make `<path>/<host-ip>-<YYYY-MM-DD-HH:MM:SS>/`, mode 0700, on the target
(layout.py has the name; targets/directory.py how a local one is made and checked), or
check that a raw device holds nothing a dump would destroy. With keep_old_dumps, this
host's older dumps beyond the number kept go first (steps/rotate.py)."""

from __future__ import annotations

import time

from ..context import Capture
from .rotate import keep_old_dumps


def prepare(capture: Capture) -> str:
    assert capture.destination is not None, "LOAD_CONFIG chose the destination"
    when = time.localtime(capture.started_wall)
    rotated = keep_old_dumps(capture, when)
    made = capture.destination.prepare(capture.dump, when)
    return made if rotated is None else f"{made}; {rotated}"
