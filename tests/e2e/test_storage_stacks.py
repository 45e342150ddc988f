"""Dumps onto LVM and md RAID in QEMU: the stack made in a tool guest (harness.stacks), the
capture image built by `kdump-agent mkinitrd` on this host, a real panic, and the dump read
back from the stack on the host and checked as every e2e dump is.

Two images are built. One names its LV by /dev/mapper name (`--add lvm`: the LV comes from
the name). The other is generic by LABEL= (`--add mdraid --add lvm`: every array and VG
found) and serves the other cases too, with the record a hostonly mkinitrd writes for the
guest's stack laid over it (this host has no such stack to find): that is how the exact
assembly (one LV, one array by UUID) is proven on real disks. Degraded cases leave a disk
out of the panic boot.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness import stacks
from harness.dumps import assert_good_dump, find_dumps
from harness.kernels import Kernel
from harness.scenario import build_capture_initrd, panic_and_capture, with_config_overlay

pytestmark = pytest.mark.qemu

LEAN = 'dracut_args --no-hostonly --drivers "virtio_blk virtio_pci"'
LABEL_TARGET = f"LABEL={stacks.STACK_LABEL}"


def config(target: str, *extra: str) -> str:
    return "\n".join([f"ext4 {target}", "path /var/crash", *extra, ""])


@pytest.fixture(scope="module")
def generic_initrd(kernel: Kernel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generic image with the LVM and md tools, target by LABEL=."""
    return build_capture_initrd(kernel, config(LABEL_TARGET, f"{LEAN} --add mdraid --add lvm"),
                                tmp_path_factory.mktemp("generic"))


def lvm(vg: str, lv: str, *targets: str) -> dict[str, Any]:
    return {"kind": "lvm", "vg": vg, "lv": lv, "targets": list(targets or ["linear"])}


def md(disk: Path, level: str, members: int) -> dict[str, Any]:
    """The array a member image belongs to, as mkinitrd records it (mdadm's UUID form)."""
    dashed = subprocess.run(["blkid", "-p", "-o", "value", "-s", "UUID", str(disk)], check=True,
                            capture_output=True, text=True).stdout.strip()
    digits = dashed.replace("-", "")
    uuid = ":".join(digits[i:i + 8] for i in range(0, 32, 8))
    return {"kind": "md", "uuid": uuid, "devname": f"/dev/md/{stacks.MD_NAME}", "level": level,
            "raid_devices": members}


def recorded(initrd: Path, workdir: Path, target: str, *layers: dict[str, Any]) -> Path:
    """The generic image with kdump.conf naming `target` and a storage record of `layers`."""
    return with_config_overlay(initrd, config(target, f"{LEAN} --add mdraid --add lvm"),
                               workdir / "capture.img",
                               records={"storage.json": json.dumps({"target": list(layers)})})


def panic(kernel: Kernel, initrd: Path, stack: stacks.Stack, workdir: Path, console_logs: list[Path],
          leave_out: tuple[int, ...] = ()) -> str:
    console_logs.append(workdir / "console.log")
    disks = [disk for index, disk in enumerate(stack.disks) if index not in leave_out]
    return panic_and_capture(kernel, initrd, disks, workdir).console


def one_good_dump(kernel: Kernel, stack: stacks.Stack, workdir: Path,
                  leave_out: tuple[int, ...] = ()) -> dict[str, Any]:
    image = stacks.read_stack(kernel, stack, workdir / "fs.img", leave_out=leave_out)
    dumps = find_dumps(image, workdir / "out")
    assert len(dumps) == 1, f"expected one dump, found {[d.directory for d in dumps]}"
    return assert_good_dump(dumps[0], workdir)


def test_an_lv_named_by_its_mapper_name_in_a_generic_image(kernel: Kernel, tmp_path: Path,
                                                           console_logs: list[Path]) -> None:
    stack = stacks.lvm_linear(kernel, tmp_path / "disks")
    initrd = build_capture_initrd(kernel, config("/dev/mapper/vgdump-crash", f"{LEAN} --add lvm"), tmp_path)
    console = panic(kernel, initrd, stack, tmp_path, console_logs)
    assert "storage: LVM vgdump/crash is up in" in console
    assert "mounted /dev/mapper/vgdump-crash on /kdumproot" in console
    one_good_dump(kernel, stack, tmp_path)


def test_an_lv_on_a_partition_found_by_label_in_a_generic_image(kernel: Kernel, tmp_path: Path,
                                                                generic_initrd: Path,
                                                                console_logs: list[Path]) -> None:
    stack = stacks.lvm_on_partition(kernel, tmp_path / "disks")
    console = panic(kernel, generic_initrd, stack, tmp_path, console_logs)
    assert "storage: LVM (every volume group found) is up in" in console
    one_good_dump(kernel, stack, tmp_path)


def test_a_thin_lv_by_uuid(kernel: Kernel, tmp_path: Path, generic_initrd: Path,
                           console_logs: list[Path]) -> None:
    stack = stacks.lvm_thin(kernel, tmp_path / "disks")
    layer = lvm("vgdump", "crash", "thin", "thin-pool")
    initrd = recorded(generic_initrd, tmp_path, f"UUID={stack.uuid}", layer)
    console = panic(kernel, initrd, stack, tmp_path, console_logs)
    assert "storage: LVM vgdump/crash is up in" in console
    one_good_dump(kernel, stack, tmp_path)


def test_a_raid1_lv_with_a_leg_missing_is_activated_degraded(kernel: Kernel, tmp_path: Path,
                                                             generic_initrd: Path,
                                                             console_logs: list[Path]) -> None:
    stack = stacks.lvm_raid1(kernel, tmp_path / "disks")
    initrd = recorded(generic_initrd, tmp_path, "/dev/vgdump/crash", lvm("vgdump", "crash", "raid"))
    console = panic(kernel, initrd, stack, tmp_path, console_logs, leave_out=(1,))
    assert "/dev/mapper/vgdump-crash active (degraded)" in console
    one_good_dump(kernel, stack, tmp_path, leave_out=(1,))


def test_an_md_raid1_the_crash_left_dirty_is_not_resynced(kernel: Kernel, tmp_path: Path,
                                                           generic_initrd: Path,
                                                           console_logs: list[Path]) -> None:
    """The crash left the mirror not clean, as a crash with writes in flight does: the
    kernel wants a resync, and the capture kernel must not start one (a resync of a large
    array would compete with the dump for the disks, and is the host's business)."""
    stack = stacks.md_raid(kernel, tmp_path / "disks", 1, dirty=True)
    initrd = recorded(generic_initrd, tmp_path, f"/dev/md/{stacks.MD_NAME}", md(stack.disks[0], "raid1", 2))
    console = panic(kernel, initrd, stack, tmp_path, console_logs)
    assert "not clean -- starting background reconstruction" in console  # the crash left it dirty
    assert re.search(r"/dev/md/dump from /dev/vd[ab], /dev/vd[ab]; resync frozen", console)
    assert "md: resync of RAID array" not in console
    one_good_dump(kernel, stack, tmp_path)


@pytest.mark.parametrize(("level", "members", "missing"), [(5, 3, 1), (10, 4, 0)])
def test_an_md_array_with_a_member_missing_still_dumps(kernel: Kernel, tmp_path: Path, generic_initrd: Path,
                                                       console_logs: list[Path], level: int, members: int,
                                                       missing: int) -> None:
    stack = stacks.md_raid(kernel, tmp_path / "disks", level)
    layer = md(stack.disks[0 if missing else 1], f"raid{level}", members)
    initrd = recorded(generic_initrd, tmp_path, f"/dev/md/{stacks.MD_NAME}", layer)
    console = panic(kernel, initrd, stack, tmp_path, console_logs, leave_out=(missing,))
    assert f"degraded: 1 of {members} missing; resync frozen" in console
    one_good_dump(kernel, stack, tmp_path, leave_out=(missing,))


def test_lvm_on_md_raid1_with_a_member_missing(kernel: Kernel, tmp_path: Path, generic_initrd: Path,
                                               console_logs: list[Path]) -> None:
    stack = stacks.lvm_on_md(kernel, tmp_path / "disks")
    layer = md(stack.disks[1], "raid1", 2) | {"devname": "/dev/md/dumppv"}
    initrd = recorded(generic_initrd, tmp_path, f"UUID={stack.uuid}", layer, lvm("vgdump", "crash"))
    console = panic(kernel, initrd, stack, tmp_path, console_logs, leave_out=(0,))
    assert "degraded: 1 of 2 missing" in console and "storage: LVM vgdump/crash is up in" in console
    one_good_dump(kernel, stack, tmp_path, leave_out=(0,))
