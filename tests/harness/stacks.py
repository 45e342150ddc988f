"""The storage stacks the e2e cases dump to (LVM, md RAID, LVM on md, a partitioned PV,
multipath), made and read back in tool guests (harness.toolguest): this host's kernel has
neither device-mapper nor md.

    stack = stacks.md_raid1(kernel, tmp_path)          # cached; the test gets copies
    ... a panic with stack.disks[1:] attached, target LABEL=... or /dev/md/dump ...
    image = stacks.read_stack(kernel, stack, tmp_path / "fs.img", leave_out=(0,))
    find_dumps(image, tmp_path / "out")               # debugfs on the host, as always

Each preset makes an ext4 file system with a known UUID and LABEL on top of the stack and
stops the stack cleanly (so no boot after it starts a resync). A degraded array is read back
by leaving a disk out of `disks`: the assemble lines start arrays with --run. Leave out the
disk that was left out of the panic too: its copy is stale.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shlex
import shutil
import string
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from . import toolguest
from .cache import cache_dir, locked
from .disks import replay_journal
from .kernels import Kernel
from .toolguest import disk_name

MIB = 1024 * 1024
STACK_UUID = "6b1d7c0e-2f4a-4e8b-9c3d-5a6f7e8d9c0b"
STACK_LABEL = "kdumpstack"
VG, LV = "vgdump", "crash"
LV_MIB = 256
MD_NAME = "dump"

LVM_UP = f"lvm vgchange -ay {VG}"
LVM_DOWN = f"lvm vgchange -an {VG}"
MD_UP = "mdadm --assemble --scan --run"
MD_DOWN = "mdadm --stop --scan"


@dataclasses.dataclass(frozen=True)
class Stack:
    """A stack on raw images of the test's own, and how the admin and the harness name it."""

    disks: list[Path]  # in the order they are attached (vda, vdb, ...)
    device: str  # the file system's device in a guest once assembled
    names: tuple[str, ...]  # every path the admin may write in kdump.conf, `device` first
    uuid: str
    label: str
    assemble: str  # shell lines that bring the stack up in a tool guest
    disassemble: str  # and stop it cleanly again


def build_stack(kernel: Kernel, name: str, disks_mib: Sequence[int], script: str,
                workdir: Path) -> list[Path]:
    """Run `script` in a tool guest on fresh sparse images of `disks_mib` MiB each, attached
    as /dev/vda, /dev/vdb, ... in order, and return copies of the images in `workdir`.

    The images are cached (cache_dir("stacks")) by the script, the sizes, the kernel and the
    tool initramfs; every caller gets its own sparse copy, so a dump never reaches the cache.
    A build's console is `workdir/<name>-build.console.log`.
    """
    key = hashlib.sha256("\0".join([script, kernel.kver, toolguest.tool_key(kernel),
                                    *map(str, disks_mib)]).encode()).hexdigest()[:16]
    cached = cache_dir("stacks") / f"{name}-{key}"
    images = [cached / f"disk{i}.img" for i in range(len(disks_mib))]
    with locked(cached.with_name(cached.name + ".lock")):
        if not cached.is_dir():
            staging = Path(tempfile.mkdtemp(prefix=f".{cached.name}.", dir=cached.parent))
            try:
                made = [_sparse(staging / image.name, size) for image, size
                        in zip(images, disks_mib, strict=True)]
                toolguest.run_script(kernel, script, disks=made,
                                     log_path=workdir / f"{name}-build.console.log")
                staging.rename(cached)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    copies = []
    for image in images:
        copy = workdir / f"{name}-{image.name}"
        subprocess.run(["cp", "--sparse=always", str(image), str(copy)], check=True)
        copies.append(copy)
    return copies


def read_back(kernel: Kernel, disks: Sequence[Path], assemble: str, device: str,
              out_image: Path, disassemble: str = "") -> Path:
    """Assemble the stack on `disks` in a tool guest, copy `device` with dd onto a fresh
    sparse image `out_image` (attached after the disks) and return it, its ext4 journal
    replayed, ready for harness.disks / harness.dumps (debugfs on the host).

    Leave a member out of `disks` to read a degraded array. `out_image` is as large as all
    `disks` together, which holds any device made of them; the zeros dd wrote are punched
    out again, so it costs only what the file system holds.
    """
    size = sum(disk.stat().st_size for disk in disks)
    _sparse(out_image, size // MIB)
    target = disk_name(len(disks))
    script = "\n".join([
        assemble,
        f"dd if={shlex.quote(device)} of={target} bs=1M",
        "sync",
        disassemble,
        "",
    ])
    toolguest.run_script(kernel, script, disks=[*disks, out_image],
                         log_path=out_image.with_name(out_image.name + ".console.log"))
    replay_journal(out_image)
    subprocess.run(["fallocate", "--dig-holes", str(out_image)], check=True)
    return out_image


def read_stack(kernel: Kernel, stack: Stack, out_image: Path,
               leave_out: Sequence[int] = ()) -> Path:
    """read_back for a preset, without the disks whose indexes are in `leave_out` (a
    degraded array); it fails unless every one of the stack's names is a block device once
    the stack is up."""
    disks = [disk for i, disk in enumerate(stack.disks) if i not in leave_out]
    assemble = "\n".join([stack.assemble, *(f"test -b {name}" for name in stack.names)])
    return read_back(kernel, disks, assemble, stack.device, out_image, stack.disassemble)


def _sparse(path: Path, size_mib: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fd:
        fd.truncate(size_mib * MIB)
    return path


def _filesystem(device: str, uuid: str, label: str, populate: str) -> str:
    """Shell lines: ext4 on `device`, and `populate` run with it mounted at /mnt."""
    return "\n".join([
        f"mkfs.ext4 -q -F -b 4096 -U {uuid} -L {shlex.quote(label)} {device}",
        f"mount -t ext4 {device} /mnt",
        populate,
        "umount /mnt",
    ])


def _lvm_on(pv: str) -> str:
    """Shell lines: a VG on `pv` and a linear LV in it."""
    return "\n".join([
        f"lvm pvcreate {pv}",
        f"lvm vgcreate {VG} {pv}",
        f"lvm lvcreate -y -L {LV_MIB}M -n {LV} {VG}",
    ])


def _md_create(level: int, members: Sequence[str], name: str = MD_NAME) -> str:
    """Shell line: an md array, metadata 1.2, whose recorded name `name` any host assembles
    as /dev/md/<name> (--homehost=any). The fresh images are zeros, so --assume-clean
    holds for parity and mirrors alike and nothing resyncs."""
    return (f"mdadm --create /dev/md/{name} --run --metadata=1.2 --homehost=any "
            f"--name={name} --level={level} --raid-devices={len(members)} --assume-clean "
            + " ".join(members))


def _preset(kernel: Kernel, workdir: Path, name: str, disks_mib: Sequence[int], make: str,
            names: Sequence[str], up: str, down: str, uuid: str, label: str,
            populate: str) -> Stack:
    device = names[0]
    script = "\n".join([make, _filesystem(device, uuid, label, populate), down, ""])
    disks = build_stack(kernel, name, disks_mib, script, workdir)
    return Stack(disks=disks, device=device, names=tuple(names), uuid=uuid, label=label,
                 assemble=up, disassemble=down)


LV_NAMES = (f"/dev/mapper/{VG}-{LV}", f"/dev/{VG}/{LV}")
MD_NAMES = (f"/dev/md/{MD_NAME}", "/dev/md127")


def lvm_linear(kernel: Kernel, workdir: Path, *, uuid: str = STACK_UUID,
               label: str = STACK_LABEL, populate: str = "") -> Stack:
    """A linear LV vgdump/crash on one disk. `populate`: shell lines run with the new file
    system mounted at /mnt."""
    return _preset(kernel, workdir, "lvm-linear", [LV_MIB + 32], _lvm_on(disk_name(0)),
                   LV_NAMES, LVM_UP, LVM_DOWN, uuid, label, populate)


def lvm_thin(kernel: Kernel, workdir: Path, *, uuid: str = STACK_UUID,
             label: str = STACK_LABEL, populate: str = "") -> Stack:
    """A thin LV vgdump/crash in the thin pool vgdump/pool, on one disk."""
    make = "\n".join([
        f"lvm pvcreate {disk_name(0)}",
        f"lvm vgcreate {VG} {disk_name(0)}",
        f"lvm lvcreate -y --type thin-pool -L {LV_MIB + 32}M -n pool {VG}",
        f"lvm lvcreate -y --thin -V {LV_MIB}M -n {LV} {VG}/pool",
    ])
    return _preset(kernel, workdir, "lvm-thin", [LV_MIB + 96], make, LV_NAMES, LVM_UP,
                   LVM_DOWN, uuid, label, populate)


def lvm_raid1(kernel: Kernel, workdir: Path, *, uuid: str = STACK_UUID,
              label: str = STACK_LABEL, populate: str = "") -> Stack:
    """A raid1 LV (dm-raid) vgdump/crash mirrored over two disks; --nosync, as the zeroed
    images already agree."""
    pvs = f"{disk_name(0)} {disk_name(1)}"
    make = "\n".join([
        f"lvm pvcreate {pvs}",
        f"lvm vgcreate {VG} {pvs}",
        f"lvm lvcreate -y --type raid1 -m1 --nosync -L {LV_MIB}M -n {LV} {VG}",
    ])
    return _preset(kernel, workdir, "lvm-raid1", [LV_MIB + 32] * 2, make, LV_NAMES, LVM_UP,
                   LVM_DOWN, uuid, label, populate)


def md_raid(kernel: Kernel, workdir: Path, level: int, *, uuid: str = STACK_UUID,
            label: str = STACK_LABEL, populate: str = "") -> Stack:
    """ext4 straight on an md array /dev/md/dump: RAID1 over two disks, RAID5 over three
    or RAID10 over four, each array about 280-320 MiB."""
    members, member_mib = {1: (2, LV_MIB + 32), 5: (3, 160), 10: (4, 160)}[level]
    make = _md_create(level, [disk_name(i) for i in range(members)])
    return _preset(kernel, workdir, f"md-raid{level}", [member_mib] * members, make, MD_NAMES,
                   MD_UP, MD_DOWN, uuid, label, populate)


def md_raid1(kernel: Kernel, workdir: Path, **fs: str) -> Stack:
    """md RAID1 over two disks (see md_raid)."""
    return md_raid(kernel, workdir, 1, **fs)


def lvm_on_md(kernel: Kernel, workdir: Path, *, uuid: str = STACK_UUID,
              label: str = STACK_LABEL, populate: str = "") -> Stack:
    """LV vgdump/crash on the PV /dev/md/dumppv, an md RAID1 over two disks."""
    pv = "/dev/md/dumppv"
    make = "\n".join([_md_create(1, [disk_name(0), disk_name(1)], name="dumppv"),
                      _lvm_on(pv)])
    return _preset(kernel, workdir, "lvm-on-md", [LV_MIB + 48] * 2, make, LV_NAMES,
                   f"{MD_UP}\n{LVM_UP}", f"{LVM_DOWN}\n{MD_DOWN}", uuid, label, populate)


def lvm_on_partition(kernel: Kernel, workdir: Path, *, uuid: str = STACK_UUID,
                     label: str = STACK_LABEL, populate: str = "") -> Stack:
    """A GPT disk whose partition 1 (type Linux LVM) is the PV of vgdump/crash."""
    disk = disk_name(0)
    make = "\n".join([
        f"echo 'size=+, type=E6D6D379-F507-44C2-A23C-238F2A3DF928' | sfdisk -q -X gpt {disk}",
        f"i=0; while [ ! -b {disk}1 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done",
        _lvm_on(f"{disk}1"),
    ])
    return _preset(kernel, workdir, "lvm-on-partition", [LV_MIB + 40], make, LV_NAMES,
                   LVM_UP, LVM_DOWN, uuid, label, populate)


@dataclasses.dataclass(frozen=True)
class Multipath:
    """One image behind two SCSI paths: what the guest sees and what QEMU needs. Give
    each LUN of one guest its own `wwn` and `serial` (the serial names its QEMU devices).
    The guest names the paths sda, sdb, ... in the order the controllers are probed, which
    for several LUNs is not theirs: tell them apart by WWID."""

    image: Path
    wwn: str = "0x5000c500a1b2c3d4"  # as QEMU takes it: 0x and 16 hex digits, NAA type 5
    serial: str = "KDUMPMPATH1"

    @property
    def sysfs_wwid(self) -> str:
        """What the guest reads in /sys/block/sdX/device/wwid."""
        return "naa." + self.wwn.removeprefix("0x")

    @property
    def map_wwid(self) -> str:
        """The WWID multipath names the map by (/dev/mapper/<it> without
        user_friendly_names): 3, the page 0x83 designator type NAA, and the WWN."""
        return "3" + self.wwn.removeprefix("0x")

    def qemu_args(self) -> list[str]:
        """Two virtio-scsi controllers, each with a scsi-hd of the same WWN and serial on
        the same file, opened twice without locking and shared for writing: a SAN LUN that
        two HBAs reach."""
        args = []
        for path in range(2):
            hba = f"{self.serial}-hba{path}"
            args += [
                "-device", f"virtio-scsi-pci,id={hba}",
                "-drive", (f"file={str(self.image).replace(',', ',,')},format=raw,if=none,"
                           f"id={hba}-lun,file.locking=off"),
                "-device", (f"scsi-hd,bus={hba}.0,drive={hba}-lun,"
                            f"wwn={self.wwn},serial={self.serial},share-rw=on"),
            ]
        return args


def scsi_paths(luns: int) -> list[str]:
    """The guest's SCSI disks for `luns` multipath LUNs, two paths each: /dev/sda, ...;
    what run_script(wait_for=) waits for."""
    return [f"/dev/sd{string.ascii_lowercase[i]}" for i in range(2 * luns)]


def multipath_disk(image: Path, size_mib: int, wwn: str = Multipath.wwn,
                   serial: str = Multipath.serial) -> Multipath:
    """A fresh sparse image `image` to reach through two paths (Multipath.qemu_args)."""
    return Multipath(image=_sparse(image, size_mib), wwn=wwn, serial=serial)


def multipath_lun(kernel: Kernel, workdir: Path, *, uuid: str = STACK_UUID,
                  label: str = STACK_LABEL, populate: str = "", wwn: str = Multipath.wwn,
                  serial: str = Multipath.serial) -> tuple[Stack, Multipath]:
    """A LUN holding ext4 on the whole disk, to attach through Multipath.qemu_args; the
    file system is made on the image as a virtio disk (the bytes are the same). The Stack
    names the map, and there is nothing to assemble for read-back: harness.disks reads
    the image itself."""
    (disk,) = build_stack(kernel, "multipath-lun", [LV_MIB + 16],
                          _filesystem(disk_name(0), uuid, label, populate) + "\n", workdir)
    lun = Multipath(image=disk, wwn=wwn, serial=serial)
    device = f"/dev/mapper/{lun.map_wwid}"
    stack = Stack(disks=[disk], device=device, names=(device,), uuid=uuid, label=label,
                  assemble="", disassemble="")
    return stack, lun


def extract_partition(image: Path, number: int, out: Path) -> Path:
    """Partition `number` of the partitioned raw `image`, copied sparse to `out`: what
    harness.disks reads when the file system is not on the whole disk."""
    table = json.loads(subprocess.run(["sfdisk", "--json", str(image)], check=True,
                                      capture_output=True, text=True).stdout)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    part = next(p for p in table["partitions"]
                if re.fullmatch(rf".*\D{number}", p["node"]))
    subprocess.run(["dd", f"if={image}", f"of={out}", f"bs={sector}", f"skip={part['start']}",
                    f"count={part['size']}", "conv=sparse", "status=none"], check=True)
    return out
