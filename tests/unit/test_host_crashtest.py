"""`kdump-agent test`: refused unless armed, asks, syncs, then sysrq-c."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kdump_agent.errors import KdumpError
from kdump_agent.host import crashtest
from kdump_agent.host.hostpaths import HostPaths


def armed(tmp_path: Path, loaded: str = "1") -> HostPaths:
    (tmp_path / "kexec_crash_loaded").write_text(loaded + "\n")
    return HostPaths(crash_loaded=str(tmp_path / "kexec_crash_loaded"),
                     sysrq_trigger=str(tmp_path / "trigger"))


def test_refused_when_no_capture_kernel_is_loaded(tmp_path: Path, mocker: Any) -> None:
    trigger = mocker.patch.object(crashtest, "trigger")
    with pytest.raises(KdumpError, match="no capture kernel is loaded.*Run `kdump-agent start` first"):
        crashtest.crash_now(armed(tmp_path, loaded="0"), assume_yes=True)
    trigger.assert_not_called()


@pytest.mark.parametrize("answer", ["y", "", "YES please"])
def test_anything_but_yes_crashes_nothing(tmp_path: Path, mocker: Any, answer: str) -> None:
    trigger = mocker.patch.object(crashtest, "trigger")
    questions: list[str] = []

    def ask(question: str) -> str:
        questions.append(question)
        return answer

    crashtest.crash_now(armed(tmp_path), ask=ask)
    trigger.assert_not_called()
    assert "crashes the running kernel NOW" in questions[0] and questions[0].endswith("Type yes to go on: ")


def test_yes_syncs_then_writes_c_to_the_sysrq_trigger(tmp_path: Path, mocker: Any) -> None:
    order: list[str] = []

    def ask(question: str) -> str:
        order.append("asked")
        return "yes"

    mocker.patch.object(crashtest, "sync", side_effect=lambda: order.append("sync"))
    with pytest.raises(KdumpError, match="the kernel is still running"):  # a file, not the kernel's trigger
        crashtest.crash_now(armed(tmp_path), ask=ask)
    assert order == ["asked", "sync"]
    assert (tmp_path / "trigger").read_text() == "c"


def test_yes_option_does_not_ask(tmp_path: Path, mocker: Any) -> None:
    mocker.patch.object(crashtest, "sync")
    trigger = mocker.patch.object(crashtest, "trigger", side_effect=SystemExit("crashed"))
    with pytest.raises(SystemExit):
        crashtest.crash_now(armed(tmp_path), assume_yes=True, ask=lambda q: pytest.fail("asked"))
    trigger.assert_called_once_with(str(tmp_path / "trigger"))
