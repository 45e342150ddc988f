"""Host-side block device facts: drivers on the path to the target disk."""

from pathlib import Path

from kdump_agent.host.blockdev import drivers_for, nearest_existing, storage_layers


def fake_sysfs(root: Path) -> Path:
    """A sysfs tree as the kernel lays it out for a virtio disk behind PCI."""
    sysfs = root / "sys"
    pci = sysfs / "devices" / "pci0000:00" / "0000:00:04.0"
    disk = pci / "virtio1" / "block" / "vda"
    (disk / "vda1").mkdir(parents=True)
    modules = sysfs / "module"
    for name, device in (("virtio_blk", pci / "virtio1"), ("virtio_pci", pci)):
        driver = sysfs / "bus" / "x" / "drivers" / name
        driver.mkdir(parents=True)
        (modules / name).mkdir(parents=True)
        (driver / "module").symlink_to(modules / name)
        (device / "driver").symlink_to(driver)
    (sysfs / "class" / "block").mkdir(parents=True)
    (sysfs / "class" / "block" / "vda").symlink_to(disk)
    (sysfs / "class" / "block" / "vda1").symlink_to(disk / "vda1")
    return sysfs


def test_drivers_for_partition_walks_up_to_the_bus(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path)
    assert drivers_for("/dev/vda1", sysfs=sysfs) == ["virtio_blk", "virtio_pci"]


def test_nearest_existing_climbs_to_an_existing_parent(tmp_path: Path) -> None:
    assert nearest_existing(str(tmp_path / "var" / "crash")) == str(tmp_path)


def stacked_sysfs(root: Path) -> Path:
    """sysfs for an LV (dm-1) on an md RAID1 (md0) of two partitions, and an iSCSI disk."""
    sysfs = root / "sys"
    block = sysfs / "devices" / "virtual" / "block"
    disks = sysfs / "devices" / "pci0000:00" / "0000:00:04.0" / "virtio1" / "block"
    for disk in ("vda", "vdb"):
        (disks / disk / f"{disk}1").mkdir(parents=True)
        (disks / disk / f"{disk}1" / "partition").write_text("1\n")
    (block / "md0" / "md").mkdir(parents=True)
    (block / "md0" / "slaves").mkdir()
    for disk in ("vda", "vdb"):
        (block / "md0" / "slaves" / f"{disk}1").symlink_to(disks / disk / f"{disk}1")
    (block / "dm-1" / "dm").mkdir(parents=True)
    (block / "dm-1" / "dm" / "uuid").write_text("LVM-abcdefgh12345678\n")
    (block / "dm-1" / "slaves").mkdir()
    (block / "dm-1" / "slaves" / "md0").symlink_to(block / "md0")
    iscsi = sysfs / "devices" / "platform" / "host2" / "session1" / "target2:0:0" / "2:0:0:0"
    iscsi = iscsi / "block" / "sdb"
    iscsi.mkdir(parents=True)
    (sysfs / "class" / "block").mkdir(parents=True)
    for name, node in (("dm-1", block / "dm-1"), ("md0", block / "md0"), ("vda1", disks / "vda" / "vda1"),
                       ("sdb", iscsi)):
        (sysfs / "class" / "block" / name).symlink_to(node)
    return sysfs


def test_storage_layers_name_what_stands_between_the_file_system_and_the_disks(tmp_path: Path) -> None:
    sysfs = stacked_sysfs(tmp_path)
    assert storage_layers("/dev/dm-1", sysfs=sysfs) == ["LVM", "md RAID"]
    assert storage_layers("/dev/md0", sysfs=sysfs) == ["md RAID"]
    assert storage_layers("/dev/sdb", sysfs=sysfs) == ["iSCSI"]
    assert storage_layers("/dev/vda1", sysfs=sysfs) == []
