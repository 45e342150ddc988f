"""zstd for the capture initramfs only where the kernel unpacks it and the admin chose nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kdump_agent.host import compression


@pytest.fixture
def kernel_tree(tmp_path: Path) -> Path:
    """A kernel package unpacked as the tests' cache holds one: boot/ beside lib/modules/."""
    (tmp_path / "lib" / "modules" / "6.1.0").mkdir(parents=True)
    (tmp_path / "boot").mkdir()
    return tmp_path


def write_config(tree: Path, text: str) -> None:
    (tree / "boot" / "config-6.1.0").write_text(text)


def test_zstd_when_the_kernel_unpacks_it_and_zstd_is_here(kernel_tree: Path, mocker: Any) -> None:
    mocker.patch("shutil.which", return_value="/usr/bin/zstd")
    write_config(kernel_tree, "CONFIG_RD_GZIP=y\nCONFIG_RD_ZSTD=y\n")
    assert compression.compression_args([], "6.1.0", str(kernel_tree / "lib/modules/6.1.0")) == [
        "--compress", "zstd -19 -q -T0 --zstd=wlog=18"]


def test_dracuts_default_for_a_kernel_without_zstd_support_or_without_its_config(
        kernel_tree: Path, mocker: Any) -> None:
    mocker.patch("shutil.which", return_value="/usr/bin/zstd")
    kmoddir = str(kernel_tree / "lib/modules/6.1.0")
    mocker.patch.object(compression, "kernel_config", return_value=None)
    assert compression.compression_args([], "6.1.0", kmoddir) == []
    mocker.stopall()
    mocker.patch("shutil.which", return_value="/usr/bin/zstd")
    write_config(kernel_tree, "CONFIG_RD_GZIP=y\n# CONFIG_RD_ZSTD is not set\n")
    assert compression.compression_args([], "6.1.0", kmoddir) == []


def test_no_zstd_program_no_zstd(kernel_tree: Path, mocker: Any) -> None:
    mocker.patch("shutil.which", return_value=None)
    write_config(kernel_tree, "CONFIG_RD_ZSTD=y\n")
    assert compression.compression_args([], "6.1.0", str(kernel_tree / "lib/modules/6.1.0")) == []


@pytest.mark.parametrize("args", [["--gzip"], ["--compress=xz"], ["--compress", "lz4"], ["--no-compress"]])
def test_the_admins_dracut_args_choose(args: list[str], kernel_tree: Path, mocker: Any) -> None:
    mocker.patch("shutil.which", return_value="/usr/bin/zstd")
    write_config(kernel_tree, "CONFIG_RD_ZSTD=y\n")
    assert compression.compression_args(args, "6.1.0", str(kernel_tree / "lib/modules/6.1.0")) == []


def test_the_installed_kernels_config_is_read_from_boot(tmp_path: Path) -> None:
    (tmp_path / "config-6.1.0").write_text("CONFIG_RD_ZSTD=y\n")
    assert compression.kernel_config("6.1.0", None, boot_dir=str(tmp_path)) == tmp_path / "config-6.1.0"
    assert compression.kernel_config("6.2.0", None, boot_dir=str(tmp_path)) is None
