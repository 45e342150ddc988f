"""Rotation on a real directory pre-filled with old dumps (harness.olddumps), checked afterwards.

PREPARE_DIR and COLLECT's space check run as the capture runs them, on a LocalDirectory (what
local and NFS targets use). Only the free space the file system reports and makedumpfile's
dry run are stood in for (system.run, the destination's free_bytes): the deletions are real.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness import olddumps
from kdump_agent import config as kdump_config
from kdump_agent.context import Capture, Paths
from kdump_agent.errors import KdumpError
from kdump_agent.layout import VMCORE
from kdump_agent.rotation import MIB
from kdump_agent.runner import Journal
from kdump_agent.steps import dumpdir, rotate
from kdump_agent.targets.local import FilesystemTarget, LocalDirectory

HOST = "127.0.0.1"
LEVEL_1 = "core_collector makedumpfile -l -d 1"


def local_capture(tmp_path: Path, *lines: str) -> Capture:
    root = tmp_path / "target"
    (root / "var/crash").mkdir(parents=True)
    vmcore = tmp_path / "vmcore"
    with open(vmcore, "wb") as sparse:
        sparse.truncate(1 << 30)  # a 1 GiB machine: the upper bound of its dump
    capture = Capture(paths=Paths(vmcore=str(vmcore), scratch=str(tmp_path)), journal=Journal())
    capture.config = kdump_config.parse("\n".join(["ext4 /dev/vdb", "path /var/crash", *lines, ""]), "k.conf")
    capture.destination = LocalDirectory(FilesystemTarget("/dev/vdb", "ext4", "/var/crash"))
    capture.dump.root = str(root)
    return capture


def crash_dir(capture: Capture) -> Path:
    assert capture.dump.root is not None
    return Path(capture.dump.root) / "var/crash"


def after_keep(tmp_path: Path, keep: int) -> tuple[Capture, dict[str, str], dict[str, object], str]:
    capture = local_capture(tmp_path, f"keep_old_dumps {keep}")
    role = olddumps.fill(crash_dir(capture), HOST)
    before = olddumps.snapshot(crash_dir(capture))
    note = dumpdir.prepare(capture)
    return capture, role, before, note


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_keep_old_dumps_deletes_this_hosts_oldest_and_incomplete_and_nothing_else(tmp_path: Path,
                                                                                 keep: int) -> None:
    capture, role, before, note = after_keep(tmp_path, keep)
    parent = crash_dir(capture)
    deleted = {role[key] for key in olddumps.deleted_by_keep(keep)}
    assert deleted and all(not (parent / name).exists() for name in deleted)
    # Everything else is as it was, byte for byte: the other host's dump, the directory named
    # like a dump holding the admin's notes, the foreign directory, the file, the link.
    after = olddumps.snapshot(parent)
    new = Path(capture.dump.directory or "").name
    assert {k: v for k, v in after.items() if not k.startswith(new)} == {
        k: v for k, v in before.items() if k.split("/")[0] not in deleted}
    assert (parent / new).is_dir() and new.startswith(f"{HOST}-")
    for name in deleted:  # the journal and the manifest say what went and why
        assert name in note
        assert any(name in n and f"keep_old_dumps {keep}" in n for n in capture.dump.notes)


def test_keep_old_dumps_0_keeps_everything(tmp_path: Path) -> None:
    capture = local_capture(tmp_path)
    olddumps.fill(crash_dir(capture), HOST)
    before = olddumps.snapshot(crash_dir(capture))
    dumpdir.prepare(capture)
    new = Path(capture.dump.directory or "").name
    assert {k: v for k, v in olddumps.snapshot(crash_dir(capture)).items() if not k.startswith(new)} == before


def test_another_hosts_dumps_are_kept_on_a_shared_nfs_path(tmp_path: Path) -> None:
    capture = local_capture(tmp_path, "keep_old_dumps 1")
    capture.dump.local_address = olddumps.OTHER_HOST  # NETWORK_UP: our address towards the server
    role = olddumps.fill(crash_dir(capture), HOST)
    dumpdir.prepare(capture)
    parent = crash_dir(capture)
    assert not (parent / role["other_host"]).exists()  # the one dump of "this" host, 10.0.0.7
    assert all((parent / role[key]).exists() for key in olddumps.OURS)


def test_a_listing_that_fails_never_fails_the_dump(tmp_path: Path, mocker: Any) -> None:
    capture = local_capture(tmp_path, "keep_old_dumps 1")
    olddumps.fill(crash_dir(capture), HOST)
    before = olddumps.snapshot(crash_dir(capture))
    mocker.patch.object(capture.destination, "old_dumps", side_effect=OSError(5, "Input/output error"))
    note = dumpdir.prepare(capture)
    assert capture.dump.directory and Path(capture.dump.directory).is_dir()
    assert "nothing to rotate" in note
    assert any("cannot list the old dumps: [Errno 5] Input/output error" in n for n in capture.dump.notes)
    new = Path(capture.dump.directory).name
    assert {k: v for k, v in olddumps.snapshot(crash_dir(capture)).items() if not k.startswith(new)} == before


def dry_run(mocker: Any, sizes: dict[str, int]) -> Any:
    """system.run standing in for makedumpfile --dry-run: `Write bytes` by dump level."""
    def run(argv: list[str], **_: object) -> subprocess.CompletedProcess[bytes]:
        assert "--dry-run" in argv and "-F" not in argv
        level = argv[argv.index("-d") + 1]
        return subprocess.CompletedProcess(argv, 0, f"Write bytes     : {sizes[level]}\n".encode(), b"")
    return mocker.patch("kdump_agent.system.run", side_effect=run)


def prepared(tmp_path: Path, mocker: Any, free_mib: int, *lines: str) -> tuple[Capture, dict[str, str]]:
    capture = local_capture(tmp_path, *lines)
    role = olddumps.fill(crash_dir(capture), HOST)
    dumpdir.prepare(capture)
    assert capture.destination is not None
    mocker.patch.object(capture.destination, "free_bytes", return_value=free_mib * MIB)
    return capture, role


def test_free_disk_size_deletes_old_dumps_until_the_dump_fits(tmp_path: Path, mocker: Any) -> None:
    capture, role = prepared(tmp_path, mocker, 100, "free_disk_size 40", LEVEL_1)
    # 100 MiB free, 40 to keep, the dump 60 MiB and 30 kB with the dry run's slack: the
    # incomplete dump (64 KiB) goes.
    dry_run(mocker, {"1": 60 * MIB + 30_000 - rotate.DRY_RUN_SLACK})
    core = rotate.collector_for_space(capture)
    assert core == ("makedumpfile", "-l", "-d", "1")
    parent = crash_dir(capture)
    assert not (parent / role["incomplete"]).exists()
    assert all((parent / role[key]).exists() for key in ("oldest", "middle", "newest", "other_host"))
    notes = "\n".join(capture.dump.notes)
    assert "makedumpfile --dry-run at dump level 1" in notes and "free_disk_size 40 MiB" in notes


def test_free_disk_size_falls_back_to_dump_level_31(tmp_path: Path, mocker: Any) -> None:
    capture, role = prepared(tmp_path, mocker, 100, "free_disk_size 40", LEVEL_1)
    dry_run(mocker, {"1": 500 * MIB, "31": 59 * MIB})
    assert rotate.collector_for_space(capture) == ("makedumpfile", "-l", "-d", "31")
    assert all((crash_dir(capture) / role[key]).exists() for key in olddumps.OURS)  # it fit as it was
    assert any("dump level 31 instead of 1" in n for n in capture.dump.notes)


def test_free_disk_size_that_cannot_be_kept_saves_no_vmcore_and_deletes_nothing(tmp_path: Path,
                                                                                mocker: Any) -> None:
    capture, _ = prepared(tmp_path, mocker, 10, "free_disk_size 4000")
    before = olddumps.snapshot(crash_dir(capture))
    dry_run(mocker, {"31": 59 * MIB})
    with pytest.raises(KdumpError, match="free_disk_size 4000 MiB: .* no vmcore was written"):
        rotate.collector_for_space(capture)
    assert olddumps.snapshot(crash_dir(capture)) == before


def test_free_disk_size_estimates_from_earlier_dumps_without_a_dry_run(tmp_path: Path, mocker: Any) -> None:
    capture, role = prepared(tmp_path, mocker, 1, "free_disk_size 1")
    mocker.patch("kdump_agent.system.run", side_effect=rotate.CommandFailed(["makedumpfile"], 1, "no"))
    rotate.collector_for_space(capture)
    # The old dumps' vmcores (made at -d 31, their records say) are 64 KiB: one goes for 1 MiB.
    assert not (crash_dir(capture) / role["incomplete"]).exists()
    assert (crash_dir(capture) / role["oldest"]).exists()
    assert any("the largest earlier dump of 127.0.0.1 at dump level 31" in n for n in capture.dump.notes)


def test_plenty_of_room_needs_no_estimate(tmp_path: Path, mocker: Any) -> None:
    capture, _ = prepared(tmp_path, mocker, 4096, "free_disk_size 100")
    run = mocker.patch("kdump_agent.system.run")
    assert rotate.collector_for_space(capture) == capture.config.core_collector  # type: ignore[union-attr]
    run.assert_not_called()  # 1 GiB of memory cannot make a dump larger than the 3.9 GiB spare
    assert (crash_dir(capture) / olddumps.names(HOST)["oldest"] / VMCORE).exists()
