"""PREPARE_DIR: make `<path>/<host-ip>-<YYYY-MM-DD-HH:MM:SS>/`, mode 0700, on the target
(layout.py has the name; targets/directory.py how a local one is made and checked), or
check that a raw device holds nothing a dump would destroy."""

from __future__ import annotations

import time

from ..context import Capture


def prepare(capture: Capture) -> str:
    assert capture.destination is not None, "LOAD_CONFIG chose the destination"
    return capture.destination.prepare(capture.dump, time.localtime(capture.started_wall))
