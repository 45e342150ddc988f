"""The capture flow with real makedumpfile on a real vmcore (only mount(2) and reboot(2) are
stood in for: the e2e tests do those for real in QEMU)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kdump_agent import system
from kdump_agent.capture import capture
from kdump_agent.context import Paths

pytestmark = pytest.mark.qemu  # the vmcore comes from a real panic, made once and cached


@pytest.fixture
def no_mount_no_reboot(mocker: Any) -> list[system.Power]:
    powered: list[system.Power] = []
    mocker.patch.object(system, "mount", side_effect=lambda s, t, f, o="": os.makedirs(t, exist_ok=True))
    mocker.patch.object(system, "umount")
    mocker.patch.object(system, "power", side_effect=lambda command, sync=True: powered.append(command))
    return powered


def run_capture(tmp_path: Path, vmcore: Path, config_text: str) -> Path:
    config = tmp_path / "kdump.conf"
    config.write_text(config_text)
    done = capture(Paths(config=str(config), recorded_target=str(tmp_path / "none.json"),
                         mountpoint=str(tmp_path / "root"), vmcore=str(vmcore)))
    assert done.dump_dir is not None
    return done.dump_dir


def test_default_collector_saves_a_dump_that_makedumpfile_reads_back(
        tmp_path: Path, elf_vmcore: Path, no_mount_no_reboot: list[system.Power]) -> None:
    dump_dir = run_capture(tmp_path, elf_vmcore, "ext4 /dev/null\n")
    assert no_mount_no_reboot[0] is system.Power.REBOOT
    vmcore = dump_dir / "vmcore"
    assert vmcore.read_bytes()[:8] == b"KDUMP   "
    out = tmp_path / "dmesg.txt"
    subprocess.run(["makedumpfile", "--dump-dmesg", str(vmcore), str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    assert "sysrq: Trigger a crash" in out.read_text(errors="replace")
    assert "sysrq: Trigger a crash" in (dump_dir / "vmcore-dmesg.txt").read_text(errors="replace")
    manifest = json.loads((dump_dir / "kdump-agent.json").read_text())
    recorded = {f["name"]: f for f in manifest["files"]}
    assert recorded["vmcore"]["sha256"] == hashlib.sha256(vmcore.read_bytes()).hexdigest()
    assert recorded["vmcore"]["size"] == vmcore.stat().st_size
    assert manifest["collector"]["exit_code"] == 0


def test_flattened_flag_in_config_still_gives_a_ready_vmcore(
        tmp_path: Path, elf_vmcore: Path, no_mount_no_reboot: list[system.Power]) -> None:
    dump_dir = run_capture(tmp_path, elf_vmcore, "ext4 /dev/null\ncore_collector makedumpfile -F -c -d 31\n")
    assert (dump_dir / "vmcore").read_bytes()[:8] == b"KDUMP   "


def test_collector_error_keeps_partial_file_name_and_reports_makedumpfile_message(
        tmp_path: Path, elf_vmcore: Path, no_mount_no_reboot: list[system.Power]) -> None:
    truncated = tmp_path / "truncated-vmcore"
    with open(elf_vmcore, "rb") as source:
        truncated.write_bytes(source.read(64 << 10))
    dump_dir = run_capture(tmp_path, truncated, "ext4 /dev/null\ndefault poweroff\n")
    assert no_mount_no_reboot[0] is system.Power.POWEROFF
    assert not (dump_dir / "vmcore").exists()
    manifest = json.loads((dump_dir / "kdump-agent.json").read_text())
    assert manifest["result"] == "failure"
    assert manifest["failure"]["state"] in {"SAVE_DMESG", "COLLECT"}
    assert manifest["failure"]["reason"].startswith("makedumpfile exited 1")
