"""iSCSI under the dump target: the session mkinitrd finds in sysfs (a fake tree laid out as
the kernel does it), the login the capture kernel makes with iscsistart (a stand-in script
on the agent's PATH, so system.run really runs and logs it), the CHAP password kept out of
every log line and error, the network to the portal, and the image-mode check."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from kdump_agent import system
from kdump_agent.config import parse
from kdump_agent.errors import CommandFailed, KdumpError, MountError
from kdump_agent.host import mkinitrd as mk
from kdump_agent.host import stackpack, status
from kdump_agent.host.stack import Found, iscsi_session_of, stack_under
from kdump_agent.network.record import HostRecord
from kdump_agent.storage import iscsi
from kdump_agent.storage.base import Stack
from kdump_agent.storage.iscsi import IscsiSession
from kdump_agent.storage.kinds import stacks_as_json, stacks_from_json
from kdump_agent.targets.registry import configured

INITIATOR = "iqn.2026-01.example.host:crashy"
TARGET = "iqn.2026-01.example.san:dumps"
PASSWORD = "s3cret-chap-pw"
PASSWORD_IN = "mutual-pw-99"
CHAP = IscsiSession(initiator=INITIATOR, target=TARGET, address="192.0.2.20", port=3260, tpgt=1,
                    username="crashy", password=PASSWORD)


def iscsi_sysfs(root: Path, *, chap: bool = True, mutual: bool = False, initiatorname: bool = True) -> Path:
    """sysfs for /dev/sdb1 on LUN 1 of session 3 (host 2), its connection 3:0, and the
    iscsi_tcp and sd_mod drivers; unset parameters read "(null)", as the kernel shows them."""
    sysfs = root / "sys"
    host = sysfs / "devices" / "platform" / "host2"
    session = host / "session3"
    lun = session / "target2:0:0" / "2:0:0:1"
    disk = lun / "block" / "sdb"
    (disk / "sdb1").mkdir(parents=True)
    (disk / "sdb1" / "partition").write_text("1\n")
    modules = sysfs / "module"
    for name, device in (("sd_mod", lun), ("iscsi_tcp", host)):
        driver = sysfs / "bus" / "x" / "drivers" / name
        driver.mkdir(parents=True)
        (modules / name).mkdir(parents=True)
        (driver / "module").symlink_to(modules / name)
        (device / "driver").symlink_to(driver)
    attributes = session / "iscsi_session" / "session3"
    attributes.mkdir(parents=True)
    values = {"targetname": TARGET, "tpgt": "1", "username": "crashy" if chap else "(null)",
              "password": PASSWORD if chap else "(null)", "username_in": "san" if mutual else "(null)",
              "password_in": PASSWORD_IN if mutual else "(null)"}
    if initiatorname:
        values["initiatorname"] = INITIATOR
    for name, value in values.items():
        (attributes / name).write_text(f"{value}\n")
    connection = session / "connection3:0" / "iscsi_connection" / "connection3:0"
    connection.mkdir(parents=True)
    for name, value in (("persistent_address", "192.0.2.20"), ("persistent_port", "3260"),
                        ("address", "192.0.2.20"), ("port", "3260")):
        (connection / name).write_text(f"{value}\n")
    for cls, name, where in (("iscsi_session", "session3", attributes),
                             ("iscsi_connection", "connection3:0", connection),
                             ("block", "sdb", disk), ("block", "sdb1", disk / "sdb1")):
        (sysfs / "class" / cls).mkdir(parents=True, exist_ok=True)
        (sysfs / "class" / cls / name).symlink_to(where)
    return sysfs


# ---- mkinitrd: the session from sysfs -------------------------------------------------------

def test_a_partition_on_an_iscsi_lun_is_recorded_as_its_session_with_chap(tmp_path: Path) -> None:
    found = stack_under("/dev/sdb1", iscsi_sysfs(tmp_path))
    assert found.stack.layers == (CHAP,)
    assert found.modules() == ["sd_mod", "iscsi_tcp"]
    assert found.stack.server() == "192.0.2.20"
    assert found.stack.programs() == ["iscsistart"]


def test_mutual_chap_is_recorded_and_a_session_without_chap_has_no_account(tmp_path: Path) -> None:
    mutual = stack_under("/dev/sdb", iscsi_sysfs(tmp_path / "a", mutual=True)).stack.layers[0]
    assert isinstance(mutual, IscsiSession)
    assert (mutual.username_in, mutual.password_in) == ("san", PASSWORD_IN)
    plain = stack_under("/dev/sdb", iscsi_sysfs(tmp_path / "b", chap=False)).stack.layers[0]
    assert isinstance(plain, IscsiSession)
    assert (plain.username, plain.password, plain.chap) == (None, None, False)
    assert plain.login_argv() == ["iscsistart", "-i", INITIATOR, "-t", TARGET, "-g", "1",
                                  "-a", "192.0.2.20", "-p", "3260"]


def test_the_initiator_name_comes_from_open_iscsi_s_file_when_sysfs_has_none(tmp_path: Path) -> None:
    sysfs = iscsi_sysfs(tmp_path, initiatorname=False)
    name_file = tmp_path / "initiatorname.iscsi"
    name_file.write_text(f"## DO NOT EDIT\nInitiatorName={INITIATOR}\n")
    disk = sysfs / "class" / "block" / "sdb"
    session = iscsi_session_of(disk, sysfs, name_file)
    assert session is not None and session.initiator == INITIATOR
    with pytest.raises(KdumpError, match="sysfs gives no initiator name for it"):
        iscsi_session_of(disk, sysfs, tmp_path / "missing")


def test_a_disk_that_is_not_iscsi_has_no_session(tmp_path: Path) -> None:
    disk = tmp_path / "sys" / "devices" / "pci0000:00" / "virtio1" / "block" / "vda"
    disk.mkdir(parents=True)
    assert iscsi_session_of(disk, tmp_path / "sys") is None


def test_the_record_round_trips_and_no_description_shows_the_password() -> None:
    mutual = IscsiSession(initiator=INITIATOR, target=TARGET, address="192.0.2.20", username="crashy",
                          password=PASSWORD, username_in="san", password_in=PASSWORD_IN)
    text = stacks_as_json({"target": Stack((mutual,))})
    assert stacks_from_json(text) == {"target": Stack((mutual,))}
    assert json.loads(text)["target"][0]["password"] == PASSWORD  # the image needs it (mode 0600)
    for shown in (mutual.describe(), repr(mutual), Stack((mutual,)).describe()):
        assert PASSWORD not in shown and PASSWORD_IN not in shown
    assert mutual.describe() == f"iSCSI {TARGET} at 192.0.2.20:3260 (mutual CHAP)"
    with pytest.raises(ValueError, match="CHAP username and password are both given or both null"):
        IscsiSession(initiator=INITIATOR, target=TARGET, address="192.0.2.20", username="crashy")


def test_the_capture_s_target_is_reached_through_the_portal(tmp_path: Path) -> None:
    """NETWORK_UP brings the network up for a local target whose stack names a portal."""
    record = tmp_path / "storage.json"
    record.write_text(stacks_as_json({"target": Stack((CHAP,))}))
    destination = configured(parse("ext4 UUID=abc\n", "/etc/kdump.conf").dump_target, source="kdump.conf",
                             recorded_target="", known_hosts="", recorded_storage=str(record))
    assert destination.server == "192.0.2.20"


# ---- the capture kernel: iscsistart -----------------------------------------------------------

def stand_in_iscsistart(tmp_path: Path, mocker: Any, script: str) -> Path:
    """An iscsistart on the agent's PATH running script (sh); each call's argv in calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "iscsistart"
    program.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "calls"}\n{script}\n')
    program.chmod(0o755)
    mocker.patch.object(system, "CLEAN_PATH", f"{bin_dir}:{system.CLEAN_PATH}")
    return tmp_path / "calls"


def logged_in_session(sessions: Path) -> str:
    """What the stand-in does on success: the session, then its LUN's disk, as the kernel makes them."""
    disk = sessions / "session1" / "device" / "target0:0:0" / "0:0:0:1" / "block" / "sdc"
    return f'mkdir -p {disk}; echo {TARGET} > {sessions / "session1" / "targetname"}'


def test_the_login_is_retried_while_the_portal_does_not_answer_and_hides_the_password(
        tmp_path: Path, mocker: Any, caplog: pytest.LogCaptureFixture) -> None:
    sessions = tmp_path / "iscsi_session"
    sessions.mkdir()
    mocker.patch.object(iscsi, "SESSIONS", str(sessions))
    calls = stand_in_iscsistart(tmp_path, mocker, f"""
if [ -e {tmp_path / "answered"} ]; then {logged_in_session(sessions)}; exit 0; fi
touch {tmp_path / "answered"}
echo "iscsistart: cannot make connection to 192.0.2.20: No route to host" >&2
exit 255""")
    caplog.set_level(logging.INFO, logger="kdump-agent")
    note = CHAP.bring_up(time.monotonic() + 30)
    assert note == f"logged in to {TARGET} at 192.0.2.20:3260: /dev/sdc"
    assert calls.read_text().splitlines() == [
        f"-i {INITIATOR} -t {TARGET} -g 1 -a 192.0.2.20 -p 3260 -u crashy -w {PASSWORD}"] * 2
    assert PASSWORD not in caplog.text
    assert "-u crashy -w ***" in caplog.text


def test_a_refused_chap_login_fails_at_once_naming_portal_and_target_never_the_password(
        tmp_path: Path, mocker: Any, caplog: pytest.LogCaptureFixture) -> None:
    sessions = tmp_path / "iscsi_session"
    sessions.mkdir()
    mocker.patch.object(iscsi, "SESSIONS", str(sessions))
    calls = stand_in_iscsistart(tmp_path, mocker, """
echo "iscsistart: Login failed to authenticate with target" >&2
echo "iscsistart: initiator reported error (24 - iSCSI login failed due to authorization failure)" >&2
echo "iscsistart: Could not stop event_loop" >&2
exit 255""")
    caplog.set_level(logging.INFO, logger="kdump-agent")
    with pytest.raises(MountError) as raised:
        CHAP.bring_up(time.monotonic() + 30)
    assert str(raised.value) == (
        f"iSCSI {TARGET} at 192.0.2.20:3260 (CHAP): the target refused the CHAP login (iscsistart: "
        "initiator reported error (24 - iSCSI login failed due to authorization failure))")
    assert len(calls.read_text().splitlines()) == 1
    assert PASSWORD not in caplog.text


def test_a_portal_that_never_answers_fails_at_the_deadline_naming_portal_and_target(
        tmp_path: Path, mocker: Any) -> None:
    sessions = tmp_path / "iscsi_session"
    sessions.mkdir()
    mocker.patch.object(iscsi, "SESSIONS", str(sessions))
    stand_in_iscsistart(tmp_path, mocker, 'echo "iscsistart: connection refused" >&2; exit 255')
    with pytest.raises(MountError) as raised:
        CHAP.bring_up(time.monotonic() + 1.5)
    message = str(raised.value)
    assert message.startswith(f"iSCSI {TARGET} at 192.0.2.20:3260 (CHAP) did not come up in time: "
                              "iscsistart exited 255: iscsistart: connection refused")
    assert PASSWORD not in message


def test_a_session_already_there_is_not_logged_in_again(tmp_path: Path, mocker: Any) -> None:
    """bring_up_again or a second attempt after the disk was slow: no second login."""
    sessions = tmp_path / "iscsi_session"
    sessions.mkdir()
    mocker.patch.object(iscsi, "SESSIONS", str(sessions))
    calls = stand_in_iscsistart(tmp_path, mocker, logged_in_session(sessions))
    CHAP.bring_up(time.monotonic() + 10)
    CHAP.bring_up(time.monotonic() + 10)
    assert len(calls.read_text().splitlines()) == 1


def test_system_run_hides_secret_arguments_in_its_log_line_and_its_error(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kdump-agent")
    result = system.run(["echo", "-w", PASSWORD], timeout=10, secrets=[PASSWORD])
    assert result.stdout == f"-w {PASSWORD}\n".encode()  # the program gets it
    with pytest.raises(CommandFailed) as raised:
        system.run(["sh", "-c", "exit 3", PASSWORD], timeout=10, secrets=[PASSWORD])
    assert raised.value.argv == ["sh", "-c", "exit 3", "***"]
    assert PASSWORD not in caplog.text
    assert "+ echo -w ***" in caplog.text


# ---- mkinitrd: what the image gets ------------------------------------------------------------

def plan_for(text: str, tmp_path: Path) -> mk.BuildPlan:
    return mk.plan(parse(text, "/etc/kdump.conf"), config_file=tmp_path / "kdump.conf",
                   output=tmp_path / "out.img", binary=Path("/usr/sbin/kdump-agent"), kver="6.1.0",
                   kmoddir=None, staging=tmp_path, dracut_dir=tmp_path / "dracut")


def test_a_hostonly_target_on_iscsi_packs_the_session_iscsistart_and_the_network_to_the_portal(
        tmp_path: Path, mocker: Any) -> None:
    def record(host: str, address: str) -> HostRecord:
        return HostRecord(host=host, target=address, interface="ens3", mac="52:54:00:12:34:56", mtu=1500,
                          addresses=("192.0.2.10/24",), gateway=None, dns=(), dhcp=False, hostname="h")
    mocker.patch.object(mk, "find_program", side_effect=lambda name: f"/usr/bin/{name}")
    mocker.patch.object(stackpack, "resolve_spec", return_value="/dev/sdb1")
    mocker.patch.object(stackpack, "stack_under", return_value=Found(Stack((CHAP,)), drivers=["sd_mod"]))
    mocker.patch.object(stackpack, "host_program", side_effect=lambda name: f"/usr/sbin/{name}")
    routed = mocker.patch("kdump_agent.host.netpack.record_host_route", side_effect=record)
    mocker.patch("kdump_agent.host.netpack.nic_drivers", return_value=["e1000e"])
    built = plan_for("ext4 UUID=abc\npath /var/crash\n", tmp_path)
    routed.assert_called_once_with("192.0.2.20", "192.0.2.20")
    assert built.argv[built.argv.index("--add-drivers") + 1] == "e1000e sd_mod iscsi_tcp"
    assert "/usr/sbin/iscsistart" in built.env["KDUMP_AGENT_INSTALL"].splitlines()
    assert json.loads(Path(built.env["KDUMP_AGENT_NETWORK"]).read_text())["host"] == "192.0.2.20"
    stacks = stacks_from_json(Path(built.env["KDUMP_AGENT_STORAGE"]).read_text())
    assert stacks["target"].layers == (CHAP,)
    assert built.program_network and not built.program_ssh  # NETWORK_UP reaches the portal


@pytest.mark.parametrize(("conf", "why"), [
    ("ext4 UUID=abc\ndracut_args --no-hostonly --add iscsi\n", "dracut_args --add iscsi: "),
    (("ext4 /dev/disk/by-path/ip-192.0.2.20:3260-iscsi-iqn.2026-01.example.san:dumps-lun-1\n"
      "dracut_args --no-hostonly\n"), "it is an iSCSI LUN: "),
], ids=["--add iscsi", "by-path name"])
def test_a_generic_image_refuses_iscsi_saying_to_build_hostonly(tmp_path: Path, conf: str, why: str) -> None:
    with pytest.raises(KdumpError) as raised:
        plan_for(conf, tmp_path)
    assert why + "a --no-hostonly image cannot log in to iSCSI" in str(raised.value)
    assert str(raised.value).endswith("Build the image hostonly on the machine that has the session: "
                                      "mkinitrd records it")


# ---- status: the image holds the CHAP password ------------------------------------------------

def test_a_readable_image_blocks_when_the_target_is_on_iscsi_with_chap(tmp_path: Path) -> None:
    config = parse("ext4 UUID=abc\n", "/etc/kdump.conf")
    image = tmp_path / "initramfs.img"
    image.write_bytes(b"image")
    image.chmod(0o644)
    check = status.check_image_mode(config, image, chap=lambda _: CHAP)
    assert (check.ok, check.blocking) == (False, True)
    assert check.detail == (f"{image} is mode 0644: group and others can read it and holds the CHAP "
                            f"password of iSCSI {TARGET} at 192.0.2.20:3260 (CHAP)")
    assert status.check_image_mode(config, image, chap=lambda _: None).blocking is False
    image.chmod(0o600)
    assert status.check_image_mode(config, image, chap=lambda _: CHAP).ok


def test_status_finds_the_chap_session_under_the_target_as_mkinitrd_does(tmp_path: Path, mocker: Any) -> None:
    sysfs = iscsi_sysfs(tmp_path)
    mocker.patch.object(status, "resolve_spec", return_value="/dev/sdb1")
    mocker.patch.object(status, "stack_under", side_effect=lambda device: stack_under(device, sysfs))
    assert status.chap_session(parse("ext4 UUID=abc\n", "/etc/kdump.conf")) == CHAP
    assert status.chap_session(parse("ext4 UUID=abc\ndracut_args -N\n", "/etc/kdump.conf")) is None
    plain = iscsi_sysfs(tmp_path / "plain", chap=False)
    mocker.patch.object(status, "stack_under", side_effect=lambda device: stack_under(device, plain))
    assert status.chap_session(parse("ext4 UUID=abc\n", "/etc/kdump.conf")) is None
