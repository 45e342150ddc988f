"""The storage stack under a device on this machine, found through sysfs, for mkinitrd.

From the target's block device down: a partition leads to its disk; a device-mapper device
says in `dm/uuid` which tool made it (LVM-, mpath-, CRYPT-) and lists what it is built on in
`slaves/`; an md array has `md/` and its members in `slaves/`; an iSCSI disk hangs below a
`sessionN` of the initiator. Each layer is recorded once, bottom first (storage/base.py);
the disks at the bottom give the bus drivers (blockdev.drivers_above).

What the capture kernel cannot bring up is refused here, when the image is built, never
found waiting out disk_timeout after a panic: dm-crypt (see LUKS_REFUSAL), md arrays with
external metadata (IMSM, DDF: their writes need mdmon), device-mapper devices no known tool
made.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .. import system
from ..errors import KdumpError
from ..storage.base import Layer, Stack
from ..storage.iscsi import DEFAULT_PORT, IscsiSession
from ..storage.lvm import TARGET_MODULES, LvmVolume, split_dm_name
from ..storage.md import MdArray
from .blockdev import drivers_above

LUKS_REFUSAL = (
    "is on dm-crypt (LUKS). The capture kernel cannot open it: no one is at the console to type "
    "a passphrase after a panic, and a key packed into the capture image would sit readable "
    "under /boot next to the volume it opens. Dump to an unencrypted partition or LV, or over "
    "NFS or SSH")
_KPARTX_PARTITION = re.compile(r"^part\d+-")
_ISCSI_SESSION = re.compile(r"/session(\d+)/")  # in an iSCSI disk's sysfs path
INITIATOR_NAME_FILE = Path("/etc/iscsi/initiatorname.iscsi")
_UNSET = ("", "(null)")  # how sysfs shows a session parameter that was never set


@dataclass
class Found:
    """A device's stack as mkinitrd packs it: the record, and the host drivers under it."""

    stack: Stack
    drivers: list[str] = field(default_factory=list)  # the disks' buses, then the layers'

    def modules(self) -> list[str]:
        return list(dict.fromkeys([*self.drivers, *self.stack.modules()]))


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace").strip() if path.exists() else ""


def dm_targets(name: str) -> tuple[str, ...]:
    """The device-mapper target types in the table of dm device `name` (dmsetup table)."""
    result = system.run(["dmsetup", "table", name], timeout=30)
    return tuple(dict.fromkeys(line.split()[2] for line in result.stdout.decode(errors="replace")
                               .splitlines() if len(line.split()) > 2))


def md_detail(node: str) -> dict[str, str]:
    """`mdadm --detail --export` of an array: MD_LEVEL, MD_DEVICES, MD_UUID, MD_DEVNAME, ..."""
    result = system.run(["mdadm", "--detail", "--export", node], timeout=30)
    return dict(line.split("=", 1) for line in result.stdout.decode(errors="replace").splitlines()
                if "=" in line)


def md_layer(name: str) -> MdArray:
    """The array /dev/<name> as the capture kernel assembles it."""
    detail = md_detail(f"/dev/{name}")
    metadata = detail.get("MD_METADATA", "")
    if "MD_CONTAINER" in detail or metadata in ("imsm", "ddf") or metadata.startswith("external"):
        raise KdumpError(f"/dev/{name} is an md array with external metadata ({metadata or 'a container'}); "
                         "its writes need mdmon, which the capture kernel does not run")
    if "MD_UUID" not in detail:
        raise KdumpError(f"mdadm --detail gives no UUID for /dev/{name}")
    devname = detail.get("MD_DEVNAME", "")
    return MdArray(uuid=detail["MD_UUID"],
                   devname=f"/dev/md/{devname}" if devname else f"/dev/{name}",
                   level=detail.get("MD_LEVEL", ""), raid_devices=int(detail.get("MD_DEVICES", "0") or 0))


def stack_under(device: str, sysfs: Path = Path("/sys")) -> Found:
    """What stands between the file system on `device` and its disks (module docstring)."""
    layers: list[Layer] = []
    drivers: list[str] = []
    vg_targets: dict[str, list[str]] = {}  # the dm targets of an LV and of the hidden LVs under it
    sysfs_root = sysfs.resolve()

    def visit(node: Path, inside_vg: str | None = None) -> None:
        if (node / "partition").exists():
            visit(node.parent, inside_vg)
            return
        slaves = sorted((node / "slaves").iterdir()) if (node / "slaves").is_dir() else []
        lv: tuple[str, str] | None = None
        md: MdArray | None = None
        if (node / "dm").is_dir():
            lv = _dm_device(node, inside_vg, vg_targets)
            inside_vg = lv[0] if lv else inside_vg
        elif (node / "md").is_dir():
            md = md_layer(node.name)
        for slave in slaves:
            visit(slave.resolve(), inside_vg)
        if not slaves and not (node / "dm").is_dir():
            drivers.extend(module for module in drivers_above(node, sysfs_root) if module not in drivers)
            session = iscsi_session_of(node, sysfs)
            if session is not None and session not in layers:
                layers.append(session)
        layer: Layer | None = md
        if lv is not None:
            layer = LvmVolume(vg=lv[0], lv=lv[1], targets=tuple(dict.fromkeys(vg_targets[lv[0]])))
        if layer is not None and layer not in layers:
            layers.append(layer)

    visit((sysfs / "class" / "block" / os.path.basename(os.path.realpath(device))).resolve())
    return Found(stack=Stack(tuple(layers)), drivers=drivers)


def _dm_device(node: Path, inside_vg: str | None, vg_targets: dict[str, list[str]]) -> tuple[str, str] | None:
    """A device-mapper device: (vg, lv) when it is an LV of its own; None for a hidden LV
    under one (a thin pool's tpool/tdata/tmeta, a raid LV's rimage/rmeta: their dm targets
    join the LV's) or a kpartx partition. What the capture kernel cannot set up is refused."""
    uuid, dm_name = _read(node / "dm" / "uuid"), _read(node / "dm" / "name")
    if uuid.startswith("CRYPT-"):
        raise KdumpError(f"/dev/{node.name} ({dm_name}) {LUKS_REFUSAL}")
    if _KPARTX_PARTITION.match(uuid):
        return None
    if not uuid.startswith("LVM-"):
        made_by = uuid.split("-", 1)[0] if uuid else "no tool (it has no dm uuid)"
        raise KdumpError(f"/dev/{node.name} ({dm_name}) is a device-mapper device made by {made_by}, "
                         "which the capture kernel cannot set up (LVM, md and multipath it can)")
    split = split_dm_name(dm_name)
    if split is None:
        raise KdumpError(f"cannot tell the VG and LV of LVM device {dm_name}")
    vg, lv, _ = split
    targets = dm_targets(dm_name)
    unknown = [target for target in targets if target not in TARGET_MODULES]
    if unknown:
        raise KdumpError(f"LVM volume {vg}/{lv} uses device-mapper targets {', '.join(unknown)}, "
                         "which the capture kernel does not set up")
    if inside_vg == vg:
        vg_targets[vg].extend(targets)
        return None
    vg_targets[vg] = list(targets)
    return vg, lv


def iscsi_session_of(disk: Path, sysfs: Path = Path("/sys"),
                     initiator_file: Path = INITIATOR_NAME_FILE) -> IscsiSession | None:
    """The session an iSCSI disk hangs below (its sysfs path has `sessionN`), as the capture
    kernel logs in to it again; None for any other disk. Reading the CHAP passwords needs
    root, as mkinitrd runs."""
    match = _ISCSI_SESSION.search(str(disk.resolve()))
    if match is None:
        return None
    number = match.group(1)
    session = sysfs / "class" / "iscsi_session" / f"session{number}"
    connection = sysfs / "class" / "iscsi_connection" / f"connection{number}:0"

    def param(directory: Path, name: str) -> str | None:
        value = _read(directory / name)
        return None if value in _UNSET else value

    target = param(session, "targetname")
    address = param(connection, "persistent_address") or param(connection, "address")
    initiator = param(session, "initiatorname") or _initiator_name(initiator_file)
    if not target or not address or not initiator:
        missing = [name for name, value in (("target name", target), ("portal address", address),
                                            ("initiator name", initiator)) if not value]
        raise KdumpError(f"/dev/{disk.name} is on iSCSI session {number}, but sysfs gives no "
                         f"{', '.join(missing)} for it (is {INITIATOR_NAME_FILE} there?)")
    port = param(connection, "persistent_port") or param(connection, "port") or str(DEFAULT_PORT)
    try:
        return IscsiSession(initiator=initiator, target=target, address=address, port=int(port),
                            tpgt=int(param(session, "tpgt") or "1"),
                            username=param(session, "username"), password=param(session, "password"),
                            username_in=param(session, "username_in"),
                            password_in=param(session, "password_in"))
    except ValueError as error:
        raise KdumpError(f"/dev/{disk.name} is on iSCSI session {number} ({target}), which cannot be "
                         f"recorded: {error}") from None


def _initiator_name(path: Path) -> str | None:
    """InitiatorName= in open-iscsi's initiatorname.iscsi."""
    for line in _read(path).splitlines():
        key, _, value = line.strip().partition("=")
        if key == "InitiatorName" and value:
            return value.strip()
    return None
