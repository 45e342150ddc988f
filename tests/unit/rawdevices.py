"""Fake raw target devices for the unit tests: image files that blkid probes for real, and
os.stat made to call one of them a block device."""

from __future__ import annotations

import os
import stat
import struct
import subprocess
from pathlib import Path
from typing import Any

IMAGE_SIZE = 8 << 20


def empty_image(path: Path) -> Path:
    with open(path, "wb") as image:
        image.truncate(IMAGE_SIZE)
    return path


def ext4_image(path: Path) -> Path:
    subprocess.run(["mkfs.ext4", "-F", "-q", str(empty_image(path))], check=True)
    return path


def partitioned_image(path: Path) -> Path:
    """A DOS partition table with one partition, as fdisk writes it, and nothing else."""
    mbr = bytearray(512)
    mbr[440:444] = b"\x12\x34\x56\x78"  # disk identifier
    mbr[446:462] = struct.pack("<B3sB3sII", 0, b"\x00\x02\x00", 0x83, b"\x00\x00\x00", 2048, 8192)
    mbr[510:512] = b"\x55\xaa"
    with open(empty_image(path), "r+b") as image:
        image.write(mbr)
    return path


def flattened_image(path: Path) -> Path:
    """What a raw dump leaves: makedumpfile's flattened header at the first byte."""
    with open(empty_image(path), "r+b") as image:
        image.write(struct.pack(">16sqq", b"makedumpfile", 1, 1))
    return path


def as_block_device(mocker: Any, device: Path) -> None:
    """os.stat says device is a block device; every other path is stat'ed for real."""
    real_stat = os.stat

    def fake_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        result = real_stat(path, *args, **kwargs)
        if os.fspath(path) != str(device):
            return result
        return os.stat_result((stat.S_IFBLK | 0o660, *tuple(result)[1:]))

    mocker.patch("os.stat", side_effect=fake_stat)
