"""FINALIZE: the destination makes the vmcore durable and gives it its final name.

The rename comes after the sync, so a file named `vmcore` is always a complete dump;
anything that stops us earlier leaves `vmcore-incomplete`, which says what it is. Reading
the vmcore back for its sha256 has its share of the deadline, which grows with the dump
(deadlines.py); targets/local.py says what happens when it runs out.
"""

from __future__ import annotations

from ..context import Capture


def finalize(capture: Capture, timeout: float) -> str:
    assert capture.destination is not None, "LOAD_CONFIG chose the destination"
    return capture.destination.finalize(capture.dump, timeout)
