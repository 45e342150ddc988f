"""COLLECT then FINALIZE on a real directory with a real collector: the sha256 the record
gives the vmcore is the saved file's own, whether it was taken as the dump was written
(`core_collector cat`) or by reading the file back (a collector that writes it itself)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from kdump_agent import config as kdump_config
from kdump_agent import system
from kdump_agent.context import Capture, Paths
from kdump_agent.errors import CommandFailed
from kdump_agent.layout import VMCORE, partial
from kdump_agent.runner import Journal
from kdump_agent.steps import collect, finalize
from kdump_agent.targets.local import FilesystemTarget, LocalDirectory

DUMP_BYTES = (3 << 20) + 12345  # more than one copy block, and not a multiple of it


def capture_with(tmp_path: Path, collector: str) -> Capture:
    """A capture at COLLECT: the dump directory made, /proc/vmcore a file of random bytes."""
    vmcore = tmp_path / "proc-vmcore"
    vmcore.write_bytes(os.urandom(DUMP_BYTES))
    directory = tmp_path / "target" / "var/crash" / "127.0.0.1-dump"
    directory.mkdir(parents=True)
    capture = Capture(paths=Paths(vmcore=str(vmcore), scratch=str(tmp_path)), journal=Journal())
    capture.config = kdump_config.parse(f"ext4 /dev/vdb\npath /var/crash\ncore_collector {collector}\n",
                                        "k.conf")
    capture.destination = LocalDirectory(FilesystemTarget("/dev/vdb", "ext4", "/var/crash"))
    capture.dump.root = str(tmp_path / "target")
    capture.dump.directory = str(directory)
    return capture


def recorded_vmcore(capture: Capture) -> tuple[Path, str | None]:
    assert capture.dump.directory is not None
    record = next(f for f in capture.dump.files if f.name == VMCORE)
    saved = Path(capture.dump.directory) / VMCORE
    assert record.size == saved.stat().st_size
    return saved, record.sha256


def test_a_standard_output_collector_is_hashed_as_written_and_never_read_back(tmp_path: Path,
                                                                             mocker: Any) -> None:
    capture = capture_with(tmp_path, "cat")
    note = collect.collect(capture, timeout=60)
    assert "hashed" in note
    read_back = mocker.spy(system, "file_sha256")
    finalize.finalize(capture, timeout=60)
    assert capture.vmcore_saved
    saved, sha256 = recorded_vmcore(capture)
    assert sha256 == hashlib.sha256(saved.read_bytes()).hexdigest()
    assert saved.read_bytes() == Path(capture.paths.vmcore).read_bytes()
    assert read_back.call_count == 0


def test_a_collector_that_writes_the_file_itself_is_read_back(tmp_path: Path, mocker: Any) -> None:
    capture = capture_with(tmp_path, "cp --sparse=always")
    collect.collect(capture, timeout=60)
    assert capture.dump.written is None
    read_back = mocker.spy(system, "file_sha256")
    finalize.finalize(capture, timeout=60)
    saved, sha256 = recorded_vmcore(capture)
    assert sha256 == hashlib.sha256(saved.read_bytes()).hexdigest()
    assert [call.args[0].name for call in read_back.call_args_list] == [VMCORE]


def test_a_standard_output_collector_that_fails_fails_the_state_with_its_error(tmp_path: Path) -> None:
    capture = capture_with(tmp_path, "cat")
    os.unlink(capture.paths.vmcore)
    with pytest.raises(CommandFailed, match="No such file"):
        collect.collect(capture, timeout=60)
    assert capture.dump.written is None
    assert capture.dump.directory is not None
    assert (Path(capture.dump.directory) / partial(VMCORE)).stat().st_size == 0
