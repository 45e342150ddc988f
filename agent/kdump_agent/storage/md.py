"""An md RAID array under the dump target (RAID 0, 1, 4, 5, 6, 10; superblock 0.90 or 1.x).

The capture kernel assembles the one array, from the member devices that carry its UUID,
and starts it even when one is missing: a degraded mirror is what RAID is for, and the dump
is the one chance there is. It never resyncs: md_mod's start_ro makes an array start
read-only-until-written, and the array's sync_action is set to `frozen` before the first
write, so no resync or recovery starts in the capture kernel (an array left dirty by the
panic is resynced by the host's next boot, from its bitmap where it has one). mdadm
writes only the superblocks of the array's own members, as any assembly does.

While members are missing, the wait goes on up to COMPLETE_GRACE_SECONDS (disks are probed
in parallel with our start); then the array is started with what is there. A member that
the array's own superblocks already count as gone (failed and removed before the crash)
is not waited for.
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from .. import system
from ..errors import MountError
from .base import NO_UDEV_ENV, Layer, retry_until, run_tool

COMPLETE_GRACE_SECONDS = 15.0
START_RO = "/sys/module/md_mod/parameters/start_ro"
SYS_BLOCK = "/sys/block"
LEVEL_MODULES = {"raid0": "raid0", "raid1": "raid1", "raid4": "raid456", "raid5": "raid456",
                 "raid6": "raid456", "raid10": "raid10", "linear": "linear"}


def blkid_uuid(mdadm_uuid: str) -> str:
    """The array UUID as blkid prints it for a member (8-4-4-4-12), from mdadm's a:b:c:d."""
    digits = mdadm_uuid.replace(":", "").replace("-", "").lower()
    if len(digits) != 32 or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError(f"not an md array UUID: {mdadm_uuid!r}")
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def members_with(uuid: str) -> list[str]:
    """The member devices of the array that are there now (blkid, no cache)."""
    found = system.run(["blkid", "-c", "/dev/null", "-o", "device", "-t", f"UUID={blkid_uuid(uuid)}"],
                       timeout=30, check=False, echo=False)
    devices = found.stdout.decode(errors="replace").split()
    return [device for device in devices if not os.path.basename(device).startswith("md")]


def active_in_superblock(member: str) -> int | None:
    """How many members the array had active when `member`'s superblock was last written
    (`mdadm --examine`: 1.x "Array State : AA.", 0.90 "Active Devices : 2"); None if unknown."""
    result = system.run(["mdadm", "--examine", member], timeout=30, check=False, echo=False)
    for line in result.stdout.decode(errors="replace").splitlines():
        name, _, value = line.partition(":")
        words = value.split()
        if name.strip() == "Array State" and words:
            return sum(1 for c in words[0] if c in "AR")
        if name.strip() == "Active Devices" and words and words[0].isdigit():
            return int(words[0])
    return None


def freeze(node: str) -> None:
    """No resync or recovery on this array while the capture kernel has it."""
    name = os.path.basename(os.path.realpath(node))
    Path(SYS_BLOCK, name, "md", "sync_action").write_text("frozen\n", encoding="utf-8")


@dataclass(frozen=True)
class MdArray(Layer):
    """The array as the host has it (`mdadm --detail --export`); uuid None in a generic image
    that knows no array (every array found is assembled)."""

    kind: ClassVar[str] = "md"

    uuid: str | None
    devname: str | None  # the node it is assembled at: /dev/md/crash, /dev/md0
    level: str  # raid1, raid5, ...; "" when unknown (generic)
    raid_devices: int  # members the array has when complete; 0 when unknown

    def __post_init__(self) -> None:
        if self.uuid is not None:
            blkid_uuid(self.uuid)
        if self.devname is not None and not self.devname.startswith("/dev/md"):
            raise ValueError(f"md layer: devname {self.devname!r} is not under /dev/md")

    def describe(self) -> str:
        if self.uuid is None:
            return "md RAID (every array found)"
        return f"md {self.level or 'RAID'} {self.devname} (UUID {self.uuid})"

    @property
    def generic(self) -> bool:
        return self.uuid is None

    def programs(self) -> tuple[str, ...]:
        return ("mdadm",)

    def modules(self) -> tuple[str, ...]:
        personality = LEVEL_MODULES.get(self.level)
        wanted = ("md_mod", personality) if personality else ("md_mod", *sorted(set(LEVEL_MODULES.values())))
        return tuple(wanted)

    def node(self) -> str | None:
        return self.devname

    def bring_up(self, give_up_at: float) -> str:
        _start_read_only()
        if self.uuid is None:
            return self._assemble_any(give_up_at)
        uuid, devname = self.uuid, self.devname or f"/dev/md/{self.uuid.replace(':', '')}"
        started = time.monotonic()

        def attempt(left: float) -> str | None:
            members = members_with(uuid)
            waited = time.monotonic() - started
            if not members:
                return None
            if len(members) < self.raid_devices and waited < min(COMPLETE_GRACE_SECONDS, left / 2):
                active = active_in_superblock(members[0])
                if active is None or len(members) < active:
                    return None  # a member the array still counts on may be probed yet
            run_tool(["mdadm", "--assemble", "--run", "--config=partitions", f"--uuid={uuid}",
                      devname, *members], left)
            if not os.path.exists(devname):
                raise MountError(f"{self.describe()}: mdadm assembled it, but {devname} is not there")
            freeze(devname)
            missing = self.raid_devices - len(members)
            state = f", degraded: {missing} of {self.raid_devices} missing" if missing > 0 else ""
            return f"{devname} from {', '.join(members)}{state}; resync frozen"

        return retry_until(give_up_at, self.describe(), attempt)

    def _assemble_any(self, give_up_at: float) -> str:
        """Every array whose members are there. Finding none is no failure: a generic image
        does not know there is one, and the target's device is what is waited for."""
        result = system.run(["mdadm", "--assemble", "--scan", "--run", "--config=partitions"],
                            timeout=max(1.0, give_up_at - time.monotonic()), check=False,
                            extra_env=NO_UDEV_ENV)
        arrays = sorted(glob.glob(f"{SYS_BLOCK}/md*/md"))
        for array in arrays:
            freeze(f"/dev/{Path(array).parent.name}")
        return f"mdadm exited {result.returncode}; {len(arrays)} arrays up, resync frozen"


def _start_read_only() -> None:
    try:
        Path(START_RO).write_text("1\n", encoding="utf-8")
    except OSError as error:  # md_mod built in without the parameter: freeze() still holds
        raise MountError(f"cannot set md start_ro ({START_RO}: {error})") from error


# A generic image's array: it knows none, so every array found is assembled.
ANY_ARRAY = MdArray(uuid=None, devname=None, level="", raid_devices=0)
