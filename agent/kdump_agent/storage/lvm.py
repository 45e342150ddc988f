"""An LVM logical volume under the dump target: linear, striped, thin, raid1 or mirrored.

The capture kernel activates exactly the one LV (its thin pool or raid legs come with it)
with a configuration given on lvm's command line, not the host's lvm.conf: nothing but
that LV may be activated (`volume_list`), no metadata is written (`metadata_read_only`:
no repair, no backup, no archive), and lvm makes its own device nodes, since udev in the
capture kernel has no LVM rules.

While some of its physical volumes have not appeared (disks are probed in parallel with our
start), activation is tried in `complete` mode; after COMPLETE_GRACE_SECONDS a raid1 LV
with a leg missing is activated degraded, which is what a mirror is for.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import ClassVar

from .. import system
from .base import NO_UDEV_ENV, Layer, retry_until, run_tool

COMPLETE_GRACE_SECONDS = 15.0
# Device-mapper targets (`dmsetup table`) and the modules that provide them.
TARGET_MODULES = {"linear": "dm_mod", "striped": "dm_mod", "thin": "dm_thin_pool",
                  "thin-pool": "dm_thin_pool", "raid": "dm_raid", "mirror": "dm_mirror",
                  "snapshot": "dm_snapshot", "snapshot-origin": "dm_snapshot",
                  "cache": "dm_cache", "writecache": "dm_writecache", "integrity": "dm_integrity",
                  "vdo": "dm_vdo"}
# What dm_raid needs besides itself for the md personality it drives.
RAID_PERSONALITIES = ("raid1", "raid10", "raid456")
THIN_CHECK = "thin_check"  # lvm runs it before it activates a thin pool
# A generic image does not know the LV: what any LV may be made of.
GENERIC_TARGETS = ("linear", "striped", "thin-pool", "thin", "raid", "mirror", "snapshot")


def dm_name(vg: str, lv: str) -> str:
    """The device-mapper name lvm gives vg/lv: each '-' doubled, the two joined by '-'."""
    return f"{vg.replace('-', '--')}-{lv.replace('-', '--')}"


def split_dm_name(name: str) -> tuple[str, str, str] | None:
    """(vg, lv, layer) of an LVM device-mapper name ("vg-pool-tpool" has layer "tpool"),
    undoing the doubled dashes; None if it is not one."""
    parts: list[str] = []
    current = []
    index = 0
    while index < len(name):
        if name[index] == "-":
            if name[index + 1:index + 2] == "-":
                current.append("-")
                index += 2
                continue
            parts.append("".join(current))
            current = []
        else:
            current.append(name[index])
        index += 1
    parts.append("".join(current))
    if len(parts) < 2 or not parts[0] or not parts[1]:
        return None
    return parts[0], parts[1], "-".join(parts[2:])


def activation_config(volume: str | None) -> str:
    """lvm --config for the capture kernel (see the module docstring)."""
    allowed = f'volume_list=["{volume}"] ' if volume else ""
    return ("global{metadata_read_only=1 use_lvmpolld=0} "
            f"activation{{udev_sync=0 udev_rules=0 verify_udev_operations=1 monitoring=0 {allowed}}} "
            "devices{obtain_device_list_from_udev=0 use_devicesfile=0} "
            "backup{backup=0 archive=0}")


@dataclass(frozen=True)
class LvmVolume(Layer):
    """vg/lv, as the host has it; vg and lv None in a generic image that knows no VG (every
    VG found is activated, the only choice an image built for any machine has)."""

    kind: ClassVar[str] = "lvm"

    vg: str | None
    lv: str | None
    targets: tuple[str, ...] = field(default=("linear",))  # its dm targets, from `dmsetup table`

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        if (self.vg is None) != (self.lv is None):
            raise ValueError("lvm layer: vg and lv are both given or both null")

    @property
    def volume(self) -> str | None:
        return f"{self.vg}/{self.lv}" if self.vg and self.lv else None

    def describe(self) -> str:
        return f"LVM {self.volume}" if self.volume else "LVM (every volume group found)"

    @property
    def generic(self) -> bool:
        return self.volume is None

    def modules(self) -> tuple[str, ...]:
        wanted = {TARGET_MODULES.get(target, "dm_mod") for target in self.targets} | {"dm_mod"}
        if "raid" in self.targets:
            wanted |= set(RAID_PERSONALITIES)
        return tuple(sorted(wanted))

    def programs(self) -> tuple[str, ...]:
        thin = "thin-pool" in self.targets or "thin" in self.targets
        return ("lvm", THIN_CHECK) if thin else ("lvm",)

    def node(self) -> str | None:
        return f"/dev/mapper/{dm_name(self.vg, self.lv)}" if self.vg and self.lv else None

    def bring_up(self, give_up_at: float) -> str:
        started = time.monotonic()
        config = activation_config(self.volume)

        def attempt(left: float) -> str | None:
            mode = "complete" if time.monotonic() - started < min(COMPLETE_GRACE_SECONDS, left / 2) \
                else "degraded"
            if self.volume:
                run_tool(["lvm", "lvchange", "--config", config, "--activate", "y",
                          "--ignoreactivationskip", "--activationmode", mode, self.volume], left)
                node = self.node()
                return f"{node} active ({mode})" if node and os.path.exists(node) else None
            # Finding no VG is no failure here: a generic image does not know there is one.
            result = system.run(["lvm", "vgchange", "--config", config, "--activate", "y",
                                 "--activationmode", mode], timeout=max(1.0, left), check=False,
                                extra_env=NO_UDEV_ENV)
            return f"vgchange exited {result.returncode} ({mode})"

        return retry_until(give_up_at, self.describe(), attempt)
