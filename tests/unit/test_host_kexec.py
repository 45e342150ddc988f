"""load / unload: the kexec commands, the fallback, and what is refused before kexec runs."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kdump_agent.errors import CommandFailed, KdumpError
from kdump_agent.host import kexec
from kdump_agent.host.hostpaths import HostPaths

RESERVED_256M = str(256 << 20)


def machine(tmp_path: Path, *, reserved: str | None = RESERVED_256M, loaded: str = "0",
            cmdline: str = "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet console=ttyS0 crashkernel=256M",
            defaults: str | None = None) -> HostPaths:
    """A machine's files under tmp_path, with a kernel and an initramfs in its /boot."""
    paths = HostPaths(cmdline=str(tmp_path / "cmdline"), crash_size=str(tmp_path / "kexec_crash_size"),
                      crash_loaded=str(tmp_path / "kexec_crash_loaded"),
                      defaults=str(tmp_path / "kdump-agent"), boot_dir=str(tmp_path / "boot"))
    Path(paths.cmdline).write_text(cmdline + "\n")
    if reserved is not None:
        Path(paths.crash_size).write_text(reserved + "\n")
    Path(paths.crash_loaded).write_text(loaded + "\n")
    if defaults is not None:
        Path(paths.defaults).write_text(defaults)
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / "vmlinuz-6.1.0").write_bytes(b"kernel")
    (tmp_path / "boot" / "initramfs-6.1.0kdump.img").write_bytes(b"image")
    return paths


def plan_for(paths: HostPaths) -> kexec.LoadPlan:
    return kexec.plan_load(paths, kernel=kexec.default_kernel(paths, "6.1.0"),
                           initrd=str(Path(paths.boot_dir) / "initramfs-6.1.0kdump.img"))


def loads(paths: HostPaths) -> Callable[..., subprocess.CompletedProcess[bytes]]:
    """A system.run stand-in under which kexec succeeds and the kernel says loaded."""
    def run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[bytes]:
        Path(paths.crash_loaded).write_text("1\n")
        return subprocess.CompletedProcess(argv, 0, b"", b"")
    return run


def test_dry_run_command_is_kexec_file_load_with_the_capture_command_line(tmp_path: Path) -> None:
    paths = machine(tmp_path, defaults='KDUMP_COMMANDLINE_APPEND="rd.memdebug=2"\n')
    argv = plan_for(paths).argv()
    assert argv[:3] == ["kexec", "-s", "-p"]
    cmdline = argv[3].removeprefix("--command-line=")
    assert cmdline.startswith("ro console=ttyS0 irqpoll nr_cpus=1 reset_devices")
    assert cmdline.endswith("rd.memdebug=2")
    assert argv[4:] == [f"--initrd={paths.boot_dir}/initramfs-6.1.0kdump.img",
                        f"{paths.boot_dir}/vmlinuz-6.1.0"]


def test_load_uses_kexec_file_load_and_checks_the_kernel_says_loaded(tmp_path: Path, mocker: Any) -> None:
    paths = machine(tmp_path)
    run = mocker.patch("kdump_agent.system.run", side_effect=loads(paths))
    assert kexec.load(plan_for(paths), paths) == "kexec_file_load"
    assert run.call_count == 1 and run.call_args.args[0][:3] == ["kexec", "-s", "-p"]


def test_load_falls_back_to_classic_kexec_load_when_file_load_is_refused(tmp_path: Path, mocker: Any) -> None:
    paths = machine(tmp_path)
    succeed = loads(paths)

    def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        if "-s" in argv:
            raise CommandFailed(argv, 255, "kexec_file_load failed: Key was rejected by service")
        return succeed(argv, **kwargs)

    calls = mocker.patch("kdump_agent.system.run", side_effect=run)
    assert kexec.load(plan_for(paths), paths) == "kexec_load"
    assert [call.args[0][:2] for call in calls.call_args_list] == [["kexec", "-s"], ["kexec", "-p"]]


def test_load_reports_both_failures(tmp_path: Path, mocker: Any) -> None:
    paths = machine(tmp_path)
    mocker.patch("kdump_agent.system.run", side_effect=CommandFailed(["kexec"], 255, "Invalid argument"))
    with pytest.raises(KdumpError, match="kexec_file_load: Invalid argument; kexec_load: Invalid argument"):
        kexec.load(plan_for(paths), paths)


def test_load_is_refused_without_a_reservation_and_says_how_to_make_one(tmp_path: Path, mocker: Any) -> None:
    paths = machine(tmp_path, reserved="0")
    run = mocker.patch("kdump_agent.system.run")
    with pytest.raises(KdumpError, match=r"kexec_crash_size is 0\): add crashkernel=<size>"):
        kexec.load(plan_for(paths), paths)
    run.assert_not_called()


def test_load_names_every_missing_piece_before_running_kexec(tmp_path: Path, mocker: Any) -> None:
    paths = machine(tmp_path, reserved=None)
    (tmp_path / "boot" / "initramfs-6.1.0kdump.img").unlink()
    problems = kexec.load_problems(plan_for(paths), paths)
    assert len(problems) == 2
    assert "does not exist: it was built without CONFIG_CRASH_DUMP" in problems[0]
    assert "initramfs-6.1.0kdump.img does not exist (build it with `kdump-agent mkinitrd`)" in problems[1]


def test_kexec_that_claims_success_without_loading_is_an_error(tmp_path: Path, mocker: Any) -> None:
    paths = machine(tmp_path)
    mocker.patch("kdump_agent.system.run")
    with pytest.raises(KdumpError, match="does not say 1"):
        kexec.load(plan_for(paths), paths)


def test_unload_tries_file_load_syscall_second_and_is_quiet_when_nothing_is_loaded(tmp_path: Path,
                                                                                     mocker: Any) -> None:
    paths = machine(tmp_path, loaded="1")

    def run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[bytes]:
        if "-s" not in argv:
            raise CommandFailed(argv, 255, "Operation not permitted")  # lockdown: kexec_load refused
        Path(paths.crash_loaded).write_text("0\n")
        return subprocess.CompletedProcess(argv, 0, b"", b"")

    calls = mocker.patch("kdump_agent.system.run", side_effect=run)
    assert kexec.unload(paths) is True
    assert [call.args[0] for call in calls.call_args_list] == [["kexec", "-p", "-u"],
                                                               ["kexec", "-s", "-p", "-u"]]
    calls.reset_mock()
    assert kexec.unload(paths) is False
    calls.assert_not_called()
