"""Rotation in a whole capture with real makedumpfile on the real vmcore (made once by a real
panic and cached), the target a directory pre-filled with old dumps (harness.olddumps).

Only mount(2), umount and the power-off are stood in for, as in test_real_vmcore.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from harness import olddumps
from kdump_agent import system
from kdump_agent.capture import capture
from kdump_agent.context import Capture, Paths
from kdump_agent.layout import DMESG, VMCORE
from kdump_agent.runner import Journal
from kdump_agent.steps import rotate

pytestmark = pytest.mark.qemu  # the vmcore comes from a real panic, made once and cached

COLLECTOR = "core_collector makedumpfile -l --message-level 7 -d 31"


@pytest.fixture
def no_mount_no_reboot(mocker: Any) -> None:
    mocker.patch.object(system, "mount", side_effect=lambda s, t, f, o="": os.makedirs(t, exist_ok=True))
    mocker.patch.object(system, "umount")
    mocker.patch.object(system, "power")


def run_capture(tmp_path: Path, vmcore: Path, *lines: str) -> tuple[Capture, dict[str, str], Path, object]:
    """The capture on a target pre-filled with old dumps; what it held before, too."""
    crash = tmp_path / "root/var/crash"
    role = olddumps.fill(crash, "127.0.0.1")
    before = olddumps.snapshot(crash)
    config = tmp_path / "kdump.conf"
    config.write_text("\n".join(["ext4 /dev/null", COLLECTOR, *lines, ""]))
    done = capture(Paths(config=str(config), recorded_target=str(tmp_path / "none.json"),
                         mountpoint=str(tmp_path / "root"), vmcore=str(vmcore), scratch=str(tmp_path)))
    return done, role, crash, before


def test_keep_old_dumps_and_the_dry_run_estimate_in_a_real_capture(
        tmp_path: Path, elf_vmcore: Path, no_mount_no_reboot: None) -> None:
    done, role, crash, _ = run_capture(tmp_path, elf_vmcore, "keep_old_dumps 2")
    assert done.dump_dir is not None
    manifest = json.loads((done.dump_dir / "kdump-agent.json").read_text())
    assert manifest["result"] == "success"
    left = sorted(p.name for p in crash.iterdir())
    assert left == sorted([done.dump_dir.name, role["newest"], role["other_host"], role["foreign_named"],
                           role["foreign_dir"], role["plain_file"], role["link"]])
    prepare = next(s for s in manifest["states"] if s["state"] == "PREPARE_DIR")
    for key in ("incomplete", "oldest", "middle"):
        assert role[key] in json.dumps(prepare)
        assert any(role[key] in note and "keep_old_dumps 2" in note for note in manifest["notes"])
    # makedumpfile's dry run predicts the size of the vmcore the same collector wrote.
    probe = Capture(paths=Paths(vmcore=str(elf_vmcore), scratch=str(tmp_path)), journal=Journal())
    size, source = rotate.estimate(probe, done.config.core_collector, [], "127.0.0.1", 120)  # type: ignore[union-attr]
    assert source == "makedumpfile --dry-run at dump level 31"
    written = (done.dump_dir / VMCORE).stat().st_size
    assert written <= size <= written + rotate.DRY_RUN_SLACK


def test_free_disk_size_out_of_reach_saves_only_the_log_and_fails_the_dump(
        tmp_path: Path, elf_vmcore: Path, no_mount_no_reboot: None) -> None:
    done, role, crash, before = run_capture(tmp_path, elf_vmcore, "free_disk_size 999999999")
    assert done.dump_dir is not None
    assert sorted(os.listdir(done.dump_dir)) == sorted([DMESG, "kdump-agent.json", "kexec-dmesg.log"])
    manifest = json.loads((done.dump_dir / "kdump-agent.json").read_text())
    assert manifest["result"] == "failure"
    assert manifest["failure"]["state"] == "COLLECT"
    assert "free_disk_size 999999999 MiB" in manifest["failure"]["reason"]
    assert "no vmcore was written" in manifest["failure"]["reason"]
    assert any("makedumpfile --dry-run at dump level 31" in note for note in manifest["notes"])
    assert all((crash / role[key] / "kdump-agent.json").exists() for key in olddumps.OURS)
    new = done.dump_dir.name
    assert before == {k: v for k, v in olddumps.snapshot(crash).items() if not k.startswith(new)}
