"""Raw block-device targets: makedumpfile's flattened stream written straight onto the device.

There is no file system, so nothing but the stream goes there: no dump directory, no
vmcore-dmesg.txt, no manifest (the record goes to the console and the kernel log). At the
next normal boot `kdump-agent restore-raw` rebuilds the vmcore from the device.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RawTarget:
    """A block device that receives the flattened dump from its first byte."""

    device: str

