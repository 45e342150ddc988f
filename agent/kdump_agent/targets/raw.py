"""Raw block-device targets: makedumpfile's flattened stream written straight onto the device.

There is no file system, so nothing but the stream goes there: no dump directory, no
vmcore-dmesg.txt, no manifest (the record goes to the console and the kernel log). The
crashed kernel's log is still extracted, into RAM, so the record can say why the machine
died (its `panic` object), and deleted once read. At the next normal boot
`kdump-agent restore-raw` rebuilds the vmcore from the device.

A raw dump overwrites the device from its first byte, so a device that holds anything
recognisable (a file system, a RAID or LVM member, a partition table, swap) is never
written: `signature()` is asked on the host (mkinitrd, status) and again in the capture
kernel right before the collector runs, because an image built for another machine
(`--no-hostonly`) could not look at that machine's disks when it was built.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .. import system
from ..errors import CommandFailed, KdumpError
from ..storage.base import PLAIN_DISK, Stack
from .base import Destination, DeviceSink, DumpState, Sink, log_manifest
from .local import reach

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


def check_empty(device: str) -> str:
    """Refuse a raw target that holds anything: a dump would overwrite it from byte 0."""
    try:
        found = signature(device)
    except CommandFailed as error:
        raise KdumpError(f"cannot tell what raw target {device} holds ({error}): "
                         "not writing to it") from error
    if found:
        raise KdumpError(f"raw target {device} holds {found} (blkid): a raw dump would destroy it, "
                         f"so it is left untouched; point `raw` at an empty partition or LV")
    return f"raw device {device} holds no file system, RAID, LVM or partition table"


class RawDevice(Destination):
    """The flattened stream onto a block device; no directory, the record in the kernel log."""

    def __init__(self, target: RawTarget, stack: Stack = PLAIN_DISK) -> None:
        self.target = target
        self.stack = stack
        self.server = stack.server()

    def describe(self) -> str:
        return f"raw {self.target.device}"

    def manifest_target(self) -> dict[str, str | None]:
        return {"raw": self.target.device}

    def attach(self, state: DumpState, *, mountpoint: str, disk_timeout: float) -> str:
        device, stacked = reach(self.target.device, self.stack, disk_timeout)
        return f"raw device {device} is there" + (f" ({stacked})" if stacked else "")

    def prepare(self, state: DumpState, when: time.struct_time) -> str:
        """Checked here, before the collector writes a byte: an image built for another
        machine (--no-hostonly) could not look at this machine's disks when it was built."""
        return check_empty(self.target.device)

    def dmesg_scratch(self, state: DumpState, scratch: str) -> Path | None:
        return Path(scratch)  # RAM: read for the record's panic object, then deleted

    def keep_dmesg(self, state: DumpState, partial: Path, name: str) -> str:
        partial.unlink()
        return f"{name} read for the record and not kept (a raw device holds only the dump)"

    def sink(self, state: DumpState) -> Sink:
        return DeviceSink(self.target.device)

    def finalize(self, state: DumpState, timeout: float) -> str:
        system.fsync(self.target.device)
        state.vmcore_saved = True
        return f"{self.target.device} synced; `kdump-agent restore-raw` rebuilds the vmcore"

    def save_record(self, state: DumpState, manifest: dict[str, object], kernel_log: str) -> None:
        log_manifest(manifest)  # no file system to keep it in

    def release(self, state: DumpState) -> None:
        system.sync()

    def where(self, state: DumpState) -> str | None:
        return None
