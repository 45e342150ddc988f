"""What `mkinitrd` packs for a dump target (and root file system) on a storage stack.

Hostonly, the stack is found on this machine (host/stack.py): the record says exactly
which VG/LV, array, multipath map or iSCSI session to bring up, and the image gets the
tools and modules that stack needs, nothing more. A generic image (--no-hostonly) cannot
look at the machine it is for: its stack comes from the dracut modules dracut_args add
(`--add lvm`, `mdraid`, `multipath`), named exactly where the target's name says it
(/dev/VG/LV, /dev/mapper/VG-LV; a /dev/mapper name that is not LVM's is a multipath map's
alias); a target whose name says it is on a stack the image would not hold is
refused, naming what to add. iSCSI is refused in a generic image (ISCSI_REFUSAL): a login
needs the one session's portal, target and CHAP account, which only hostonly can record.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass, field

from .. import system
from ..config import Config
from ..dracutargs import added_modules
from ..errors import KdumpError
from ..storage.base import Layer, Stack
from ..storage.kinds import stacks_as_json
from ..storage.lvm import GENERIC_TARGETS, LvmVolume, split_dm_name
from ..storage.md import ANY_ARRAY
from ..storage.multipath import MultipathMap
from .blockdev import resolve_spec
from .stack import Found, stack_under

log = logging.getLogger("kdump-agent")

# dracut's module names for the stacks, as an admin adds them to a generic image.
DRACUT_LVM, DRACUT_MD, DRACUT_MULTIPATH, DRACUT_ISCSI = "lvm", "mdraid", "multipath", "iscsi"
ISCSI_REFUSAL = (
    "a --no-hostonly image cannot log in to iSCSI: it is built for any machine, so it knows no "
    "portal, target or CHAP account (and the capture kernel's command line drops netroot=, which "
    "would put a CHAP password in /proc/cmdline for every user to read). Build the image hostonly "
    "on the machine that has the session: mkinitrd records it")
# The directories of /dev that are not a VG's (/dev/VG/LV).
NOT_VOLUME_GROUPS = frozenset({"disk", "mapper", "md", "block", "char", "bus", "cpu", "dri", "input", "net",
                               "pts", "shm", "snd", "vfio", "hugepages", "mqueue", "fd", "usb", "serial"})
# udev's name for an iSCSI LUN: /dev/disk/by-path/ip-192.0.2.1:3260-iscsi-iqn...-lun-1
_ISCSI_BY_PATH = re.compile(r"^/dev/disk/by-path/ip-.*-iscsi-")

@dataclass
class StoragePack:
    """The stacks by role ("target", "rootfs"), the kernel modules and host programs for them."""

    stacks: dict[str, Stack] = field(default_factory=dict)
    modules: list[str] = field(default_factory=list)
    programs: list[str] = field(default_factory=list)

    def record(self) -> str | None:
        """storage.json, or None when nothing is on a stack."""
        return stacks_as_json(self.stacks) if any(self.stacks.values()) else None

    def portal(self) -> str | None:
        """The iSCSI portal under the dump target, which the capture kernel must reach."""
        return self.stacks["target"].server() if "target" in self.stacks else None

    def add(self, role: str, found: Found) -> None:
        self.stacks[role] = found.stack
        self.modules += [module for module in found.modules() if module not in self.modules]
        for program in found.stack.programs():
            path = host_program(program)
            if path not in self.programs:
                self.programs.append(path)


def host_program(name: str) -> str:
    """Where a storage tool is on this host, to be packed at the same path (a path, such
    as a plugin the tool loads, is packed as it is)."""
    if name.startswith("/"):
        if not os.path.exists(name):
            raise KdumpError(f"the storage stack needs {name}, which is not on this host")
        return name
    found = shutil.which(name, path=system.CLEAN_PATH)
    if found is None:
        raise KdumpError(f"the storage stack needs {name}, which is not installed on this host "
                         f"(not in {system.CLEAN_PATH})")
    return found


def storage_pack(config: Config, target_device: str, rootfs_device: str, *, hostonly: bool) -> StoragePack:
    """The stack under the target's device and under the root file system's (either may be "")."""
    where = f"{config.source}:{config.target.line}" if config.target else config.source
    pack = StoragePack()
    for device, role in ((target_device, "target"), (rootfs_device, "rootfs")):
        if not device:
            continue
        try:
            found = (stack_under(resolve_spec(device)) if hostonly
                     else generic_stack(device, config.dracut_args))
        except KdumpError as error:
            what = "dump target" if role == "target" else "root file system"
            problem = f"{where}: the {what} {device}: {error}"
            if role == "target":
                raise KdumpError(problem) from error
            log.warning("%s; %s cannot reach it and falls through to final_action", problem,
                        config.failure_action.value)
            continue
        if found.stack:
            log.info("%s %s is on %s", role, device, found.stack.describe())
        pack.add(role, found)
    return pack


def generic_stack(spec: str, dracut_args: tuple[str, ...] | list[str]) -> Found:
    """A generic image's stack for spec (module docstring)."""
    added = added_modules(dracut_args)
    if DRACUT_ISCSI in added:
        raise KdumpError(f"dracut_args --add {DRACUT_ISCSI}: {ISCSI_REFUSAL}")
    if _ISCSI_BY_PATH.search(spec):
        raise KdumpError(f"it is an iSCSI LUN: {ISCSI_REFUSAL}")
    named = named_layer(spec)
    if DRACUT_MULTIPATH in added and spec.startswith("/dev/mapper/") and (
            named is None or DRACUT_LVM not in added):
        return Found(Stack((MultipathMap(wwid=None, name=None),)))  # the alias of a map
    if named is None and spec.startswith("/dev/mapper/"):
        raise KdumpError(f"{spec} is a device-mapper name that is not an LVM volume's (VG-LV): a "
                         "multipath map, which a --no-hostonly image holds only if asked: add "
                         f"`--add {DRACUT_MULTIPATH}` to dracut_args")
    under: list[Layer] = [MultipathMap(wwid=None, name=None)] if DRACUT_MULTIPATH in added else []
    if named is not None:
        module = DRACUT_LVM if isinstance(named, LvmVolume) else DRACUT_MD
        if module not in added:
            raise KdumpError(f"{spec} is on {'LVM' if module == DRACUT_LVM else 'md RAID'}, which a "
                             f"--no-hostonly image holds only if asked: add `--add {module}` to dracut_args")
        layers: list[Layer] = [*under, named]
        if isinstance(named, LvmVolume) and DRACUT_MD in added:
            layers.insert(len(under), ANY_ARRAY)
        return Found(Stack(tuple(layers)))
    layers = under
    if DRACUT_MD in added:
        layers.append(ANY_ARRAY)
    if DRACUT_LVM in added:
        layers.append(LvmVolume(vg=None, lv=None, targets=GENERIC_TARGETS))
    return Found(Stack(tuple(layers)))


def named_layer(spec: str) -> Layer | None:
    """The layer a device name itself gives: /dev/mapper/VG-LV or /dev/VG/LV is that LV (a
    /dev/mapper name that does not split into VG and LV is not taken for one), /dev/mdN and
    /dev/md/NAME an md array (which one, a generic image cannot know)."""
    if spec.startswith("/dev/mapper/"):
        split = split_dm_name(spec.removeprefix("/dev/mapper/"))
        if split and not split[2]:
            return LvmVolume(vg=split[0], lv=split[1], targets=GENERIC_TARGETS)
        return None
    if spec.startswith("/dev/md"):
        return ANY_ARRAY
    parts = spec.split("/")
    if len(parts) == 4 and parts[:2] == ["", "dev"] and parts[2] not in NOT_VOLUME_GROUPS:
        return LvmVolume(vg=parts[2], lv=parts[3], targets=GENERIC_TARGETS)
    return None
