"""The record's `panic` object for real panics in QEMU (issue 16 part 1).

Each case panics the Debian cloud kernel in its own way (sysrq-c; a task stuck on a frozen
file system with hung_task_panic; panic_on_oom with a tmpfs filled past RAM: see
harness.panics), lets the frozen agent save the dump, and reads the panic object back from
the dump's kdump-agent.json, as an admin would. The signature is compared with the one of
the corpus log of the same panic, taken on another boot (other pids, timestamps, kernel
addresses): the same bug must have the same signature.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.disks import make_disk
from harness.dumps import DUMP_FILES, Dump, assert_good_dump, dmesg_from_vmcore, find_dumps, manifest_of
from harness.kernels import Kernel
from harness.panic_initrd import SYSRQ_CRASH, Trigger
from harness.panics import HUNG_TASK, OUT_OF_MEMORY
from harness.scenario import STANDARD_UUID, panic_and_capture, standard_initrd
from kdump_agent import panic

pytestmark = pytest.mark.qemu

CORPUS = Path(__file__).resolve().parents[1] / "data" / "panics"


@pytest.fixture(scope="module")
def initrd(kernel: Kernel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return standard_initrd(kernel, tmp_path_factory.mktemp("panic-initrd"))


def one_dump(kernel: Kernel, initrd: Path, workdir: Path, trigger: Trigger = SYSRQ_CRASH) -> Dump:
    """Panic the guest with `trigger`, let the agent save the dump, return it."""
    disk = make_disk(workdir / "target.img", 256, STANDARD_UUID, "KDUMP")
    result = panic_and_capture(kernel, initrd, [disk], workdir, trigger=trigger)
    assert "KDUMP-TEST: panicking" in result.console
    dumps = find_dumps(disk, workdir / "out")
    assert len(dumps) == 1, f"expected one dump, found {[d.directory for d in dumps]}"
    return dumps[0]


def corpus_signature(case: str) -> str:
    return str(panic.parse((CORPUS / f"{case}.txt").read_text())["signature"])


def saved_panic(dump: Dump, workdir: Path, message: str) -> dict[str, Any]:
    """A complete dump of this panic (its vmcore read back shows `message`) and the record's
    panic object."""
    assert set(dump.files) == DUMP_FILES
    manifest = manifest_of(dump)
    assert manifest["result"] == "success"
    read_back = dmesg_from_vmcore(dump.local_copy / "vmcore", workdir / "panic-read-back.txt")
    assert f"Kernel panic - not syncing: {message}" in read_back
    recorded: dict[str, Any] = manifest["panic"]
    assert recorded == panic.parse((dump.local_copy / "vmcore-dmesg.txt").read_text())
    return recorded


def test_sysrq_panic_is_named_in_the_record(kernel: Kernel, initrd: Path, tmp_path: Path,
                                            console_logs: list[Path]) -> None:
    console_logs.append(tmp_path / "console.log")
    dump = one_dump(kernel, initrd, tmp_path)
    assert_good_dump(dump, tmp_path)
    recorded = saved_panic(dump, tmp_path, "sysrq triggered crash")
    assert recorded["message"] == "sysrq triggered crash"
    assert recorded["kind"] == "sysrq"
    assert recorded["function"].startswith("sysrq_handle_crash+0x")
    assert recorded["frames"][1].startswith("__handle_sysrq")
    assert recorded["task"] == {"comm": "init", "pid": 1}
    assert recorded["kernel"] == kernel.kver
    assert recorded["taint"] is None
    assert recorded["signature"] == corpus_signature("x86_64-sysrq")


def test_hung_task_panic_is_named_in_the_record(kernel: Kernel, initrd: Path, tmp_path: Path,
                                                console_logs: list[Path]) -> None:
    console_logs.append(tmp_path / "console.log")
    dump = one_dump(kernel, initrd, tmp_path, HUNG_TASK)
    recorded = saved_panic(dump, tmp_path, "hung_task: blocked tasks")
    assert recorded["kind"] == "hung_task"
    assert recorded["header"].startswith("INFO: task init:")
    assert recorded["header"].endswith("blocked for more than 1 seconds.")
    assert recorded["function"].startswith("percpu_rwsem_wait+0x")  # the frozen file system
    assert "mnt_want_write" in " ".join(recorded["frames"])
    assert recorded["task"]["comm"] == "init" and recorded["task"]["pid"] > 1  # the writer
    assert recorded["kernel"] == kernel.kver
    assert recorded["signature"] == corpus_signature("x86_64-hung-task")


def test_out_of_memory_panic_is_named_in_the_record(kernel: Kernel, initrd: Path, tmp_path: Path,
                                                    console_logs: list[Path]) -> None:
    console_logs.append(tmp_path / "console.log")
    dump = one_dump(kernel, initrd, tmp_path, OUT_OF_MEMORY)
    recorded = saved_panic(dump, tmp_path, "Out of memory: system-wide panic_on_oom is enabled")
    assert recorded["kind"] == "out_of_memory"
    assert "dd invoked oom-killer" in recorded["header"]
    assert recorded["function"].startswith("out_of_memory")
    assert recorded["task"]["comm"] == "dd"
    assert recorded["signature"] == corpus_signature("x86_64-out-of-memory")
