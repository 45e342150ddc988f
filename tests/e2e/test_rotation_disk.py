"""keep_old_dumps in a real capture kernel after a real panic: the target disk starts with
old dumps and things that are not ours (harness.olddumps) and is read back afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import olddumps
from harness.disks import list_dir, make_disk
from harness.dumps import assert_good_dump, dump_in_image
from harness.kernels import Kernel
from harness.scenario import (
    STANDARD_UUID,
    panic_and_capture,
    standard_config,
    standard_initrd,
    with_config_overlay,
)

pytestmark = pytest.mark.qemu

HOST = "127.0.0.1"  # a local target's dump directories carry this address


def test_keep_old_dumps_2_leaves_the_newest_old_dump_and_everything_not_ours(
        kernel: Kernel, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
        console_logs: list[Path]) -> None:
    console_logs.append(tmp_path / "console.log")
    initrd = with_config_overlay(standard_initrd(kernel, tmp_path_factory.mktemp("standard-initrd")),
                                 standard_config(f"UUID={STANDARD_UUID}", "keep_old_dumps 2"),
                                 tmp_path / "capture.img")
    role = olddumps.fill(tmp_path / "contents/var/crash", HOST)
    disk = make_disk(tmp_path / "target.img", 512, STANDARD_UUID, "KDUMP", contents=tmp_path / "contents")
    result = panic_and_capture(kernel, initrd, [disk], tmp_path)

    left = list_dir(disk, "/var/crash")
    deleted = {role[key] for key in olddumps.deleted_by_keep(2)}
    assert deleted == {role["incomplete"], role["oldest"], role["middle"]}
    assert not deleted & set(left), sorted(left)
    kept = {name for key, name in role.items() if name not in deleted}
    assert kept <= set(left), sorted(left)
    new = set(left) - kept
    assert len(new) == 1 and next(iter(new)).startswith(f"{HOST}-"), sorted(left)
    made = next(iter(new))
    manifest = assert_good_dump(dump_in_image(disk, f"/var/crash/{made}", tmp_path / "out"), tmp_path)
    for name in deleted:  # the record and the console say what went and why
        assert any(name in note and "keep_old_dumps 2" in note for note in manifest["notes"]), name
        assert name in result.console
    prepare = next(s for s in manifest["states"] if s["state"] == "PREPARE_DIR")
    assert all(name in json.dumps(prepare) for name in deleted)
    # What is not ours is as it was: the admin's notes, the foreign directory's file.
    assert "notes.txt" in list_dir(disk, f"/var/crash/{role['foreign_named']}")
    assert "vmcore" in list_dir(disk, f"/var/crash/{role['foreign_dir']}")
    assert len(list_dir(disk, f"/var/crash/{role['other_host']}")) == 4
