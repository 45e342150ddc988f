"""The panic object: the parser on its corpus (tests/data/panics, real QEMU panics and
documented examples), its signature, and how SAVE_DMESG puts it into the record."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from kdump_agent import panic, system
from kdump_agent.capture import capture
from kdump_agent.context import Capture, Paths
from kdump_agent.errors import CommandFailed
from kdump_agent.runner import Journal
from kdump_agent.steps.dmesg import save_dmesg
from kdump_agent.targets.raw import RawDevice, RawTarget

CORPUS = Path(__file__).resolve().parents[1] / "data" / "panics"
CASES = sorted(path.stem for path in CORPUS.glob("*.txt"))
SCHEMA = {"message", "kind", "header", "function", "frames", "taint", "task", "kernel", "signature"}
# Pairs of logs of one bug, taken on two machines or two boots.
SAME_BUG = [("x86_64-null-pointer", "x86_64-null-pointer-other-machine"),
            ("x86_64-sysrq", "x86_64-sysrq-console")]


def log_of(case: str) -> str:
    return (CORPUS / f"{case}.txt").read_text(encoding="utf-8", errors="replace")


def expected(case: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CORPUS / f"{case}.json").read_text())
    return loaded


def test_the_corpus_covers_every_kind_and_both_architectures() -> None:
    kinds = {expected(case)["kind"] for case in CASES}
    assert kinds == set(panic.KINDS) - {"oops"}  # a bare "Oops:" is always explained by its header
    assert any(case.startswith("arm64-") for case in CASES)
    assert all((CORPUS / f"{case}.json").is_file() for case in CASES)


@pytest.mark.parametrize("case", CASES)
def test_corpus_log_gives_its_expected_panic(case: str) -> None:
    assert panic.parse(log_of(case)) == expected(case)


@pytest.mark.parametrize(("one", "other"), SAME_BUG)
def test_the_same_bug_elsewhere_has_the_same_signature(one: str, other: str) -> None:
    assert log_of(one) != log_of(other)
    assert panic.parse(log_of(one))["signature"] == panic.parse(log_of(other))["signature"]


def test_different_bugs_have_different_signatures() -> None:
    twins = {other for _, other in SAME_BUG}
    signatures = [expected(case)["signature"] for case in CASES if case not in twins]
    assert len(set(signatures)) == len(signatures)


def test_signature_ignores_offsets_modules_and_compiler_suffixes() -> None:
    assert (panic.signature("bug", "f.cold+0x1/0x2", ["g+0x3/0x4 [m]", "h.constprop.0+0x5/0x6"])
            == panic.signature("bug", "f+0x9/0x10", ["g.isra.0+0x1/0x2", "h+0x7/0x8"]))
    frames = ["g+0x1/0x2"]
    assert panic.signature("bug", "f+0x1/0x2", frames) != panic.signature("oops", "f+0x1/0x2", frames)
    assert len(panic.signature("other", None, [], "x")) == panic.SIGNATURE_HEX


@pytest.mark.parametrize("case", ["x86_64-null-pointer", "arm64-null-pointer", "x86_64-hung-task",
                                  "x86_64-soft-lockup", "arm64-bug-4.14"])
def test_any_cut_of_a_log_is_read_without_raising(case: str) -> None:
    lines = log_of(case).splitlines(keepends=True)
    for end in range(len(lines) + 1):
        for start in (0, end // 2):
            result = panic.parse("".join(lines[start:end]))
            assert set(result) == SCHEMA
            assert result["kind"] in panic.KINDS


def test_what_is_not_a_log_is_kind_other_with_its_last_line() -> None:
    assert panic.parse("\x00\xff binary\n\nlast line\n\n") | {"signature": ""} == {
        "message": "last line", "kind": "other", "header": None, "function": None, "frames": [],
        "taint": None, "task": None, "kernel": None, "signature": ""}
    assert panic.parse("")["message"] is None


def test_describe_is_one_line_with_kind_message_and_signature() -> None:
    described = panic.describe(expected("x86_64-sysrq"))
    assert described == f"sysrq: sysrq triggered crash [{expected('x86_64-sysrq')['signature']}]"
    assert "\n" not in panic.describe(expected("x86_64-sysrq-rhel7"))
    assert panic.describe({}) == "other: no panic message [-]"


# ---- into the record -------------------------------------------------------------------

class DumpingMachine:
    """system.run as makedumpfile: --dump-dmesg writes `log` (or fails from call `dmesg_fails_at`),
    the collector writes a vmcore (or fails once with `collector_fails_first`)."""

    def __init__(self, log: str, *, dmesg_fails_at: int = 0, collector_fails_first: bool = False) -> None:
        self.log, self.dmesg_fails_at = log, dmesg_fails_at
        self.collector_fails = collector_fails_first
        self.dmesg_calls = 0

    def run(self, argv: list[str], **kwargs: Any) -> Any:
        class Result:
            returncode = 0
            stdout = b""
            stderr = b""
        if argv[:2] == ["makedumpfile", "--dump-dmesg"]:
            self.dmesg_calls += 1
            if self.dmesg_fails_at and self.dmesg_calls >= self.dmesg_fails_at:
                raise CommandFailed(argv, 1, "read error")
            Path(argv[-1]).write_text(self.log)
        elif argv[0] == "makedumpfile":
            Path(argv[-1]).write_bytes(b"KDUMP   " + b"\0" * 4088)
            if self.collector_fails:
                self.collector_fails = False
                raise CommandFailed(argv, 1, "write error")
        return Result()


def capture_paths(tmp_path: Path, config_text: str) -> Paths:
    (tmp_path / "kdump.conf").write_text(config_text)
    (tmp_path / "vmcore-source").write_bytes(b"\0" * 4096)
    (tmp_path / "rootfs.json").write_text('{"spec": "/dev/zero", "fstype": "ext4", "directory": "/"}')
    return Paths(config=str(tmp_path / "kdump.conf"), recorded_target=str(tmp_path / "target.json"),
                 recorded_rootfs=str(tmp_path / "rootfs.json"), newroot=str(tmp_path / "sysroot"),
                 mountpoint=str(tmp_path / "kdumproot"), vmcore=str(tmp_path / "vmcore-source"),
                 hooks=str(tmp_path / "hooks"), scratch=str(tmp_path / "scratch"))


def boundary(mocker: Any, machine: DumpingMachine) -> None:
    mocker.patch.object(system, "run", side_effect=machine.run)
    mocker.patch.object(system, "mount",
                        side_effect=lambda source, target, *_: os.makedirs(target, exist_ok=True))
    mocker.patch.object(system, "umount")
    mocker.patch.object(system, "power")
    mocker.patch.object(system, "read_kernel_log", return_value="capture kernel log\n")


def test_the_record_names_the_panic_read_from_the_saved_log(tmp_path: Path, mocker: Any) -> None:
    boundary(mocker, DumpingMachine(log_of("x86_64-hung-task")))
    done = capture(capture_paths(tmp_path, "ext4 /dev/null\npath /var/crash\n"))
    assert done.dump_dir is not None
    manifest = json.loads((done.dump_dir / "kdump-agent.json").read_text())
    assert manifest["result"] == "success"
    assert manifest["panic"] == expected("x86_64-hung-task")
    save_dmesg_entry = next(e for e in manifest["states"] if e["state"] == "SAVE_DMESG")
    assert "panic: hung_task: hung_task: blocked tasks [" in save_dmesg_entry["detail"]


def test_a_log_makedumpfile_cannot_extract_leaves_panic_null_and_the_dump_goes_on(
        tmp_path: Path, mocker: Any) -> None:
    boundary(mocker, DumpingMachine("", dmesg_fails_at=1))
    done = capture(capture_paths(tmp_path, "ext4 /dev/null\n"))
    assert done.dump_dir is not None
    manifest = json.loads((done.dump_dir / "kdump-agent.json").read_text())
    assert manifest["result"] == "success"
    assert manifest["panic"] is None


def test_dump_to_rootfs_keeps_the_panic_read_by_the_first_attempt(tmp_path: Path, mocker: Any) -> None:
    # The first target fails in COLLECT after SAVE_DMESG read the panic; on the root file
    # system the log cannot be extracted again, and the record still names the panic.
    boundary(mocker, DumpingMachine(log_of("x86_64-out-of-memory"), dmesg_fails_at=2,
                                    collector_fails_first=True))
    done = capture(capture_paths(tmp_path, "ext4 /dev/null\nfailure_action dump_to_rootfs\n"))
    assert done.dump_dir is not None and "kdumproot" in str(done.dump_dir)
    manifest = json.loads((done.dump_dir / "kdump-agent.json").read_text())
    assert manifest["failure"]["state"] == "COLLECT"
    assert manifest["result"] == "success"
    assert manifest["panic"] == expected("x86_64-out-of-memory")


def test_a_raw_target_reads_the_log_in_ram_and_keeps_no_file(tmp_path: Path, mocker: Any) -> None:
    boundary(mocker, DumpingMachine(log_of("arm64-paging-request")))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    state = Capture(paths=capture_paths(tmp_path, "raw /dev/vdb\n"), journal=Journal())
    state.destination = RawDevice(RawTarget(device="/dev/vdb"))
    note = save_dmesg(state, timeout=10)
    assert state.dump.panic == expected("arm64-paging-request")
    assert list(scratch.iterdir()) == []
    assert "not kept" in note and "page_fault" in note
    assert state.dump.files == []
