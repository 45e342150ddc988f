"""mkinitrd's view of the storage under a target: the stack found through sysfs, bottom first."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from kdump_agent.errors import KdumpError
from kdump_agent.host import stack as host_stack
from kdump_agent.host.stack import stack_under
from kdump_agent.storage.lvm import LvmVolume
from kdump_agent.storage.md import MdArray

MD_UUID = "6c1b7c93:9d3f4e2a:0b1c2d3e:4f5a6b7c"
TABLES = {"vgdump-crash": "0 524288 linear 9:127 2048\n",
          "vgdump-thin": "0 524288 thin 253:2 1\n",
          "vgdump-pool-tpool": "0 524288 thin-pool 253:0 253:1 128 0 0\n",
          "vgdump-pool_tmeta": "0 8192 linear 252:16 2048\n",
          "vgdump-pool_tdata": "0 524288 linear 252:16 10240\n",
          "vgdump-mirror": "0 524288 raid raid1 3 0 region_size 1024 2 253:3 253:4 253:5 253:6\n",
          "vgdump-mirror_rimage_0": "0 524288 linear 252:16 2048\n"}


class FakeSysfs:
    """A sysfs tree as the kernel lays it out: disks behind virtio PCI with their drivers,
    device-mapper and md devices under devices/virtual/block with dm/ or md/ and slaves/."""

    def __init__(self, root: Path) -> None:
        self.sysfs = root / "sys"
        self.virtual = self.sysfs / "devices" / "virtual" / "block"
        (self.sysfs / "class" / "block").mkdir(parents=True)
        pci = self.sysfs / "devices" / "pci0000:00" / "0000:00:04.0"
        self.bus = pci / "virtio1"
        self.bus.mkdir(parents=True)
        for name, device in (("virtio_blk", self.bus), ("virtio_pci", pci)):
            driver = self.sysfs / "bus" / "x" / "drivers" / name
            driver.mkdir(parents=True)
            (self.sysfs / "module" / name).mkdir(parents=True)
            (driver / "module").symlink_to(self.sysfs / "module" / name)
            (device / "driver").symlink_to(driver)

    def _link(self, name: str, node: Path) -> Path:
        (self.sysfs / "class" / "block" / name).symlink_to(node)
        return node

    def disk(self, name: str, partitions: int = 0) -> Path:
        node = self.bus / "block" / name
        node.mkdir(parents=True)
        self._link(name, node)
        for number in range(1, partitions + 1):
            part = node / f"{name}{number}"
            part.mkdir()
            (part / "partition").write_text(f"{number}\n")
            self._link(part.name, part)
        return node

    def virtual_device(self, name: str, slaves: list[str], *, dm: tuple[str, str] | None = None) -> Path:
        node = self.virtual / name
        (node / "slaves").mkdir(parents=True)
        if dm:
            (node / "dm").mkdir()
            (node / "dm" / "name").write_text(dm[0] + "\n")
            (node / "dm" / "uuid").write_text(dm[1] + "\n")
        else:
            (node / "md").mkdir()
        for slave in slaves:
            (node / "slaves" / slave).symlink_to((self.sysfs / "class" / "block" / slave).resolve())
        return self._link(name, node)


@pytest.fixture
def tools(mocker: Any) -> Any:
    """dmsetup table and mdadm --detail --export, answered from TABLES and one RAID1."""
    def run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[bytes]:
        if argv[:2] == ["dmsetup", "table"]:
            return subprocess.CompletedProcess(argv, 0, TABLES[argv[2]].encode(), b"")
        if argv[:3] == ["mdadm", "--detail", "--export"]:
            text = f"MD_LEVEL=raid1\nMD_DEVICES=2\nMD_METADATA=1.2\nMD_UUID={MD_UUID}\nMD_DEVNAME=crash\n"
            return subprocess.CompletedProcess(argv, 0, text.encode(), b"")
        raise AssertionError(f"unexpected command {argv}")
    return mocker.patch.object(host_stack.system, "run", side_effect=run)


def test_an_lv_on_md_raid1_of_two_partitions_is_recorded_bottom_first(tmp_path: Path, tools: Any) -> None:
    fake = FakeSysfs(tmp_path)
    fake.disk("vda", partitions=1)
    fake.disk("vdb", partitions=1)
    fake.virtual_device("md127", ["vda1", "vdb1"])
    fake.virtual_device("dm-0", ["md127"], dm=("vgdump-crash", "LVM-" + "a" * 64))
    found = stack_under("/dev/dm-0", sysfs=fake.sysfs)
    assert found.stack.layers == (
        MdArray(uuid=MD_UUID, devname="/dev/md/crash", level="raid1", raid_devices=2),
        LvmVolume(vg="vgdump", lv="crash", targets=("linear",)))
    assert found.modules() == ["virtio_blk", "virtio_pci", "md_mod", "raid1", "dm_mod"]
    assert found.stack.describe() == f"LVM vgdump/crash on md raid1 /dev/md/crash (UUID {MD_UUID})"


def test_a_thin_lv_is_one_layer_that_needs_the_thin_pool_target_and_thin_check(tmp_path: Path,
                                                                                tools: Any) -> None:
    fake = FakeSysfs(tmp_path)
    fake.disk("vdb")
    fake.virtual_device("dm-0", ["vdb"], dm=("vgdump-pool_tmeta", "LVM-" + "a" * 64 + "-tmeta"))
    fake.virtual_device("dm-1", ["vdb"], dm=("vgdump-pool_tdata", "LVM-" + "a" * 64 + "-tdata"))
    fake.virtual_device("dm-2", ["dm-0", "dm-1"], dm=("vgdump-pool-tpool", "LVM-" + "b" * 64 + "-tpool"))
    fake.virtual_device("dm-3", ["dm-2"], dm=("vgdump-thin", "LVM-" + "c" * 64))
    found = stack_under("/dev/dm-3", sysfs=fake.sysfs)
    (layer,) = found.stack.layers
    assert isinstance(layer, LvmVolume)
    assert (layer.vg, layer.lv, set(layer.targets)) == ("vgdump", "thin", {"thin", "thin-pool", "linear"})
    assert layer.programs() == ("lvm", "thin_check")
    assert "dm_thin_pool" in found.modules()


def test_a_raid1_lv_brings_dm_raid_and_the_md_personality(tmp_path: Path, tools: Any) -> None:
    fake = FakeSysfs(tmp_path)
    fake.disk("vdb")
    fake.virtual_device("dm-0", ["vdb"], dm=("vgdump-mirror_rimage_0", "LVM-" + "a" * 64))
    fake.virtual_device("dm-1", ["dm-0"], dm=("vgdump-mirror", "LVM-" + "b" * 64))
    modules = stack_under("/dev/dm-1", sysfs=fake.sysfs).modules()
    assert {"dm_raid", "raid1"} <= set(modules)


def test_a_plain_partition_has_no_layers_only_its_drivers(tmp_path: Path, tools: Any) -> None:
    fake = FakeSysfs(tmp_path)
    fake.disk("vda", partitions=2)
    found = stack_under("/dev/vda2", sysfs=fake.sysfs)
    assert not found.stack
    assert found.modules() == ["virtio_blk", "virtio_pci"]
    tools.assert_not_called()


def test_dm_crypt_is_refused_with_the_reason(tmp_path: Path, tools: Any) -> None:
    fake = FakeSysfs(tmp_path)
    fake.disk("vdb")
    fake.virtual_device("dm-0", ["vdb"], dm=("luks-1234", "CRYPT-LUKS2-1234-luks-1234"))
    fake.virtual_device("dm-1", ["dm-0"], dm=("vgdump-crash", "LVM-" + "a" * 64))
    with pytest.raises(KdumpError, match=r"/dev/dm-0 \(luks-1234\) is on dm-crypt \(LUKS\)"
                       r".*passphrase.*under /boot"):
        stack_under("/dev/dm-1", sysfs=fake.sysfs)


def test_a_device_mapper_device_no_known_tool_made_is_refused(tmp_path: Path, tools: Any) -> None:
    fake = FakeSysfs(tmp_path)
    fake.disk("vdb")
    fake.virtual_device("dm-0", ["vdb"], dm=("handmade", ""))
    with pytest.raises(KdumpError, match=r"made by no tool \(it has no dm uuid\)"):
        stack_under("/dev/dm-0", sysfs=fake.sysfs)


def test_an_md_array_with_external_metadata_is_refused(tmp_path: Path, mocker: Any) -> None:
    fake = FakeSysfs(tmp_path)
    fake.disk("vda")
    fake.virtual_device("md126", ["vda"])
    detail = (b"MD_LEVEL=raid1\nMD_DEVICES=2\nMD_METADATA=imsm\nMD_CONTAINER=/dev/md/imsm0\n"
              b"MD_UUID=" + MD_UUID.encode())
    answer = subprocess.CompletedProcess([], 0, detail, b"")
    mocker.patch.object(host_stack.system, "run", return_value=answer)
    with pytest.raises(KdumpError, match=r"external metadata \(imsm\); its writes need mdmon"):
        stack_under("/dev/md126", sysfs=fake.sysfs)
