"""Dumps to an iSCSI LUN from a real panic: the capture kernel brings its NIC up (DHCP on
QEMU's user network), logs in with iscsistart to a real tgtd on this host's loopback (the
guest reaches it as 10.0.2.2:PORT), with CHAP, and saves the dump on the ext4 file system
of the LUN, named by UUID=. The LUN's backing image is read back here after tgtd stopped.

The image is built on this host, which has no iSCSI session to record, so the session the
guest logs in to is laid over it as storage.json, as mkinitrd writes it on a host that has
one (the discovery itself is proven on a fake sysfs in tests/unit/test_storage_iscsi.py).
A generic image refuses iSCSI, so this one is a plain-disk build that packs iscsistart and
the iSCSI and NIC drivers through extra_bins and extra_modules, and gets the agent's
executable with the network stack that mkinitrd packs for a target behind a portal.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.disks import make_disk, read_tree
from harness.dumps import assert_good_dump, dump_in_image
from harness.iscsi_target import INITIATOR_IQN, TARGET_IQN, Chap, IscsiTarget, iscsi_target
from harness.kernels import Kernel
from harness.scenario import (
    DHCP_CMDLINE,
    GUEST_ADDRESS,
    HOST_FROM_GUEST,
    LEAN_DRACUT_ARGS,
    build_capture_initrd,
    network_program,
    panic_and_capture,
    with_config_overlay,
)

pytestmark = pytest.mark.qemu

LUN_UUID = "6b1f3c2e-5a4d-4e8f-9c0b-1d2e3f4a5b6c"
CHAP_ACCOUNT = Chap(user="crashy", password="chap-Secret-4711")
WRONG_PASSWORD = "not-the-Secret-0815"
NETWORK_DUMP_DIR = re.compile(rf"^/?var/crash/{re.escape(GUEST_ADDRESS)}-\d{{4}}-\d\d-\d\d-\d\d:\d\d:\d\d$")


def iscsi_config() -> str:
    return "\n".join([f"ext4 UUID={LUN_UUID}", "path /var/crash", "extra_bins /usr/sbin/iscsistart",
                      "extra_modules virtio_net iscsi_tcp sd_mod", LEAN_DRACUT_ARGS,
                      "disk_timeout 60", "failure_action poweroff", ""])


def session_record(target: IscsiTarget, password: str) -> str:
    """storage.json as mkinitrd writes it for a target on this session (storage/iscsi.py)."""
    layer = {"kind": "iscsi", "initiator": INITIATOR_IQN, "target": TARGET_IQN, "address": HOST_FROM_GUEST,
             "port": target.port, "tpgt": 1, "username": CHAP_ACCOUNT.user, "password": password,
             "username_in": None, "password_in": None}
    return json.dumps({"target": [layer]})


@pytest.fixture(scope="module")
def iscsi_initrd(kernel: Kernel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_capture_initrd(kernel, iscsi_config(), tmp_path_factory.mktemp("iscsi-initrd"))


@pytest.fixture(scope="module")
def iscsi_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return network_program(tmp_path_factory.mktemp("iscsi-program"))


def dump_directories(lun: Path) -> list[str]:
    """The dump directories under /var/crash on the LUN's file system: a dump over the
    network is named by the guest's address."""
    return sorted(path for path in read_tree(lun) if NETWORK_DUMP_DIR.match(path))


def test_dump_lands_on_the_iscsi_lun_through_a_chap_login(
        kernel: Kernel, iscsi_initrd: Path, iscsi_program: Path, tmp_path: Path,
        console_logs: list[Path]) -> None:
    console_logs.append(tmp_path / "console.log")
    lun = make_disk(tmp_path / "lun.img", 256, LUN_UUID, "ISCSIDUMP")
    (tmp_path / "tgtd").mkdir()
    with iscsi_target(lun, tmp_path / "tgtd", chap=CHAP_ACCOUNT) as target:
        initrd = with_config_overlay(iscsi_initrd, iscsi_config(), tmp_path / "session.img",
                                     records={"storage.json": session_record(target, CHAP_ACCOUNT.password)},
                                     program=iscsi_program)
        result = panic_and_capture(kernel, initrd, [], tmp_path, capture_cmdline=DHCP_CMDLINE, network=True)
    assert not result.timed_out, result.tail()
    assert "final action: reboot" in result.console, result.tail()
    directories = dump_directories(lun)
    assert len(directories) == 1, f"dump directories on the LUN: {directories}"
    dump = dump_in_image(lun, directories[0], tmp_path / "out")
    manifest = assert_good_dump(dump, tmp_path)
    mounted = next(s for s in manifest["states"] if s["state"] == "MOUNT_TARGET")
    assert f"iSCSI {TARGET_IQN} at {HOST_FROM_GUEST}:{target.port} (CHAP) up in" in mounted["detail"]
    assert any(s["state"] == "NETWORK_UP" and "DHCP" in s["detail"] for s in manifest["states"])
    kernel_log = (dump.local_copy / "kexec-dmesg.log").read_text(errors="replace")
    assert f"logged in to {TARGET_IQN} at {HOST_FROM_GUEST}:{target.port}: /dev/sd" in kernel_log
    for seen in (result.console, kernel_log):
        assert CHAP_ACCOUNT.password not in seen
    assert f"-u {CHAP_ACCOUNT.user} -w ***" in result.console  # the login, as logged


def test_a_wrong_chap_password_fails_the_login_and_runs_the_failure_action(
        kernel: Kernel, iscsi_initrd: Path, iscsi_program: Path, tmp_path: Path,
        console_logs: list[Path]) -> None:
    console_logs.append(tmp_path / "console.log")
    lun = make_disk(tmp_path / "lun.img", 64, LUN_UUID, "ISCSIDUMP")
    before = lun.read_bytes()
    (tmp_path / "tgtd").mkdir()
    with iscsi_target(lun, tmp_path / "tgtd", chap=CHAP_ACCOUNT) as target:
        initrd = with_config_overlay(iscsi_initrd, iscsi_config(), tmp_path / "wrong-password.img",
                                     records={"storage.json": session_record(target, WRONG_PASSWORD)},
                                     program=iscsi_program)
        result = panic_and_capture(kernel, initrd, [], tmp_path, capture_cmdline=DHCP_CMDLINE, network=True,
                                   timeout_s=300)
    assert not result.timed_out, result.tail()
    assert "MOUNT_TARGET failed" in result.console, result.tail()
    assert (f"iSCSI {TARGET_IQN} at {HOST_FROM_GUEST}:{target.port} (CHAP): the target refused the "
            "CHAP login") in result.console
    assert "failure action: poweroff" in result.console
    assert WRONG_PASSWORD not in result.console and CHAP_ACCOUNT.password not in result.console
    assert lun.read_bytes() == before  # not logged in: nothing written
