"""The capture kernel's side of a storage stack: each layer brought up within the deadline,
only the recorded one, with a reason naming it when it cannot be."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from kdump_agent.errors import KdumpError, MountError
from kdump_agent.storage import base, lvm, md
from kdump_agent.storage.base import Stack
from kdump_agent.storage.kinds import stacks_as_json, stacks_from_json
from kdump_agent.storage.lvm import LvmVolume, dm_name, split_dm_name
from kdump_agent.storage.md import MdArray
from kdump_agent.targets import registry
from kdump_agent.targets.local import LocalDirectory, reach

MD_UUID = "6c1b7c93:9d3f4e2a:0b1c2d3e:4f5a6b7c"
EXAMINED_BOTH_ACTIVE = (b"   Raid Level : raid1\n"
                        b"   Array State : AA ('A' == active, '.' == missing, 'R' == replacing)\n")


def done(argv: list[str], stdout: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.CompletedProcess(argv, 0, stdout, b"")


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """No real pauses between attempts, and modprobe answered."""
    monkeypatch.setattr(base, "RETRY_SECONDS", 0.0)
    monkeypatch.setattr(base, "load_modules", lambda modules: None)


def test_dm_names_double_the_dashes_of_vg_and_lv() -> None:
    assert dm_name("vg-sys", "root-a") == "vg--sys-root--a"
    assert split_dm_name("vg--sys-root--a") == ("vg-sys", "root-a", "")
    assert split_dm_name("vgdump-pool-tpool") == ("vgdump", "pool", "tpool")
    assert split_dm_name("mpatha") is None


def test_the_lv_is_activated_alone_read_only_metadata_and_without_udev(tmp_path: Path, mocker: Any) -> None:
    node = tmp_path / "vgdump-crash"
    mocker.patch.object(LvmVolume, "node", return_value=str(node))
    calls: list[tuple[list[str], dict[str, str]]] = []

    def run(argv: list[str], *, timeout: float, extra_env: dict[str, str], **_: Any) -> Any:
        calls.append((argv, extra_env))
        if len(calls) < 3:  # the PV has not been probed yet
            raise base.CommandFailed(argv, 5, 'Volume group "vgdump" not found')
        node.touch()
        return done(argv)

    mocker.patch.object(base.system, "run", side_effect=run)
    note = LvmVolume(vg="vgdump", lv="crash").bring_up(time.monotonic() + 30)
    assert note == f"{node} active (complete)"
    argv, env = calls[-1]
    assert argv[:2] == ["lvm", "lvchange"] and argv[-1] == "vgdump/crash"
    config = argv[argv.index("--config") + 1]
    assert 'volume_list=["vgdump/crash"]' in config and "metadata_read_only=1" in config
    assert "udev_rules=0" in config and "backup=0 archive=0" in config
    assert env["DM_DISABLE_UDEV"] == "1"


def test_an_lv_that_never_comes_up_fails_naming_the_vg_and_the_last_reason(mocker: Any) -> None:
    mocker.patch.object(base.system, "run", side_effect=base.CommandFailed(
        ["lvm"], 5, 'Volume group "vgdump" not found'))
    with pytest.raises(MountError, match=r'LVM vgdump/crash did not come up in time: lvm exited 5: '
                       r'Volume group "vgdump" not found'):
        LvmVolume(vg="vgdump", lv="crash").bring_up(time.monotonic() + 0.2)


def test_a_raid1_lv_missing_a_leg_is_activated_degraded_after_the_grace(mocker: Any, tmp_path: Path) -> None:
    node = tmp_path / "node"
    mocker.patch.object(LvmVolume, "node", return_value=str(node))
    mocker.patch.object(lvm, "COMPLETE_GRACE_SECONDS", 0.05)
    modes: list[str] = []

    def run(argv: list[str], **_: Any) -> Any:
        modes.append(argv[argv.index("--activationmode") + 1])
        if modes[-1] == "complete":
            raise base.CommandFailed(argv, 5, "Refusing activation of partial LV vgdump/mirror")
        node.touch()
        return done(argv)

    mocker.patch.object(base.system, "run", side_effect=run)
    assert LvmVolume(vg="vgdump", lv="mirror", targets=("raid",)).bring_up(time.monotonic() + 30).endswith(
        "(degraded)")
    assert modes[0] == "complete" and modes[-1] == "degraded"


@pytest.fixture
def md_sysfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "start_ro").write_text("0\n")
    (tmp_path / "block" / "md127" / "md").mkdir(parents=True)
    (tmp_path / "block" / "md127" / "md" / "sync_action").write_text("idle\n")
    monkeypatch.setattr(md, "START_RO", str(tmp_path / "start_ro"))
    monkeypatch.setattr(md, "SYS_BLOCK", str(tmp_path / "block"))
    monkeypatch.setattr(md.os.path, "realpath", lambda path: "/dev/md127")
    monkeypatch.setattr(md.os.path, "exists", lambda path: True)
    return tmp_path


def md_tools(mocker: Any, seen: list[bytes], examined: bytes = EXAMINED_BOTH_ACTIVE) -> list[list[str]]:
    """blkid answering `seen` in turn (the last one for ever), mdadm --examine `examined`;
    the other commands (mdadm --assemble) are recorded in the list returned."""
    assembled: list[list[str]] = []
    answers = iter(seen)

    def run(argv: list[str], **_: Any) -> Any:
        if argv[0] == "blkid":
            assert argv[-1] == "UUID=6c1b7c93-9d3f-4e2a-0b1c-2d3e4f5a6b7c"
            return done(argv, next(answers, seen[-1]))
        if argv[:2] == ["mdadm", "--examine"]:
            return done(argv, examined)
        assembled.append(argv)
        return done(argv)

    mocker.patch.object(base.system, "run", side_effect=run)
    mocker.patch.object(md.system, "run", side_effect=run)
    return assembled


def test_a_degraded_raid1_is_started_with_the_member_there_and_never_resyncs(md_sysfs: Path,
                                                                            mocker: Any) -> None:
    mocker.patch.object(md, "COMPLETE_GRACE_SECONDS", 0.05)
    assembled = md_tools(mocker, [b"/dev/vdb1\n"])
    array = MdArray(uuid=MD_UUID, devname="/dev/md/crash", level="raid1", raid_devices=2)
    note = array.bring_up(time.monotonic() + 30)
    assert note == "/dev/md/crash from /dev/vdb1, degraded: 1 of 2 missing; resync frozen"
    assert assembled == [["mdadm", "--assemble", "--run", "--config=partitions", f"--uuid={MD_UUID}",
                          "/dev/md/crash", "/dev/vdb1"]]
    assert (md_sysfs / "start_ro").read_text() == "1\n"
    assert (md_sysfs / "block" / "md127" / "md" / "sync_action").read_text() == "frozen\n"


def test_an_array_waits_for_all_its_members_within_the_grace(md_sysfs: Path, mocker: Any) -> None:
    assembled = md_tools(mocker, [b"/dev/vdb1\n", b"/dev/vdb1\n/dev/vdc1\n"])
    array = MdArray(uuid=MD_UUID, devname="/dev/md/crash", level="raid1", raid_devices=2)
    assert array.bring_up(time.monotonic() + 30) == "/dev/md/crash from /dev/vdb1, /dev/vdc1; resync frozen"
    assert assembled[0][-2:] == ["/dev/vdb1", "/dev/vdc1"]


def test_a_member_the_array_already_counts_as_gone_is_not_waited_for(md_sysfs: Path, mocker: Any) -> None:
    """The mirror lost a disk before the crash and its superblock says so ("A."): waiting
    15 s for it would only delay the dump."""
    assembled = md_tools(mocker, [b"/dev/vdb1\n"], b"   Array State : A. ('A' == active, '.' == missing)\n")
    started = time.monotonic()
    array = MdArray(uuid=MD_UUID, devname="/dev/md/crash", level="raid1", raid_devices=2)
    assert array.bring_up(started + 60).endswith("degraded: 1 of 2 missing; resync frozen")
    assert time.monotonic() - started < 1.0 and len(assembled) == 1


def test_an_array_with_no_member_fails_naming_it(md_sysfs: Path, mocker: Any) -> None:
    mocker.patch.object(md.system, "run", return_value=done([], b""))
    array = MdArray(uuid=MD_UUID, devname="/dev/md/crash", level="raid1", raid_devices=2)
    with pytest.raises(MountError, match=rf"md raid1 /dev/md/crash \(UUID {MD_UUID}\) did not come up "
                       "in time: it never appeared"):
        array.bring_up(time.monotonic() + 0.2)


def test_the_record_round_trips_and_a_damaged_one_is_refused() -> None:
    stacks = {"target": Stack((MdArray(uuid=MD_UUID, devname="/dev/md/crash", level="raid1", raid_devices=2),
                               LvmVolume(vg="vgdump", lv="crash", targets=("linear",)))),
              "rootfs": Stack()}
    text = stacks_as_json(stacks)
    assert "rootfs" not in json.loads(text)
    assert stacks_from_json(text) == {"target": stacks["target"]}
    bad_uuid = '{"target": [{"kind": "md", "uuid": "x", "devname": null, "level": "", "raid_devices": 0}]}'
    for damaged in ('{"target": [{"kind": "zfs"}]}', '{"target": [{"kind": "lvm", "vg": "a"}]}',
                    '{"elsewhere": []}', '[]', bad_uuid):
        with pytest.raises((ValueError, TypeError)):
            stacks_from_json(damaged)


def test_the_destination_gets_the_stack_the_image_records(tmp_path: Path) -> None:
    storage = tmp_path / "storage.json"
    target = tmp_path / "target.json"
    target.write_text('{"spec": "UUID=abc", "fstype": "ext4", "directory": "/var/crash"}')
    storage.write_text(stacks_as_json({"target": Stack((LvmVolume(vg="vgsys", lv="root"),))}))
    destination = registry.configured(None, source="kdump.conf", recorded_target=str(target), known_hosts="",
                                      recorded_storage=str(storage))
    assert isinstance(destination, LocalDirectory)
    assert destination.describe() == "ext4 UUID=abc on LVM vgsys/root, path /var/crash"
    assert destination.server is None
    plain = registry.configured(None, source="kdump.conf", recorded_target=str(target), known_hosts="",
                                recorded_storage=str(tmp_path / "none.json"))
    assert isinstance(plain, LocalDirectory) and not plain.stack
    storage.write_text("{not json")
    with pytest.raises(KdumpError, match="the storage stack recorded by mkinitrd cannot be read"):
        registry.configured(None, source="kdump.conf", recorded_target=str(target), known_hosts="",
                            recorded_storage=str(storage))


def test_reach_brings_the_stack_up_then_finds_the_node_it_made(tmp_path: Path, mocker: Any) -> None:
    node = tmp_path / "mapper-node"
    order: list[str] = []
    mocker.patch.object(Stack, "bring_up", side_effect=lambda give_up_at: order.append("up") or ["LVM up"])
    mocker.patch.object(Stack, "node", return_value=str(node))
    node.touch()
    stack = Stack((LvmVolume(vg="vgdump", lv="crash"),))
    device, note = reach("/dev/disk/by-id/dm-name-vgdump-crash", stack, 5)
    assert (device, note, order) == (str(node), "LVM up", ["up"])


def test_a_generic_image_that_finds_no_array_goes_on_to_wait_for_the_target(md_sysfs: Path,
                                                                            mocker: Any) -> None:
    (md_sysfs / "block" / "md127" / "md" / "sync_action").unlink()
    (md_sysfs / "block" / "md127" / "md").rmdir()
    mocker.patch.object(md.system, "run", return_value=subprocess.CompletedProcess(
        [], 1, b"", b"mdadm: No arrays found in config file or automatically"))
    note = MdArray(uuid=None, devname=None, level="", raid_devices=0).bring_up(time.monotonic() + 5)
    assert note == "mdadm exited 1; 0 arrays up, resync frozen"


def test_a_plain_disk_that_never_appears_is_reported_with_the_whole_disk_timeout(mocker: Any) -> None:
    mocker.patch("kdump_agent.targets.local.find_device", return_value=None)
    mocker.patch("kdump_agent.targets.local.POLL_SECONDS", 0.01)
    with pytest.raises(MountError, match=r"^target device UUID=abc did not appear within 0.2 s$"):
        reach("UUID=abc", Stack(), 0.2)
