"""Findings of the outside review on the capture side, each one proven here.

- a dump path through a symbolic link on the target is followed inside the target;
- a dump directory that is not on the mounted target fails PREPARE_DIR;
- a raw target that holds anything is refused before the collector writes a byte;
- FINALIZE's deadline grows with the dump, and a checksum that runs out of time does not
  fail a dump that is already saved;
- a state that overran its deadline cannot change the capture afterwards;
- `capture` on a running system refuses before any state runs;
- the sync before the action has its own bound.
"""

from __future__ import annotations

import functools
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kdump_agent import __main__ as entry
from kdump_agent import capture as capture_flow
from kdump_agent import deadlines, system
from kdump_agent.capture import isolated
from kdump_agent.context import Capture, Paths
from kdump_agent.errors import KdumpError
from kdump_agent.machine import Outcome, State
from kdump_agent.runner import Journal, Runner
from kdump_agent.steps import dumpdir, finalize
from kdump_agent.targets import directory
from kdump_agent.targets.directory import check_on_target, resolve_within
from kdump_agent.targets.local import FilesystemTarget, LocalDirectory
from kdump_agent.targets.raw import RawDevice, RawTarget
from kdump_agent.targets.raw import check_empty as check_raw_device

# ---- the dump path, followed inside the target ------------------------------------------


def test_absolute_link_on_the_target_is_followed_inside_the_target(tmp_path: Path) -> None:
    root = tmp_path / "kdumproot"
    (root / "srv" / "crash").mkdir(parents=True)
    (root / "var").mkdir()
    (root / "var" / "crash").symlink_to("/srv/crash")  # as the target's own / sees it
    assert resolve_within(root, "/var/crash") == root / "srv" / "crash"


def test_relative_links_and_dotdot_never_leave_the_target(tmp_path: Path) -> None:
    root = tmp_path / "kdumproot"
    (root / "data" / "crash").mkdir(parents=True)
    (root / "x").mkdir()
    (root / "x" / "varcrash").symlink_to("../../../../data/crash")
    assert resolve_within(root, "/x/varcrash") == root / "data" / "crash"
    # what mkinitrd once recorded for a path through a link: "/../varcrash"
    assert resolve_within(root, "/../varcrash") == root / "varcrash"


def test_a_path_not_made_yet_is_kept_below_the_resolved_part(tmp_path: Path) -> None:
    root = tmp_path / "kdumproot"
    (root / "srv").mkdir(parents=True)
    (root / "var").symlink_to("/srv")
    assert resolve_within(root, "/var/crash/new") == root / "srv" / "crash" / "new"


def test_a_link_loop_on_the_target_is_an_error_not_a_hang(tmp_path: Path) -> None:
    root = tmp_path / "kdumproot"
    root.mkdir()
    (root / "a").symlink_to("/b")
    (root / "b").symlink_to("/a")
    with pytest.raises(KdumpError, match="symbolic links"):
        resolve_within(root, "/a/crash")


def local_capture(tmp_path: Path, path: str) -> Capture:
    root = tmp_path / "kdumproot"
    root.mkdir(exist_ok=True)
    capture = Capture(paths=Paths(), journal=Journal())
    capture.destination = LocalDirectory(FilesystemTarget(spec="/dev/vdb", fstype="ext4", directory=path))
    capture.dump.root = str(root)
    capture.dump.mounted = [str(root)]
    return capture


def test_prepare_makes_the_dump_directory_where_the_targets_link_points(tmp_path: Path) -> None:
    capture = local_capture(tmp_path, "/var/crash")
    root = tmp_path / "kdumproot"
    (root / "data" / "crash").mkdir(parents=True)
    (root / "var").mkdir()
    (root / "var" / "crash").symlink_to("/data/crash")
    dumpdir.prepare(capture)
    assert capture.dump_dir is not None
    assert capture.dump_dir.parent == root / "data" / "crash"
    assert not Path("/data/crash").exists() or capture.dump_dir.parent != Path("/data/crash")


def test_prepare_refuses_a_dump_directory_on_another_file_system(tmp_path: Path, mocker: Any) -> None:
    capture = local_capture(tmp_path, "/var/crash")
    root = str(tmp_path / "kdumproot")
    real = directory.device_of
    mocker.patch.object(directory, "device_of",  # the mount's device differs from the directory's
                        side_effect=lambda path: real(path) + (1 if path == root else 0))
    with pytest.raises(KdumpError, match="is not on the dump target mounted on"):
        dumpdir.prepare(capture)
    assert capture.dump_dir is None, "nothing may be written into a directory that is not the target's"
    assert list((tmp_path / "kdumproot" / "var" / "crash").iterdir()) == []


def test_check_on_target_lets_nfs_cross_into_exports_below_but_not_into_ram(tmp_path: Path,
                                                                            mocker: Any) -> None:
    devices = {"d": 7, "m": 8, "/": 9}
    mocker.patch.object(directory, "device_of", side_effect=lambda path: devices[path])
    check_on_target(Path("d"), "m", crosses_mounts=True)
    with pytest.raises(KdumpError):
        check_on_target(Path("d"), "m", crosses_mounts=False)
    devices["d"] = 9
    with pytest.raises(KdumpError):
        check_on_target(Path("d"), "m", crosses_mounts=True)


# ---- a raw target that holds something --------------------------------------------------

def test_raw_target_holding_ext4_is_refused_and_left_untouched(tmp_path: Path) -> None:
    device = tmp_path / "disk.img"
    with open(device, "wb") as image:
        image.truncate(8 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(device)], check=True)
    before = device.read_bytes()
    capture = Capture(paths=Paths(), journal=Journal())
    capture.destination = RawDevice(RawTarget(device=str(device)))
    with pytest.raises(KdumpError, match="holds ext4"):
        dumpdir.prepare(capture)
    assert device.read_bytes() == before


def test_raw_target_holding_a_partition_table_is_refused(tmp_path: Path) -> None:
    device = tmp_path / "disk.img"
    mbr = bytearray(512)  # an MBR with one Linux partition, as fdisk writes it
    mbr[446:462] = struct.pack("<B3sB3sII", 0, bytes(3), 0x83, bytes(3), 2048, 8192)
    mbr[510:512] = b"\x55\xaa"
    with open(device, "wb") as image:
        image.write(mbr)
        image.truncate(8 << 20)
    with pytest.raises(KdumpError, match="dos partition table"):
        check_raw_device(str(device))


def test_empty_raw_target_is_written(tmp_path: Path) -> None:
    device = tmp_path / "disk.img"
    with open(device, "wb") as image:
        image.truncate(8 << 20)
    assert "holds no file system" in check_raw_device(str(device))


# ---- FINALIZE: work that grows with the dump --------------------------------------------

def test_finalize_deadline_grows_with_the_crashed_kernels_memory(tmp_path: Path) -> None:
    vmcore = tmp_path / "vmcore"
    with open(vmcore, "wb") as sparse:
        sparse.truncate(256 << 30)  # a 256 GiB machine
    capture = Capture(paths=Paths(vmcore=str(vmcore)), journal=Journal())
    assert deadlines.deadline_for(capture, State.FINALIZE) >= 256 * deadlines.READBACK_SECONDS_PER_GIB


def test_a_checksum_that_runs_out_of_time_leaves_the_dump_saved(tmp_path: Path, mocker: Any) -> None:
    capture = local_capture(tmp_path, "/")
    dump_dir = tmp_path / "dump"
    dump_dir.mkdir()
    capture.dump.directory = str(dump_dir)
    (dump_dir / "vmcore-incomplete").write_bytes(b"KDUMP   " * 1000)
    mocker.patch.object(system, "file_sha256", side_effect=TimeoutError("reading it back took too long"))
    note = finalize.finalize(capture, timeout=30)
    assert capture.vmcore_saved
    assert (dump_dir / "vmcore").exists()
    assert [(f.name, f.size, f.sha256) for f in capture.dump.files] == [("vmcore", 8000, None)]
    assert "not hashed" in note
    assert any("vmcore not hashed" in n for n in capture.dump.notes)


def test_file_sha256_gives_up_at_its_time(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * (3 << 20))
    with pytest.raises(TimeoutError):
        system.file_sha256(big, give_up_at=time.monotonic() - 1)


# ---- a state that overran cannot change the capture ------------------------------------

def test_a_state_that_overran_cannot_change_the_capture_afterwards() -> None:
    capture = Capture(paths=Paths(), journal=Journal())
    release, finished = threading.Event(), threading.Event()

    def slow_collect(fork: Capture) -> str:
        release.wait(10)
        fork.dump.collector_returncode = 0  # what a late collector would record...
        fork.dump.vmcore_saved = True
        fork.notes.append("late")
        finished.set()
        return "too late"

    seen: dict[str, object] = {}

    def failure_action(fork: Capture) -> str:
        release.set()  # the overrun step now finishes while this state runs
        finished.wait(10)
        time.sleep(0.1)
        seen.update(saved=fork.vmcore_saved, notes=list(fork.notes))
        return "failure action"

    steps = {State.COLLECT: isolated(capture, slow_collect),
             State.FAILURE_ACTION: isolated(capture, failure_action)}
    journal = Runner(steps=steps, deadline_for=lambda state: 0.3 if state is State.COLLECT else 10).run()
    assert (journal.first_failure().state, journal.first_failure().outcome) == (  # type: ignore[union-attr]
        State.COLLECT, Outcome.TIMED_OUT)
    assert seen == {"saved": False, "notes": []}
    assert capture.vmcore_saved is False and capture.dump.collector_returncode is None
    assert capture.notes == []


def test_a_failed_state_keeps_what_it_recorded_for_the_failure_record() -> None:
    capture = Capture(paths=Paths(), journal=Journal())

    def failing_collect(fork: Capture) -> str:
        fork.dump.collector_returncode = 1
        raise KdumpError("makedumpfile exited 1")

    Runner(steps={State.COLLECT: isolated(capture, failing_collect)}, deadline_for=lambda s: 5).run()
    assert capture.dump.collector_returncode == 1


# ---- `capture` on a running system ------------------------------------------------------

def test_capture_without_proc_vmcore_refuses_before_any_state(
        mocker: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    power = mocker.patch.object(system, "power")
    run = mocker.patch.object(system, "run")
    setup = mocker.patch("kdump_agent.cli.agent_log.setup")
    mocker.patch("kdump_agent.cli.Paths", functools.partial(Paths, vmcore=str(tmp_path / "no-vmcore")))
    for extra in ([], ["--from-rootfs"]):
        mocker.patch("sys.argv", ["kdump-agent", "capture", *extra])
        assert entry.run() == 1
    error = capsys.readouterr().err + "".join(str(c) for c in setup.mock_calls)
    power.assert_not_called()
    run.assert_not_called()
    assert all(call.kwargs == {"to_kernel_log": False} for call in setup.mock_calls), \
        "the running system's kernel log is not touched either"
    assert "Traceback" not in error


def test_capture_without_proc_vmcore_says_why(tmp_path: Path) -> None:
    with pytest.raises(KdumpError, match="does not exist: this is not a capture kernel after a crash"):
        capture_flow.capture(Paths(vmcore=str(tmp_path / "no-vmcore")))


# ---- the sync before the action --------------------------------------------------------

def test_sync_that_hangs_is_given_up_after_its_bound(mocker: Any) -> None:
    hang = threading.Event()
    mocker.patch.object(system.os, "sync", side_effect=lambda: hang.wait(30))
    started = time.monotonic()
    assert system.sync(timeout=0.2) is False
    assert time.monotonic() - started < 5
    hang.set()


def test_power_syncs_within_the_bound(mocker: Any) -> None:
    hang = threading.Event()
    mocker.patch.object(system.os, "sync", side_effect=lambda: hang.wait(30))
    mocker.patch.object(system, "SYNC_SECONDS", 0.2)
    reboot = mocker.patch.object(system, "_libc")
    reboot.reboot.return_value = 0
    started = time.monotonic()
    system.power(system.Power.REBOOT)
    assert time.monotonic() - started < 5
    reboot.reboot.assert_called_once()
    hang.set()
