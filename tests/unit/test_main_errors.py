"""What an admin sees when a command fails on a file: one line naming it, never a traceback."""

from __future__ import annotations

import errno
import os
import platform
from pathlib import Path
from typing import Any

import pytest

from kdump_agent import __main__ as entry
from kdump_agent.host import hostpaths
from kdump_agent.host import mkinitrd as mk
from kdump_agent.host.hostpaths import HostPaths


@pytest.fixture
def conf(tmp_path: Path, mocker: Any) -> Path:
    """A valid kdump.conf for an image built for another machine (no host probes)."""
    mocker.patch.object(mk, "find_program", return_value="/usr/bin/makedumpfile")
    path = tmp_path / "kdump.conf"
    path.write_text("ext4 UUID=abc\ndracut_args --no-hostonly\n")
    return path


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The error: standard error's last line (mkinitrd's progress comes before it)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.endswith("\n"), err
    return err.splitlines()[-1]


def test_output_under_a_regular_file_is_one_line(tmp_path: Path, conf: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory\n")
    for output in (blocker / "out.img", blocker / "sub" / "out.img"):
        code = entry.run(["mkinitrd", "-c", str(conf), "-o", str(output), "--binary", "/bin/true"])
        assert (code, one_error_line(capsys)) == (
            1, f"kdump-agent: cannot write {output}: {blocker} is not a directory")


def test_a_directory_root_alone_may_create_is_one_line(tmp_path: Path, conf: Path, mocker: Any,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """mkinitrd as non-root: /var/lib/kdump-agent cannot be created (tests run as root, so
    the refusal is made at the system call)."""
    state = tmp_path / "var-lib-kdump-agent"
    real_mkdir = os.mkdir

    def mkdir(path: Any, mode: int = 0o777, **kwargs: Any) -> None:
        if Path(path) == state:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        real_mkdir(path, mode, **kwargs)

    mocker.patch("os.mkdir", side_effect=mkdir)
    code = entry.run(["mkinitrd", "-c", str(conf), "-o", str(state / "out.img"), "--binary", "/bin/true"])
    assert (code, one_error_line(capsys)) == (1, f"kdump-agent: {state}: Permission denied")


def test_an_os_error_names_its_files_and_says_to_run_as_root(mocker: Any) -> None:
    mocker.patch("os.geteuid", return_value=1000)
    denied = PermissionError(errno.EACCES, "Permission denied", "/var/lib/kdump-agent")
    assert entry.os_error_line(denied) == "/var/lib/kdump-agent: Permission denied (run as root)"
    assert entry.os_error_line(OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b")) == (
        "/a -> /b: Invalid cross-device link")


def test_estimate_on_a_corrupt_image_says_so_in_one_line(tmp_path: Path, mocker: Any,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    image = boot / f"initramfs-{platform.release()}kdump.img"
    image.write_bytes(b"070701" + b"garbage!" * 20)
    here = HostPaths(boot_dir=str(boot), state_dir=str(tmp_path / "state"), crash_size=str(tmp_path / "none"),
                     grub_defaults=str(tmp_path / "grub"))
    mocker.patch.object(hostpaths, "THIS_MACHINE", here)
    assert entry.run(["estimate", "-c", str(tmp_path / "kdump.conf")]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert f"cannot measure {image} ({image}: broken cpio header at byte 0" in out
