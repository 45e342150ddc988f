"""Raw block-device targets: makedumpfile's flattened stream written straight onto the device.

There is no file system, so nothing but the stream goes there: no dump directory, no
vmcore-dmesg.txt, no manifest (the record goes to the console and the kernel log). At the
next normal boot `kdump-agent restore-raw` rebuilds the vmcore from the device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class RawTarget:
    """A block device that receives the flattened dump from its first byte."""

    device: str


def fsync_device(device: str) -> None:
    """Flush what the collector wrote: a raw device has no file system to sync for us."""
    fd = os.open(device, os.O_WRONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
