"""`status`: each check as an admin reads it, and the verdict."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rawdevices import as_block_device, empty_image, ext4_image, flattened_image, partitioned_image

from kdump_agent.config import Config, parse
from kdump_agent.errors import KdumpError
from kdump_agent.host import stackpack, status
from kdump_agent.host.estimate import Estimate, Part
from kdump_agent.host.hostpaths import HostPaths
from kdump_agent.host.stack import Found
from kdump_agent.network.plan import VirtualLink
from kdump_agent.network.record import HostRecord
from kdump_agent.storage.base import Stack
from kdump_agent.storage.kinds import stacks_as_json
from kdump_agent.storage.lvm import LvmVolume

MIB = 1 << 20


def files(tmp_path: Path, **values: str) -> HostPaths:
    """HostPaths under tmp_path; each keyword writes that file (crash_size="0", sysrq="438", ...)."""
    paths = HostPaths(**{name: str(tmp_path / name) for name in
                         ("crash_size", "crash_loaded", "nmi_watchdog", "hardlockup_panic", "sysrq")})
    for name, value in values.items():
        Path(getattr(paths, name)).write_text(value + "\n")
    return paths


def test_reservation_missing_zero_and_present(tmp_path: Path) -> None:
    assert "no crash kexec support" in status.check_reservation(files(tmp_path)).detail
    zero = status.check_reservation(files(tmp_path, crash_size="0"))
    assert (zero.ok, zero.detail) == (False, "nothing reserved")
    assert "crashkernel=<size>" in zero.fix
    assert status.check_reservation(files(tmp_path, crash_size=str(256 * MIB))) == status.Check(
        "crashkernel reserved", True, "256M")


def test_capture_kernel_not_loaded_says_to_start(tmp_path: Path) -> None:
    check = status.check_loaded(files(tmp_path, crash_loaded="0"))
    assert not check.ok and check.fix.startswith("kdump-agent start")
    assert status.check_loaded(files(tmp_path, crash_loaded="1")).ok


def test_config_errors_are_shown_with_file_and_line(tmp_path: Path) -> None:
    conf = tmp_path / "kdump.conf"
    conf.write_text("path var/crash\nfinal_action shell\n")
    check, config = status.check_config(str(conf))
    assert config is None and not check.ok
    assert check.detail.startswith(f"{conf}:1: 'path' needs an absolute path")
    missing, _ = status.check_config(str(tmp_path / "none.conf"))
    assert "an empty file means the defaults" in missing.fix


def test_image_stale_names_what_changed(tmp_path: Path) -> None:
    image = tmp_path / "initramfs-6.1.0kdump.img"
    config = parse("path /var/crash\n", "/etc/kdump.conf")
    assert status.check_image(config, image, lambda c, i: []).detail.endswith("does not exist")
    image.write_bytes(b"image")
    assert status.check_image(config, image, lambda c, i: []).ok
    stale = status.check_image(config, image, lambda c, i: ["kdump.conf /etc/kdump.conf changed"])
    assert not stale.ok and stale.detail.endswith("is stale: kdump.conf /etc/kdump.conf changed")

    def unreachable(c: Any, i: Any) -> list[str]:
        raise KdumpError("no device with UUID=abc on this machine")

    assert status.check_image(config, image, unreachable).detail == (
        "cannot tell: no device with UUID=abc on this machine")
    assert status.check_image(parse("force_no_rebuild 1\n", "k"), image, unreachable).ok


@pytest.mark.parametrize(("conf", "address"), [
    ("ssh kdump@dumps.example.com:2222\n", ("dumps.example.com", 2222)),
    ("nfs nas.example.com:/export/crash\n", ("nas.example.com", 2049)),
])
def test_network_target_is_a_tcp_connect_within_seconds(conf: str, address: tuple[str, int]) -> None:
    tried: list[tuple[str, int, float]] = []
    check = status.check_target(parse(conf, "/etc/kdump.conf"), lambda h, p, t: tried.append((h, p, t)))
    assert check.ok and tried == [(*address, status.CONNECT_TIMEOUT)]

    def refused(host: str, port: int, timeout: float) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    down = status.check_target(parse(conf, "/etc/kdump.conf"), refused)
    assert not down.ok and "Connection refused" in down.detail
    assert down.fix == "check the target in /etc/kdump.conf:1 and that it is up"


def test_local_target_device_must_be_present(mocker: Any) -> None:
    mocker.patch.object(status, "resolve_spec", return_value="/dev/sdb1")
    assert status.check_target(parse("xfs LABEL=dump\n", "k")).detail == "LABEL=dump is /dev/sdb1"
    mocker.patch.object(status, "resolve_spec", side_effect=KdumpError("no device with LABEL=dump"))
    assert not status.check_target(parse("xfs LABEL=dump\n", "k")).ok


def test_hard_lockup_needs_the_watchdog_and_the_panic_switch(tmp_path: Path) -> None:
    off = status.check_nmi_watchdog(files(tmp_path, nmi_watchdog="0"))
    assert not off.ok and not off.blocking and "kernel.nmi_watchdog=1" in off.fix
    logged = status.check_nmi_watchdog(files(tmp_path, nmi_watchdog="1", hardlockup_panic="0"))
    assert not logged.ok and "only logged" in logged.detail
    assert status.check_nmi_watchdog(files(tmp_path, nmi_watchdog="1", hardlockup_panic="1")).ok


@pytest.mark.parametrize(("value", "ok", "fix"), [("1", True, ""), ("184", True, ""),
                                                  ("438", False, "sysctl -w kernel.sysrq=446"),
                                                  ("0", False, "sysctl -w kernel.sysrq=8")])
def test_sysrq_crash_key_needs_the_dump_bit(tmp_path: Path, value: str, ok: bool, fix: str) -> None:
    check = status.check_sysrq(files(tmp_path, sysrq=value))
    assert check.ok is ok and check.fix.startswith(fix) and not check.blocking


def test_reservation_against_the_estimate() -> None:
    needs_144 = (Part("parts", 140 * MIB, ""),)
    assert status.check_size(Estimate(1 << 30, needs_144, reserved=256 * MIB)).ok
    small = status.check_size(Estimate(1 << 30, needs_144, reserved=128 * MIB))
    assert (small.ok, small.detail) == (False, "128M reserved, this machine needs 144M")


def test_only_blocking_problems_make_the_machine_not_ready() -> None:
    checks = [status.Check("crashkernel reserved", True, "256M"),
              status.Check("SysRq crash key", False, "kernel.sysrq = 438", "sysctl", blocking=False)]
    assert status.ready(checks)
    assert status.report(checks)[-1] == "ready to dump (advisory: SysRq crash key)"
    checks.append(status.Check("capture kernel loaded", False, "no", "kdump-agent start"))
    assert not status.ready(checks)
    lines = status.report(checks)
    assert lines[-1].startswith("NOT READY to dump: capture kernel loaded")
    assert "PROBLEM  capture kernel loaded: no" in lines and "           fix: kdump-agent start" in lines


def test_all_checks_on_an_armed_machine(tmp_path: Path, mocker: Any) -> None:
    paths = files(tmp_path, crash_size=str(256 * MIB), crash_loaded="1", nmi_watchdog="1",
                  hardlockup_panic="1", sysrq="1")
    conf = tmp_path / "kdump.conf"
    conf.write_text("ext4 UUID=abc\n")
    image = tmp_path / "initramfs.img"
    image.write_bytes(b"image")
    image.chmod(0o600)
    mocker.patch.object(status, "resolve_spec", return_value="/dev/vdb")
    mocker.patch.object(stackpack, "resolve_spec", return_value="/dev/vdb")
    mocker.patch.object(stackpack, "stack_under", return_value=Found(Stack()))
    mocker.patch.object(status, "collector_program", return_value="/usr/bin/makedumpfile")
    checks = status.run_checks(str(conf), paths, image=image,
                               estimate=lambda c: Estimate(1 << 30, (Part("p", 140 * MIB, ""),), 256 * MIB),
                               changes=lambda c, i: [])
    assert [c.name for c in checks if not c.ok] == []
    assert status.report(checks)[-1] == "ready to dump"


def raw_config(device: Path) -> Config:
    """`raw <device>` on line 1 of /etc/kdump.conf, whatever the parser thinks of the path."""
    config = parse("raw /dev/vdc\npath /var/crash\n", "/etc/kdump.conf")
    assert config.target is not None
    return dataclasses.replace(config, target=dataclasses.replace(config.target, spec=str(device)))


def test_raw_target_must_be_a_block_device(tmp_path: Path) -> None:
    device = empty_image(tmp_path / "shadow")
    check = status.check_target(raw_config(device))
    assert (check.ok, check.detail) == (False, f"{device} is not a block device")
    assert check.fix == "point `raw` in /etc/kdump.conf:1 at an empty partition or LV"


@pytest.mark.parametrize(("make", "found"), [(ext4_image, "ext4"),
                                             (partitioned_image, "dos partition table")])
def test_raw_target_holding_anything_blkid_knows_is_a_problem(
        tmp_path: Path, mocker: Any, make: Callable[[Path], Path], found: str) -> None:
    device = make(tmp_path / "vdc")
    as_block_device(mocker, device)
    check = status.check_target(raw_config(device))
    assert (check.ok, check.detail) == (False, f"{device} holds {found} (blkid): a raw dump would destroy it")


def test_an_empty_raw_block_device_is_a_usable_target(tmp_path: Path, mocker: Any) -> None:
    device = empty_image(tmp_path / "vdc")
    as_block_device(mocker, device)
    assert status.check_target(raw_config(device)).ok


def test_a_dump_left_on_the_raw_target_waits_to_be_restored(tmp_path: Path, mocker: Any) -> None:
    device = flattened_image(tmp_path / "vdc")
    as_block_device(mocker, device)
    assert status.check_target(raw_config(device)).ok  # blkid knows no flattened dump
    [check] = status.check_raw_restored(raw_config(device))
    assert (check.ok, check.blocking) == (False, False)  # the next panic is dumped, over it
    assert check.detail == f"a dump on {device} waits to be restored (the next panic writes over it)"
    assert check.fix.startswith("kdump-agent restore-raw") and "free space in /var/crash" in check.fix
    [cleared] = status.check_raw_restored(raw_config(empty_image(tmp_path / "vdc")))
    assert cleared.ok
    assert status.check_raw_restored(parse("ext4 UUID=abc\n", "k")) == []


def test_run_checks_reports_a_pending_raw_dump(tmp_path: Path, mocker: Any) -> None:
    device = flattened_image(tmp_path / "vdc")
    config = raw_config(device)
    mocker.patch.object(status, "check_config", return_value=(status.Check("config valid", True, ""), config))
    paths = files(tmp_path, crash_size=str(256 * MIB), crash_loaded="1")
    checks = status.run_checks("/etc/kdump.conf", paths,
                               image=tmp_path / "initramfs.img", estimate=lambda c: "not measured",
                               changes=lambda c, i: [])
    assert "raw dump restored" in [c.name for c in checks if not c.ok]


@pytest.mark.parametrize(("conf", "blocking"),
                         [("ssh kdump@dumps.example\n", True), ("ext4 UUID=abc\n", False)],
                         ids=["ssh: holds the key", "local"])
def test_an_image_others_can_read_is_a_problem_blocking_when_it_holds_the_ssh_key(
        tmp_path: Path, conf: str, blocking: bool) -> None:
    config = parse(conf, "/etc/kdump.conf")
    image = tmp_path / "initramfs.img"
    assert status.check_image_mode(config, image).ok  # not built yet: check_image says so
    image.write_bytes(b"image")
    image.chmod(0o644)
    check = status.check_image_mode(config, image)
    assert (check.ok, check.blocking, check.fix) == (False, blocking, f"chmod 0600 {image}")
    assert check.detail.startswith(f"{image} is mode 0644: group and others can read it")
    assert ("/root/.ssh/kdump_id_rsa" in check.detail) is blocking
    image.chmod(0o600)
    assert status.check_image_mode(config, image).ok


def test_a_core_collector_missing_on_this_host_is_a_problem_with_the_fix(mocker: Any) -> None:
    from kdump_agent.host import mkinitrd as mk

    mocker.patch.object(mk, "find_program", return_value=None)
    check = status.check_collector(parse("core_collector cp\n", "/etc/kdump.conf"))
    assert (check.ok, check.name) == (False, "core_collector on this host")
    assert check.detail == "/etc/kdump.conf: core_collector cp is not installed on this host " \
                           "(not in /usr/sbin:/usr/bin:/sbin:/bin)"
    assert check.fix.startswith("install cp, or set core_collector in /etc/kdump.conf")
    mocker.patch.object(mk, "find_program", return_value="/usr/bin/makedumpfile")
    assert status.check_collector(parse("", "/etc/kdump.conf")) == status.Check(
        "core_collector on this host", True, "/usr/bin/makedumpfile")


# ---- the storage stack under the target ---------------------------------------------------

def lvm_here(mocker: Any) -> None:
    mocker.patch.object(stackpack, "resolve_spec", return_value="/dev/dm-0")
    found = Found(Stack((LvmVolume(vg="vgsys", lv="root"),)))
    mocker.patch.object(stackpack, "stack_under", return_value=found)
    mocker.patch.object(stackpack, "host_program", side_effect=lambda name: f"/usr/sbin/{name}")


def test_a_target_on_lvm_is_ready_when_the_image_holds_its_record_and_lvm(tmp_path: Path,
                                                                         mocker: Any) -> None:
    lvm_here(mocker)
    image = tmp_path / "initramfs.img"
    image.write_bytes(b"image")
    record = stacks_as_json({"target": Stack((LvmVolume(vg="vgsys", lv="root"),))})
    mocker.patch.object(status, "image_file", return_value=record + "\n")
    mocker.patch.object(status, "image_paths", return_value={"/usr/sbin/lvm", "/init"})
    check = status.check_storage(parse("ext4 /dev/mapper/vgsys-root\n", "/etc/kdump.conf"), image)
    assert check.ok
    assert check.detail == (f"/dev/mapper/vgsys-root is on LVM vgsys/root; {image} holds its record and "
                            "/usr/sbin/lvm")
    mocker.patch.object(status, "image_paths", return_value={"/init"})
    check = status.check_storage(parse("ext4 /dev/mapper/vgsys-root\n", "/etc/kdump.conf"), image)
    assert (check.ok, check.detail) == (False, f"{image} lacks /usr/sbin/lvm, which LVM vgsys/root needs")


def test_an_image_built_before_the_target_moved_onto_lvm_is_a_problem(tmp_path: Path, mocker: Any) -> None:
    lvm_here(mocker)
    image = tmp_path / "initramfs.img"
    image.write_bytes(b"image")
    mocker.patch.object(status, "image_file", return_value=None)
    mocker.patch.object(status, "image_paths", return_value={"/usr/sbin/lvm"})
    check = status.check_storage(parse("ext4 /dev/mapper/vgsys-root\n", "/etc/kdump.conf"), image)
    assert not check.ok
    assert check.detail == f"/dev/mapper/vgsys-root is on LVM vgsys/root, which {image} does not record"
    assert check.fix.startswith("kdump-agent mkinitrd")


def test_a_target_on_dm_crypt_is_a_problem_status_names(tmp_path: Path, mocker: Any) -> None:
    mocker.patch.object(stackpack, "resolve_spec", return_value="/dev/dm-0")
    refused = KdumpError("/dev/dm-0 (luks) is on dm-crypt (LUKS)")
    mocker.patch.object(stackpack, "stack_under", side_effect=refused)
    check = status.check_storage(parse("ext4 /dev/mapper/luks\n", "/etc/kdump.conf"), tmp_path / "x.img")
    assert not check.ok and "is on dm-crypt (LUKS)" in check.detail
    assert status.check_storage(parse("nfs server:/dumps\n", "/etc/kdump.conf"), tmp_path / "x.img").ok


# ---- the way to a network target's server --------------------------------------------------

def host_record(interface: str, links: tuple[VirtualLink, ...] = (),
                nic_macs: tuple[tuple[str, str], ...] = (), addresses: tuple[str, ...] = ("10.0.0.5/24",)
                ) -> HostRecord:
    return HostRecord(host="filer.example", target="10.0.0.9", interface=interface, mac="52:54:00:00:00:01",
                      mtu=1500, addresses=addresses, gateway=None, dns=(), dhcp=False, hostname="crashed",
                      links=links, nic_macs=nic_macs)


BOND = (VirtualLink("bond", "bond0", ("eth0", "eth1"), (("mode", "active-backup"),)),)
NFS_CONFIG = "nfs filer.example:/export\n"


def network_here(mocker: Any, record: HostRecord) -> None:
    mocker.patch.object(status, "record_here", return_value=record)


def test_a_server_reached_as_the_image_records_is_ready(tmp_path: Path, mocker: Any) -> None:
    now = host_record("bond0", BOND, (("eth0", "52:54:00:00:00:01"), ("eth1", "52:54:00:00:00:02")))
    network_here(mocker, now)
    image = tmp_path / "initramfs.img"
    image.write_bytes(b"image")
    mocker.patch.object(status, "image_file", return_value=now.as_json())
    check = status.check_network(parse(NFS_CONFIG, "/etc/kdump.conf"), image)
    assert check.ok, check.detail
    assert check.detail == (f"filer.example is reached through bond0 (active-backup: eth0, eth1), "
                            f"as {image} records")


def test_a_nic_moved_into_a_bond_since_the_build_is_a_problem(tmp_path: Path, mocker: Any) -> None:
    network_here(mocker, host_record("bond0", BOND, (("eth0", "52:54:00:00:00:01"),
                                                      ("eth1", "52:54:00:00:00:02"))))
    image = tmp_path / "initramfs.img"
    image.write_bytes(b"image")
    mocker.patch.object(status, "image_file", return_value=host_record("eth0").as_json())
    check = status.check_network(parse(NFS_CONFIG, "/etc/kdump.conf"), image)
    assert not check.ok
    assert check.detail == (f"filer.example is reached through bond0 (active-backup: eth0, eth1) now, which "
                            f"{image} does not record (it records eth0)")
    assert check.fix == f"kdump-agent mkinitrd -o {image}, then kdump-agent load"


def test_a_renewed_dhcp_address_is_no_change(tmp_path: Path, mocker: Any) -> None:
    leased = dataclasses.replace(host_record("eth0"), dhcp=True)
    network_here(mocker, dataclasses.replace(leased, addresses=("10.0.0.77/24",)))
    image = tmp_path / "initramfs.img"
    image.write_bytes(b"image")
    mocker.patch.object(status, "image_file", return_value=leased.as_json())
    assert status.check_network(parse(NFS_CONFIG, "/etc/kdump.conf"), image).ok


def test_network_checks_that_need_no_record(tmp_path: Path, mocker: Any) -> None:
    record = mocker.patch.object(status, "record_here")
    local = status.check_network(parse("ext4 /dev/vdb\n", "k"), tmp_path / "x.img")
    assert (local.ok, local.detail) == (True, "no network target")
    generic = status.check_network(parse(NFS_CONFIG + "dracut_args --no-hostonly\n", "k"), tmp_path / "x.img")
    assert generic.ok and "generic" in generic.detail
    record.assert_not_called()
    record.side_effect = KdumpError("cannot resolve filer.example")
    unreachable = status.check_network(parse(NFS_CONFIG, "k"), tmp_path / "x.img")
    assert (unreachable.ok, unreachable.detail) == (False, "cannot resolve filer.example")
