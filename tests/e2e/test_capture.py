"""A real panic in QEMU saved by the frozen agent in a dracut-built initramfs.

Each case boots a Debian cloud kernel, loads the capture kernel with kexec -p, panics with
sysrq-c and reads back what the capture kernel left on the target disk. Proof of a dump is
harness.dumps.assert_good_dump (the files and their modes, `makedumpfile --dump-dmesg` on the
saved vmcore showing the panic, a manifest that says success) and each case's own checks.
"""

from __future__ import annotations

import json
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest

from harness.disks import extract, make_disk, read_tree
from harness.dumps import assert_good_dump, find_dumps
from harness.kernels import Kernel
from harness.scenario import (
    STANDARD_UUID,
    build_capture_initrd,
    filesystem_record,
    panic_and_capture,
    standard_config,
    standard_initrd,
    with_config_overlay,
)

pytestmark = pytest.mark.qemu

DISK_UUID = STANDARD_UUID
DISK_LABEL = "KDUMP"


config = standard_config


@pytest.fixture(scope="module")
def uuid_initrd(kernel: Kernel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real mkinitrd build (target by UUID), shared by the cases that differ only in
    what the agent reads at capture time."""
    return standard_initrd(kernel, tmp_path_factory.mktemp("uuid-initrd"))


def target_disk(workdir: Path, size_mib: int = 256) -> Path:
    return make_disk(workdir / "target.img", size_mib, DISK_UUID, DISK_LABEL)


def assert_one_good_dump(disk: Path, workdir: Path, under: str = "var/crash") -> dict[str, Any]:
    """The disk holds one dump, under `under`, good by harness.dumps and by what a local
    target adds: the collector's exit status, the vmcore's size recorded, our kernel log."""
    dumps = find_dumps(disk, workdir / "out")
    assert len(dumps) == 1, f"expected one dump directory, found {[d.directory for d in dumps]}"
    dump = dumps[0]
    assert dump.directory.lstrip("/").startswith(f"{under}/127.0.0.1-")
    manifest = assert_good_dump(dump, workdir)
    assert manifest["collector"]["exit_code"] == 0
    vmcore = next(f for f in manifest["files"] if f["name"] == "vmcore")
    assert vmcore["size"] == dump.files["vmcore"].size
    assert "kdump-agent" in (dump.local_copy / "kexec-dmesg.log").read_text(errors="replace")
    return manifest


def test_dump_to_target_by_uuid_then_reboot(kernel: Kernel, uuid_initrd: Path, tmp_path: Path,
        console_logs: list[Path]) -> None:
    console_logs.append(tmp_path / "console.log")
    disk = target_disk(tmp_path)
    result = panic_and_capture(kernel, uuid_initrd, [disk], tmp_path)
    assert "KDUMP-TEST: panicking" in result.console
    assert "final action: reboot" in result.console
    assert "reboot: Restarting system" in result.console
    manifest = assert_one_good_dump(disk, tmp_path)
    assert [s["state"] for s in manifest["states"]][:2] == ["START", "LOAD_CONFIG"]
    assert manifest["action"] == "final_action reboot"


def test_dump_to_target_by_label_then_poweroff(kernel: Kernel, tmp_path: Path,
        console_logs: list[Path]) -> None:
    console_logs.append(tmp_path / "console.log")
    initrd = build_capture_initrd(kernel, config(f"LABEL={DISK_LABEL}", "final_action poweroff"),
                                  tmp_path)
    disk = target_disk(tmp_path)
    result = panic_and_capture(kernel, initrd, [disk], tmp_path)
    assert "final action: poweroff" in result.console
    assert "reboot: Power down" in result.console
    assert_one_good_dump(disk, tmp_path)


def test_dump_to_target_by_device_path(kernel: Kernel, uuid_initrd: Path, tmp_path: Path,
        console_logs: list[Path]) -> None:
    console_logs.append(tmp_path / "console.log")
    initrd = with_config_overlay(uuid_initrd, config("/dev/vda"), tmp_path / "capture.img")
    disk = target_disk(tmp_path)
    result = panic_and_capture(kernel, initrd, [disk], tmp_path)
    assert "target /dev/vda is /dev/vda" in result.console
    assert_one_good_dump(disk, tmp_path)


def test_no_target_line_dumps_where_mkinitrd_recorded(
        kernel: Kernel, uuid_initrd: Path, tmp_path: Path, console_logs: list[Path]) -> None:
    # RHEL's rule: no target line means the file system holding `path` where mkinitrd ran.
    # mkinitrd records it in the image; here the record names the guest's disk.
    console_logs.append(tmp_path / "console.log")
    initrd = with_config_overlay(uuid_initrd, "path /var/crash\n", tmp_path / "capture.img",
                                 {"target.json": filesystem_record(DISK_UUID, directory="/var/crash")})
    disk = target_disk(tmp_path)
    result = panic_and_capture(kernel, initrd, [disk], tmp_path)
    assert f"target UUID={DISK_UUID} is /dev/vda" in result.console
    assert_one_good_dump(disk, tmp_path)


def test_target_that_never_appears_runs_failure_action_at_the_deadline(
        kernel: Kernel, uuid_initrd: Path, tmp_path: Path,
        console_logs: list[Path]) -> None:
    console_logs.append(tmp_path / "console.log")
    missing = str(uuid.uuid4())
    initrd = with_config_overlay(
        uuid_initrd, config(f"UUID={missing}", "disk_timeout 5", "default poweroff"),
        tmp_path / "capture.img")
    disk = target_disk(tmp_path)
    result = panic_and_capture(kernel, initrd, [disk], tmp_path)
    assert f"target device UUID={missing} did not appear within 5 s" in result.console
    assert "failure action: poweroff" in result.console
    assert "reboot: Power down" in result.console
    assert find_dumps(disk, tmp_path / "out") == []


def test_full_target_keeps_vmcore_incomplete_and_runs_failure_action(
        kernel: Kernel, uuid_initrd: Path, tmp_path: Path,
        console_logs: list[Path]) -> None:
    console_logs.append(tmp_path / "console.log")
    initrd = with_config_overlay(
        uuid_initrd, config(f"UUID={DISK_UUID}", "default poweroff",
                            "core_collector makedumpfile -d 0"),
        tmp_path / "capture.img")
    disk = target_disk(tmp_path, size_mib=24)
    result = panic_and_capture(kernel, initrd, [disk], tmp_path)
    assert "failure action: poweroff" in result.console
    dumps = find_dumps(disk, tmp_path / "out")
    assert len(dumps) == 1
    files = dumps[0].files
    assert "vmcore" not in files
    assert "vmcore-incomplete" in files
    assert "vmcore-dmesg.txt" in files
    manifest = json.loads((dumps[0].local_copy / "kdump-agent.json").read_text())
    assert manifest["result"] == "failure"
    assert manifest["failure"]["state"] == "COLLECT"
    assert manifest["collector"]["exit_code"] == 1
    assert manifest["action"] == "failure_action poweroff"


def test_config_error_in_capture_kernel_names_the_line_and_reboots(
        kernel: Kernel, uuid_initrd: Path, tmp_path: Path,
        console_logs: list[Path]) -> None:
    console_logs.append(tmp_path / "console.log")
    broken = config(f"UUID={DISK_UUID}") + "core_colector makedumpfile -d 31\n"
    initrd = with_config_overlay(uuid_initrd, broken, tmp_path / "capture.img")
    disk = target_disk(tmp_path)
    result = panic_and_capture(kernel, initrd, [disk], tmp_path)
    assert "/etc/kdump.conf:4: unknown directive 'core_colector'" in result.console
    assert "failure action: reboot" in result.console
    assert "reboot: Restarting system" in result.console


def test_dump_path_through_a_link_on_the_target_lands_on_the_target(
        kernel: Kernel, uuid_initrd: Path, tmp_path: Path, console_logs: list[Path]) -> None:
    """`/var/crash -> /srv/crash` on the target disk, a common layout: the link is followed
    inside the target, not into the capture kernel's RAM, where the dump would be lost."""
    console_logs.append(tmp_path / "console.log")
    contents = tmp_path / "contents"
    (contents / "srv" / "crash").mkdir(parents=True)
    (contents / "var").mkdir()
    (contents / "var" / "crash").symlink_to("/srv/crash")
    disk = make_disk(tmp_path / "target.img", 256, DISK_UUID, DISK_LABEL, contents=contents)
    result = panic_and_capture(kernel, uuid_initrd, [disk], tmp_path)
    assert "final action: reboot" in result.console
    manifest = assert_one_good_dump(disk, tmp_path, under="srv/crash")
    assert str(manifest["dump_dir"]).startswith("/kdumproot/srv/crash/127.0.0.1-")
    assert stat.S_ISLNK(read_tree(disk)["/var/crash"].mode), "the link itself is left as it was"


def test_raw_target_holding_a_file_system_is_left_intact_and_the_failure_action_runs(
        kernel: Kernel, uuid_initrd: Path, tmp_path: Path, console_logs: list[Path]) -> None:
    """`raw /dev/vda` in an image built for another machine (--no-hostonly), where vda holds
    ext4: the capture kernel probes the device and refuses before the collector runs."""
    console_logs.append(tmp_path / "console.log")
    contents = tmp_path / "contents"
    (contents / "data").mkdir(parents=True)
    (contents / "data" / "precious.txt").write_text("an admin's data\n")
    disk = make_disk(tmp_path / "data.img", 64, DISK_UUID, DISK_LABEL, contents=contents)
    initrd = with_config_overlay(uuid_initrd, "raw /dev/vda\npath /var/crash\ndefault poweroff\n",
                                 tmp_path / "capture.img")
    result = panic_and_capture(kernel, initrd, [disk], tmp_path)
    console = result.console
    assert "raw target /dev/vda holds ext4" in console
    assert "state PREPARE_DIR: failed" in console
    assert "failure action: poweroff" in console and "reboot: Power down" in console
    assert "-F /proc/vmcore" not in console, "the collector never ran"
    extract(disk, "/data/precious.txt", tmp_path / "precious.txt")
    assert (tmp_path / "precious.txt").read_text() == "an admin's data\n"
