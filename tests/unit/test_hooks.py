"""kdump_pre, kdump_post, kdump_emergency and their .d directories, with real scripts."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from kdump_agent.config import Config
from kdump_agent.errors import KdumpError
from kdump_agent.steps import hooks


def script(path: Path, body: str, mode: int = 0o755) -> str:
    """A tiny POSIX sh program at path (parents made), returned as a string for Config."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(mode)
    return str(path)


def recorder(path: Path, trail: Path, name: str, status: int = 0) -> str:
    """A script that appends `name $1` to trail, then exits with status."""
    return script(path, f'echo "{name} $1" >> {trail}\nexit {status}')


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "etc-kdump"


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    return tmp_path / "trail"


@pytest.fixture(autouse=True)
def debug_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="kdump-agent")


def lines(trail: Path) -> list[str]:
    return trail.read_text().splitlines() if trail.exists() else []


def test_nothing_configured_and_no_directories_is_nothing_to_do(root: Path) -> None:
    config = Config("kdump.conf")
    assert hooks.run_pre(config, 5, str(root)) == "nothing to do"
    assert hooks.run_post(config, 0, 5, str(root)) == "nothing to do"
    assert hooks.run_emergency(config, 5, str(root)) == "nothing to do"


def test_pre_runs_then_pre_d_in_name_order(tmp_path: Path, root: Path, trail: Path) -> None:
    pre = recorder(tmp_path / "pre.sh", trail, "pre")
    recorder(root / "pre.d" / "20-b", trail, "20-b")
    recorder(root / "pre.d" / "10-a", trail, "10-a")
    note = hooks.run_pre(Config("kdump.conf", kdump_pre=pre), 10, str(root))
    assert lines(trail) == ["pre ", "10-a ", "20-b "]
    assert note == f"kdump_pre {pre} ok; pre.d: 2 ran, 0 failed"


def test_failing_pre_raises_with_its_exit_status_and_skips_pre_d(
        tmp_path: Path, root: Path, trail: Path) -> None:
    pre = recorder(tmp_path / "pre.sh", trail, "pre", status=3)
    recorder(root / "pre.d" / "10-a", trail, "10-a")
    with pytest.raises(KdumpError, match=rf"^kdump_pre {pre} exited 3"):
        hooks.run_pre(Config("kdump.conf", kdump_pre=pre), 10, str(root))
    assert lines(trail) == ["pre "]


def test_pre_that_cannot_be_executed_raises(tmp_path: Path, root: Path) -> None:
    missing = str(tmp_path / "not-there")
    with pytest.raises(KdumpError, match=rf"^kdump_pre {missing} exited 127"):
        hooks.run_pre(Config("kdump.conf", kdump_pre=missing), 10, str(root))


def test_pre_d_failure_is_only_a_warning(
        root: Path, trail: Path, caplog: pytest.LogCaptureFixture) -> None:
    failing = recorder(root / "pre.d" / "10-fails", trail, "10-fails", status=1)
    recorder(root / "pre.d" / "20-ok", trail, "20-ok")
    note = hooks.run_pre(Config("kdump.conf"), 10, str(root))
    assert note == "pre.d: 2 ran, 1 failed"
    assert lines(trail) == ["10-fails ", "20-ok "]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"pre.d: {failing} exited 1; ignored"]


def test_post_gets_the_dump_status_as_first_argument(tmp_path: Path, root: Path, trail: Path) -> None:
    post = recorder(tmp_path / "post.sh", trail, "post")
    recorder(root / "post.d" / "10-a", trail, "10-a")
    hooks.run_post(Config("kdump.conf", kdump_post=post), 5, 10, str(root))
    assert lines(trail) == ["10-a 5", "post 5"]


def test_post_d_runs_before_kdump_post_as_on_rhel(tmp_path: Path, root: Path, trail: Path) -> None:
    post = recorder(tmp_path / "post.sh", trail, "post")
    recorder(root / "post.d" / "b", trail, "b")
    recorder(root / "post.d" / "a", trail, "a")
    note = hooks.run_post(Config("kdump.conf", kdump_post=post), 0, 10, str(root))
    assert lines(trail) == ["a 0", "b 0", "post 0"]
    assert note == f"post.d: 2 ran, 0 failed; kdump_post {post} ok"


def test_post_failures_are_only_warnings(
        tmp_path: Path, root: Path, trail: Path, caplog: pytest.LogCaptureFixture) -> None:
    post = recorder(tmp_path / "post.sh", trail, "post", status=2)
    recorder(root / "post.d" / "10-fails", trail, "10-fails", status=1)
    note = hooks.run_post(Config("kdump.conf", kdump_post=post), 1, 10, str(root))
    assert note == f"post.d: 1 ran, 1 failed; kdump_post {post} failed"
    assert f"kdump_post {post} exited 2; going on" in caplog.messages


def test_emergency_runs_configured_then_directory(tmp_path: Path, root: Path, trail: Path) -> None:
    emergency = recorder(tmp_path / "emergency.sh", trail, "emergency", status=4)
    recorder(root / "emergency.d" / "10-a", trail, "10-a")
    note = hooks.run_emergency(Config("kdump.conf", kdump_emergency=emergency), 10, str(root))
    assert lines(trail) == ["emergency ", "10-a "]
    assert note == f"kdump_emergency {emergency} failed; emergency.d: 1 ran, 0 failed"


def test_only_executable_regular_files_count(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    runs = script(root / "pre.d" / "30-runs", "true")
    script(root / "pre.d" / "10-not-executable", "true", mode=0o644)
    (root / "pre.d" / "20-directory").mkdir(mode=0o755)
    os.symlink(runs, root / "pre.d" / "40-link")
    os.symlink(root / "nowhere", root / "pre.d" / "50-dangling")
    assert hooks.hook_programs("pre", Config("kdump.conf"), str(root)) == [
        runs, str(root / "pre.d" / "40-link")]
    skipped = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert [message.split(":")[0] for message in skipped] == [
        str(root / "pre.d" / name) for name in ("10-not-executable", "20-directory", "50-dangling")]


def test_hook_programs_lists_them_in_the_order_they_run(tmp_path: Path, root: Path) -> None:
    config = Config("kdump.conf", kdump_pre="/sbin/pre", kdump_post="/sbin/post",
                    kdump_emergency="/sbin/emergency")
    pre_d = script(root / "pre.d" / "a", "true")
    post_d = script(root / "post.d" / "a", "true")
    emergency_d = script(root / "emergency.d" / "a", "true")
    assert hooks.hook_programs("pre", config, str(root)) == ["/sbin/pre", pre_d]
    assert hooks.hook_programs("post", config, str(root)) == [post_d, "/sbin/post"]
    assert hooks.hook_programs("emergency", config, str(root)) == ["/sbin/emergency", emergency_d]


def test_unknown_hook_kind_is_refused(root: Path) -> None:
    with pytest.raises(ValueError, match="unknown hook kind 'prepost'"):
        hooks.hook_programs("prepost", Config("kdump.conf"), str(root))


def test_pre_overrunning_its_time_is_killed_and_raises(tmp_path: Path, root: Path) -> None:
    pid_file = tmp_path / "pid"
    pre = script(tmp_path / "pre.sh", f"echo $$ > {pid_file}\nexec sleep 60")
    started = time.monotonic()
    with pytest.raises(KdumpError, match=rf"^kdump_pre {pre} timed out"):
        hooks.run_pre(Config("kdump.conf", kdump_pre=pre), 0.5, str(root))
    assert time.monotonic() - started < 10
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_hooks_share_the_time_they_are_given(
        root: Path, trail: Path, caplog: pytest.LogCaptureFixture) -> None:
    script(root / "post.d" / "10-sleeps", "exec sleep 60")
    late = recorder(root / "post.d" / "20-late", trail, "20-late")
    note = hooks.run_post(Config("kdump.conf"), 0, 0.5, str(root))
    assert note == "post.d: 2 ran, 2 failed"
    assert lines(trail) == []
    assert f"post.d: {late} not started: the time for these hooks is used up; ignored" in caplog.messages


def test_hook_output_goes_to_the_log_line_by_line(
        tmp_path: Path, root: Path, caplog: pytest.LogCaptureFixture) -> None:
    pre = script(tmp_path / "pre.sh", "echo 'quiescing storage'\necho 'array 2 degraded' >&2\necho done")
    hooks.run_pre(Config("kdump.conf", kdump_pre=pre), 10, str(root))
    assert {"  quiescing storage", "  array 2 degraded", "  done"} <= set(caplog.messages)
    assert all(r.name == "kdump-agent" for r in caplog.records)
