"""Multipath maps under the dump target: found on the host through sysfs, recorded, packed
for generic images, and set up in the capture kernel (the tools mocked at the boundary)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from kdump_agent.errors import KdumpError, MountError
from kdump_agent.host import stackpack
from kdump_agent.host.stack import stack_under
from kdump_agent.host.stackpack import generic_stack
from kdump_agent.storage import multipath
from kdump_agent.storage.base import Stack
from kdump_agent.storage.kinds import stacks_as_json, stacks_from_json
from kdump_agent.storage.lvm import LvmVolume
from kdump_agent.storage.multipath import MultipathMap, config_for, path_wwid
from kdump_agent.targets import local

WWID = "36001405a1b2c3d4e5f60718293a4b5c6"


# ---- on the host: the stack under the target, from sysfs ----------------------------------

def _driver(sysfs: Path, device: Path, name: str) -> None:
    driver = sysfs / "bus" / "x" / "drivers" / name
    driver.mkdir(parents=True, exist_ok=True)
    (sysfs / "module" / name).mkdir(parents=True, exist_ok=True)
    if not (driver / "module").exists():
        (driver / "module").symlink_to(sysfs / "module" / name)
    (device / "driver").symlink_to(driver)


def _dm(sysfs: Path, name: str, dm_name: str, uuid: str, slaves: list[str]) -> None:
    node = sysfs / "devices" / "virtual" / "block" / name
    (node / "dm").mkdir(parents=True)
    (node / "dm" / "name").write_text(dm_name + "\n")
    (node / "dm" / "uuid").write_text(uuid + "\n")
    (node / "slaves").mkdir()
    for slave in slaves:
        (node / "slaves" / slave).symlink_to(sysfs / "class" / "block" / slave)
    (sysfs / "class" / "block" / name).symlink_to(node)


def fake_sysfs(root: Path, handler: str = "detached") -> Path:
    """Two virtio-scsi HBAs, each with a path (sda, sdb) to the same LUN, and the map dm-2
    (mpatha) over them; dm-3 is kpartx's partition 1 of it, dm-4 an LV on the map."""
    sysfs = root / "sys"
    (sysfs / "class" / "block").mkdir(parents=True)
    for index, disk in enumerate(("sda", "sdb")):
        pci = sysfs / "devices" / "pci0000:00" / f"0000:00:0{index + 4}.0"
        virtio = pci / f"virtio{index + 1}"
        scsi = virtio / f"host{index}" / f"target{index}:0:0" / f"{index}:0:0:0"
        (scsi / "block" / disk).mkdir(parents=True)
        (scsi / "dh_state").write_text(handler + "\n")
        (scsi / "block" / disk / "device").symlink_to(scsi)
        for device, name in ((scsi, "sd"), (virtio, "virtio_scsi"), (pci, "virtio_pci")):
            _driver(sysfs, device, name)
        (sysfs / "class" / "block" / disk).symlink_to(scsi / "block" / disk)
    (sysfs / "module" / "sd").rename(sysfs / "module" / "sd_mod")
    (sysfs / "bus" / "x" / "drivers" / "sd" / "module").unlink()
    (sysfs / "bus" / "x" / "drivers" / "sd" / "module").symlink_to(sysfs / "module" / "sd_mod")
    _dm(sysfs, "dm-2", "mpatha", f"mpath-{WWID}", ["sda", "sdb"])
    _dm(sysfs, "dm-3", "mpatha-part1", f"part1-mpath-{WWID}", ["dm-2"])
    _dm(sysfs, "dm-4", "vgsan-crash", "LVM-Abc123Def456", ["dm-3"])
    return sysfs


def test_a_map_is_recorded_by_wwid_and_name_with_its_paths_and_their_drivers(tmp_path: Path) -> None:
    found = stack_under("/dev/dm-2", fake_sysfs(tmp_path))
    assert found.stack.layers == (MultipathMap(wwid=WWID, name="mpatha", paths=("sda", "sdb")),)
    assert found.drivers == ["sd_mod", "virtio_scsi", "virtio_pci"]
    assert found.modules() == ["sd_mod", "virtio_scsi", "virtio_pci", "dm_mod", "dm_multipath",
                               "dm_service_time"]


def test_a_partition_of_the_map_is_recorded_as_kpartx_named_it(tmp_path: Path) -> None:
    found = stack_under("/dev/dm-3", fake_sysfs(tmp_path))
    (layer,) = found.stack.layers
    assert layer == MultipathMap(wwid=WWID, name="mpatha", paths=("sda", "sdb"), partition="mpatha-part1")
    assert found.stack.node() == "/dev/mapper/mpatha-part1"


def test_the_device_handler_on_the_paths_is_packed(tmp_path: Path) -> None:
    found = stack_under("/dev/dm-2", fake_sysfs(tmp_path, handler="alua"))
    assert found.stack.layers[0].modules()[-1] == "scsi_dh_alua"


def test_an_lv_on_a_partition_of_the_map_has_the_map_below_it(tmp_path: Path, mocker: Any) -> None:
    run = mocker.patch("kdump_agent.system.run", return_value=subprocess.CompletedProcess(
        [], 0, b"0 2048 linear 253:3 2048\n", b""))
    found = stack_under("/dev/dm-4", fake_sysfs(tmp_path))
    assert [layer.kind for layer in found.stack.layers] == ["multipath", "lvm"]
    assert found.stack.layers[0] == MultipathMap(wwid=WWID, name="mpatha", paths=("sda", "sdb"),
                                                 partition="mpatha-part1")
    assert run.call_args.args[0] == ["dmsetup", "table", "vgsan-crash"]
    assert found.stack.locator() is None  # an LV is found by its own name


def test_the_record_survives_storage_json() -> None:
    stack = Stack((MultipathMap(wwid=WWID, name="mpatha", paths=("sda", "sdb"), partition="mpatha1",
                                handlers=("rdac",)),))
    assert stacks_from_json(stacks_as_json({"target": stack})) == {"target": stack}


@pytest.mark.parametrize("fields", [{"wwid": WWID, "name": None}, {"wwid": "a b", "name": "x"},
                                    {"wwid": WWID, "name": "mpatha", "partition": "mpathb1"},
                                    {"wwid": WWID, "name": "mpatha", "partition": "mpatha-part"}])
def test_a_damaged_record_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="multipath layer"):
        stacks_from_json(json.dumps({"target": [{"kind": "multipath", **fields}]}))


# ---- generic images (--no-hostonly) ---------------------------------------------------------

def test_a_generic_image_takes_a_mapper_name_that_is_no_lv_for_a_map() -> None:
    found = generic_stack("/dev/mapper/mpatha", ["--no-hostonly", "--add", "multipath"])
    assert found.stack.layers == (MultipathMap(wwid=None, name=None),)
    assert found.stack.generic


def test_a_generic_image_without_multipath_refuses_a_mapper_name_that_is_no_lv() -> None:
    with pytest.raises(KdumpError, match=r"/dev/mapper/mpatha is a device-mapper name that is not an LVM "
                       r"volume's .* add `--add multipath` to dracut_args"):
        generic_stack("/dev/mapper/mpatha", ["--no-hostonly", "--add", "lvm"])


def test_a_generic_image_puts_the_maps_under_lvm() -> None:
    found = generic_stack("UUID=abc", ["--no-hostonly", "-a", "lvm multipath"])
    assert [layer.kind for layer in found.stack.layers] == ["multipath", "lvm"]
    named = generic_stack("/dev/vg/crash", ["--no-hostonly", "-a", "lvm multipath"])
    assert [type(layer) for layer in named.stack.layers] == [MultipathMap, LvmVolume]


def test_the_image_gets_multipath_kpartx_and_the_two_plugins_at_their_paths(mocker: Any) -> None:
    mocker.patch.object(stackpack, "shutil").which.side_effect = lambda name, path: f"/usr/sbin/{name}"
    mocker.patch.object(multipath, "PLUGIN_DIRS", ("/nonexistent/multipath", "/lib/multipath"))
    mocker.patch("os.path.exists", side_effect=lambda path: path.startswith("/lib/multipath/"))
    pack = stackpack.StoragePack()
    pack.add("target", generic_stack("UUID=abc", ["--add", "multipath"]))
    assert pack.programs == ["/usr/sbin/multipath", "/usr/sbin/kpartx", "/lib/multipath/libchecktur.so",
                             "/lib/multipath/libprioconst.so"]


# ---- in the capture kernel ------------------------------------------------------------------

def test_the_config_lets_multipath_see_only_the_target_and_names_it_as_the_host() -> None:
    text = config_for(WWID, "mpatha")
    assert 'blacklist {\n\twwid ".*"\n}' in text
    assert f'blacklist_exceptions {{\n\twwid "^{WWID}$"\n}}' in text
    assert f'wwid "{WWID}"\n\t\talias "mpatha"' in text
    for line in ('find_multipaths "no"', 'user_friendly_names "no"', 'uid_attribute ""',
                 'path_checker "tur"', 'prio "const"'):
        assert line in text
    assert 'find_multipaths "yes"' in config_for(None, None) and "blacklist" not in config_for(None, None)


def test_the_kernels_wwid_reads_as_multipaths() -> None:
    assert path_wwid("naa.5000c500a1b2c3d4\n") == "35000c500a1b2c3d4"
    assert path_wwid("eui.0025385b71b05c41") == "20025385b71b05c41"
    assert path_wwid("something else") == "something else"


class Guest:
    """The capture kernel's side: sysfs with the paths that have appeared, /dev/mapper, and
    `multipath`/`kpartx` that make their maps' nodes."""

    def __init__(self, root: Path, mocker: Any, paths: list[str], works: bool = True) -> None:
        self.sysfs, self.mapper = root / "sys", root / "mapper"
        self.calls: list[list[str]] = []
        self.mapper.mkdir()
        for path in paths:
            (self.sysfs / "block" / path / "device").mkdir(parents=True)
            (self.sysfs / "block" / path / "device" / "wwid").write_text(f"naa.{WWID[1:]}\n")
        dm = self.sysfs / "devices" / "virtual" / "block" / "dm-2"  # what sysfs_of finds for the map
        (dm / "slaves").mkdir(parents=True)
        for path in paths:
            (dm / "slaves" / path).mkdir()
        mocker.patch.object(multipath, "SYSFS", self.sysfs)
        mocker.patch.object(multipath, "MAPPER", str(self.mapper))
        mocker.patch.object(multipath, "CONFIG", root / "multipath.conf")
        mocker.patch.object(multipath, "CONFIG_DIR", root / "conf.d")
        mocker.patch.object(multipath, "sysfs_of", return_value=dm)
        mocker.patch.object(multipath, "run_tool", side_effect=self.run)
        self.works = works

    def run(self, argv: list[str], left: float) -> str:
        self.calls.append(argv)
        if self.works and argv[0] == "multipath":
            (self.mapper / "mpatha").touch()
        if argv[0] == "kpartx":
            (self.mapper / "mpatha-part1").touch()
        return ""


def test_the_map_comes_up_over_its_paths(tmp_path: Path, mocker: Any) -> None:
    guest = Guest(tmp_path, mocker, ["sda", "sdb"])
    note = MultipathMap(wwid=WWID, name="mpatha", paths=("sda", "sdb")).bring_up(time.monotonic() + 5)
    assert note == f"{guest.mapper}/mpatha over sda, sdb"
    assert guest.calls == [["multipath", "-v2", WWID]]
    assert 'alias "mpatha"' in (tmp_path / "multipath.conf").read_text()


def test_with_a_path_down_the_map_comes_up_after_the_grace_period(tmp_path: Path, mocker: Any) -> None:
    mocker.patch.object(multipath, "COMPLETE_GRACE_SECONDS", 0.3)
    guest = Guest(tmp_path, mocker, ["sda"])
    started = time.monotonic()
    note = MultipathMap(wwid=WWID, name="mpatha", paths=("sda", "sdb")).bring_up(time.monotonic() + 5)
    assert time.monotonic() - started >= 0.3
    assert note.endswith("over sda (1 of the host's 2 paths there)")
    assert guest.calls == [["multipath", "-v2", WWID]]


def test_a_partition_gets_its_map_with_the_hosts_delimiter(tmp_path: Path, mocker: Any) -> None:
    guest = Guest(tmp_path, mocker, ["sda", "sdb"])
    layer = MultipathMap(wwid=WWID, name="mpatha", paths=("sda", "sdb"), partition="mpatha-part1")
    assert layer.bring_up(time.monotonic() + 5).endswith(f"; partition {guest.mapper}/mpatha-part1")
    assert guest.calls[1] == ["kpartx", "-a", "-p", "-part", f"{guest.mapper}/mpatha"]


def test_a_map_that_does_not_come_up_fails_naming_its_wwid(tmp_path: Path, mocker: Any) -> None:
    Guest(tmp_path, mocker, ["sda", "sdb"], works=False)
    with pytest.raises(MountError, match=f"multipath map mpatha \\(WWID {WWID}\\) did not come up in time"):
        MultipathMap(wwid=WWID, name="mpatha", paths=("sda", "sdb")).bring_up(time.monotonic() + 1.5)


def test_the_target_is_the_map_never_a_path_with_the_same_uuid(tmp_path: Path, mocker: Any) -> None:
    """sda carries the file system too (udev's by-uuid link may name it), but the map holds
    it: the target is looked for only among the map's devices."""
    guest = Guest(tmp_path, mocker, ["sda", "sdb"])
    mocker.patch.object(local, "find_device", return_value="/dev/sda")
    stack = Stack((MultipathMap(wwid=WWID, name="mpatha", paths=("sda", "sdb")),))
    device, note = local.reach("UUID=abc", stack, timeout=5)
    assert device == f"{guest.mapper}/mpatha"
    assert "multipath map mpatha" in note


def test_a_generic_image_takes_the_device_that_is_a_map(mocker: Any) -> None:
    mocker.patch.object(multipath, "devices_with", return_value=["/dev/sda", "/dev/sdb", "/dev/dm-0"])
    mocker.patch.object(multipath, "is_map_device", side_effect=lambda device: device == "/dev/dm-0")
    assert MultipathMap(wwid=None, name=None).locate("UUID=abc") == "/dev/dm-0"


def test_a_generic_image_takes_a_single_path_no_map_holds_after_the_grace_period(mocker: Any) -> None:
    """A LUN reached through one path gets no map (find_multipaths yes): once the paths have
    had their time, the device itself is the target, unless a map holds it."""
    mocker.patch.object(multipath, "devices_with", return_value=["/dev/sda", "/dev/sdb"])
    mocker.patch.object(multipath, "is_map_device", return_value=False)
    mocker.patch.object(multipath, "held", side_effect=lambda device: device == "/dev/sda")
    layer = MultipathMap(wwid=None, name=None)
    mocker.patch.object(multipath, "_generic_since", time.monotonic())
    assert layer.locate("UUID=abc") is None
    mocker.patch.object(multipath, "_generic_since", time.monotonic() - multipath.COMPLETE_GRACE_SECONDS)
    assert layer.locate("UUID=abc") == "/dev/sdb"

