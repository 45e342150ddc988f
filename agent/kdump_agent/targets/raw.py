"""Raw block-device targets: makedumpfile's flattened stream written straight onto the device.

There is no file system, so nothing but the stream goes there: no dump directory, no
vmcore-dmesg.txt, no manifest (the record goes to the console and the kernel log). At the
next normal boot `kdump-agent restore-raw` rebuilds the vmcore from the device.

A raw dump overwrites the device from its first byte, so a device that holds anything
recognisable (a file system, a RAID or LVM member, a partition table, swap) is never
written: `signature()` is asked on the host (mkinitrd, status) and again in the capture
kernel right before the collector runs, because an image built for another machine
(`--no-hostonly`) could not look at that machine's disks when it was built.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import system
from ..errors import CommandFailed

BLKID_TIMEOUT = 30.0
BLKID_NOTHING_FOUND = 2  # blkid's exit status when the device carries no known signature


@dataclass(frozen=True)
class RawTarget:
    """A block device that receives the flattened dump from its first byte."""

    device: str


def parse_probe(export: str) -> str | None:
    """What `blkid -p -o export` output says the device holds ("ext4", "dos partition
    table", "linux_raid_member"), or None.

    TYPE is a file system, swap, or a RAID/LVM member (linux_raid_member, LVM2_member);
    PTTYPE a partition table (dos, gpt). Either means the device is in use.
    """
    values = dict(line.split("=", 1) for line in export.splitlines() if "=" in line)
    found = []
    if values.get("TYPE"):
        found.append(values["TYPE"])
    if values.get("PTTYPE"):
        found.append(f"{values['PTTYPE']} partition table")
    return ", ".join(found) or None


def signature(device: str) -> str | None:
    """What blkid finds on the device itself (probing it, not its cache), or None.

    Raises CommandFailed when blkid cannot probe it at all: a device we cannot look at is
    not one we may overwrite either.
    """
    argv = ["blkid", "-p", "-o", "export", device]
    result = system.run(argv, timeout=BLKID_TIMEOUT, check=False, echo=False)
    if result.returncode == BLKID_NOTHING_FOUND:
        return None
    if result.returncode != 0:
        errors = result.stderr.decode(errors="replace").strip().splitlines()
        raise CommandFailed(argv, result.returncode, errors[-1] if errors else "")
    return parse_probe(result.stdout.decode(errors="replace"))
