"""A dump to a device-mapper multipath map: one disk image reached through two virtio-scsi
paths with the same WWN (a SAN LUN behind two HBAs), as the guest sees sda and sdb.

The capture image is built on this host by `kdump-agent mkinitrd` as an admin builds a
generic one (`--no-hostonly`, `dracut_args --add multipath`), with the record a hostonly
build on the guest would write laid over it: the map's exact WWID and name. The dump must
land on the map, never on one of its paths: both carry the same file system, UUID and all.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from harness.disks import make_disk
from harness.dumps import assert_good_dump, find_dumps
from harness.guest import BootResult, boot
from harness.kernels import Kernel
from harness.panic_initrd import build_panic_initrd
from harness.scenario import (
    CAPTURE_CMDLINE,
    FIRST_KERNEL_CMDLINE,
    build_capture_initrd,
    with_config_overlay,
)
from harness.stacks import Multipath, extract_partition

pytestmark = pytest.mark.qemu

UUID = "7d2e4f60-1a3b-4c5d-8e9f-0a1b2c3d4e5f"
WWN = "0x5000c500a1b2c3d4"
# multipath's WWID of the LUN: VPD page 0x83's NAA designator (type 3) as `3<naa>`; the
# guest's kernel shows the same designator as naa.5000c500a1b2c3d4 in device/wwid.
WWID = "35000c500a1b2c3d4"
ALIAS = "crashlun"
CONFIG = "\n".join([
    f"ext4 UUID={UUID}",
    "path /var/crash",
    'dracut_args --no-hostonly --add multipath --drivers "virtio_scsi virtio_pci sd_mod"',
    "",
])


def storage_record(paths: tuple[str, ...], partition: str | None = None) -> str:
    """What mkinitrd records for a target on the map (storage.kinds.stacks_as_json)."""
    return json.dumps({"target": [{"kind": "multipath", "wwid": WWID, "name": ALIAS,
                                   "paths": list(paths), "partition": partition, "handlers": []}]})


def partitioned_lun(workdir: Path) -> Path:
    """A LUN with a GPT and the file system in partition 1 (from 1 MiB), made on the host."""
    filesystem = make_disk(workdir / "part1.img", 200, UUID, "MPATHPART")
    lun = workdir / "lun.img"
    with open(lun, "wb") as fd:
        fd.truncate(202 * 1024 * 1024)
    subprocess.run(["sfdisk", "-q", "-X", "gpt", str(lun)], input="start=2048, size=409600\n",
                   text=True, check=True)
    subprocess.run(["dd", f"if={filesystem}", f"of={lun}", "bs=512", "seek=2048", "conv=notrunc,sparse",
                    "status=none"], check=True)
    return lun


@pytest.fixture(scope="module")
def generic_initrd(kernel: Kernel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_capture_initrd(kernel, CONFIG, tmp_path_factory.mktemp("mpath-initrd"))


def one_path_args(lun: Multipath) -> list[str]:
    """The first of the two paths only: the other HBA's link is down."""
    return lun.qemu_args()[:6]


def panic_on(kernel: Kernel, initrd: Path, workdir: Path, qemu_args: list[str]) -> BootResult:
    panic = build_panic_initrd(kernel, initrd, CAPTURE_CMDLINE, workdir / "panic.img")
    return boot(kernel, panic, append=FIRST_KERNEL_CMDLINE, timeout_s=480,
                log_path=workdir / "console.log", extra_args=qemu_args)


def assert_one_good_dump(image: Path, workdir: Path) -> None:
    dumps = find_dumps(image, workdir / "out")
    assert len(dumps) == 1, f"expected one dump, found {[d.directory for d in dumps]}"
    assert dumps[0].directory.lstrip("/").startswith("var/crash/127.0.0.1-")
    assert_good_dump(dumps[0], workdir)


def assert_dumped_to_the_map(result: BootResult, image: Path, workdir: Path) -> None:
    console = result.console
    assert f"storage: multipath map {ALIAS} (WWID {WWID}) is up" in console
    assert f"target UUID={UUID} is /dev/mapper/{ALIAS}" in console
    assert f"target UUID={UUID} is /dev/sd" not in console
    assert_one_good_dump(image, workdir)


def test_dump_lands_on_the_map_of_two_paths(kernel: Kernel, generic_initrd: Path, tmp_path: Path,
                                             console_logs: list[Path]) -> None:
    console_logs.append(tmp_path / "console.log")
    lun = Multipath(image=make_disk(tmp_path / "lun.img", 256, UUID, "MPATHLUN"), wwn=WWN,
                    serial="KDUMPMPATH1")
    initrd = with_config_overlay(generic_initrd, CONFIG, tmp_path / "capture.img",
                                 records={"storage.json": storage_record(("sda", "sdb"))})
    result = panic_on(kernel, initrd, tmp_path, lun.qemu_args())
    assert f"/dev/mapper/{ALIAS} over sda, sdb" in result.console
    assert_dumped_to_the_map(result, lun.image, tmp_path)


def test_a_path_down_still_dumps_on_the_map(kernel: Kernel, generic_initrd: Path, tmp_path: Path,
                                            console_logs: list[Path]) -> None:
    console_logs.append(tmp_path / "console.log")
    lun = Multipath(image=make_disk(tmp_path / "lun.img", 256, UUID, "MPATHLUN"), wwn=WWN,
                    serial="KDUMPMPATH1")
    initrd = with_config_overlay(generic_initrd, CONFIG, tmp_path / "capture.img",
                                 records={"storage.json": storage_record(("sda", "sdb"))})
    result = panic_on(kernel, initrd, tmp_path, one_path_args(lun))
    assert f"/dev/mapper/{ALIAS} over sda (1 of the host's 2 paths there)" in result.console
    assert_dumped_to_the_map(result, lun.image, tmp_path)


def test_a_generic_image_dumps_on_the_map_it_finds(kernel: Kernel, generic_initrd: Path, tmp_path: Path,
                                                   console_logs: list[Path]) -> None:
    """The image as mkinitrd built it, for any machine: it knows no WWID, sets up every LUN
    it sees through two paths (named by WWID), and finds the target's UUID on the map."""
    console_logs.append(tmp_path / "console.log")
    lun = Multipath(image=make_disk(tmp_path / "lun.img", 256, UUID, "MPATHLUN"), wwn=WWN,
                    serial="KDUMPMPATH1")
    result = panic_on(kernel, generic_initrd, tmp_path, lun.qemu_args())
    assert "storage: multipath (every map found) is up" in result.console
    assert re.search(rf"target UUID={UUID} is /dev/(mapper/{WWID}|dm-\d+)\n", result.console)
    assert_one_good_dump(lun.image, tmp_path)


def test_a_partition_on_the_map_gets_its_kpartx_map_named_as_on_the_host(
        kernel: Kernel, generic_initrd: Path, tmp_path: Path, console_logs: list[Path]) -> None:
    """Debian's kpartx names partition 1 of map crashlun `crashlun-part1`; the record says so
    and the capture kernel makes the same name over the map, not over a path's sda1."""
    console_logs.append(tmp_path / "console.log")
    lun = Multipath(image=partitioned_lun(tmp_path), wwn=WWN, serial="KDUMPMPATH1")
    initrd = with_config_overlay(generic_initrd, CONFIG, tmp_path / "capture.img",
                                 records={"storage.json": storage_record(("sda", "sdb"), f"{ALIAS}-part1")})
    result = panic_on(kernel, initrd, tmp_path, lun.qemu_args())
    assert f"/dev/mapper/{ALIAS} over sda, sdb; partition /dev/mapper/{ALIAS}-part1" in result.console
    assert f"target UUID={UUID} is /dev/mapper/{ALIAS}-part1" in result.console
    assert_one_good_dump(extract_partition(lun.image, 1, tmp_path / "part1-after.img"), tmp_path)

