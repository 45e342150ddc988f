"""Host-side block device facts: drivers on the path to the target disk."""

from pathlib import Path

from kdump_agent.host.blockdev import drivers_for, nearest_existing


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
