"""mkinitrd with real dracut: the image is private, replaced only by a finished build, and the
collector it runs is packed."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from harness.kernels import Kernel
from harness.scenario import BINARY, LEAN_DRACUT_ARGS


def agent(*args: str) -> subprocess.CompletedProcess[str]:
    assert BINARY.exists(), f"{BINARY} missing: run `make binary` first"
    return subprocess.run([str(BINARY), *args], capture_output=True, text=True, timeout=900, check=False)


def test_a_core_collector_not_on_this_host_is_refused_in_one_line(tmp_path: Path) -> None:
    conf = tmp_path / "kdump.conf"
    conf.write_text(f"ext4 UUID=abc\ncore_collector {tmp_path}/sbin/makedumpfile -l -d 31\n"
                    f"{LEAN_DRACUT_ARGS}\n")
    out = tmp_path / "capture.img"
    result = agent("mkinitrd", "-c", str(conf), "-o", str(out), "--kver", "0")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"kdump-agent: {conf}: core_collector {tmp_path}/sbin/makedumpfile: no such executable on this host "
        "(install it, or give its path here: `command -v makedumpfile`)")
    assert not out.exists()


@pytest.mark.qemu  # needs the guest kernel's modules (downloaded once)
def test_the_image_is_0600_holds_the_collector_and_survives_a_failed_rebuild(
        tmp_path: Path, kernel: Kernel) -> None:
    collector = tmp_path / "opt" / "makedumpfile"  # not where module-setup.sh installs it
    collector.parent.mkdir()
    shutil.copy2("/usr/bin/makedumpfile", collector)
    conf = tmp_path / "kdump.conf"
    conf.write_text(f"ext4 UUID=abc\ncore_collector {collector} -l -d 31\n{LEAN_DRACUT_ARGS}\n")
    boot = tmp_path / "boot"
    out = boot / "capture.img"
    built = agent("mkinitrd", "-c", str(conf), "-o", str(out), "--kver", kernel.kver,
                  "--kmoddir", str(kernel.kmoddir))
    assert built.returncode == 0, built.stderr[-3000:]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in boot.iterdir()) == ["capture.img", "capture.img.stamp"]
    listing = subprocess.run(["lsinitrd", str(out)], capture_output=True, text=True, check=True,
                             errors="replace").stdout
    assert f" {str(collector).lstrip('/')}\n" in listing
    before = (out.read_bytes(), (boot / "capture.img.stamp").read_text())

    failed = agent("mkinitrd", "-c", str(conf), "-o", str(out), "--kver", kernel.kver,
                   "--kmoddir", str(tmp_path / "no-modules"), "--force")
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert failed.stderr.splitlines()[-1].startswith("kdump-agent: dracut exited 1"), failed.stderr[-3000:]
    assert (out.read_bytes(), (boot / "capture.img.stamp").read_text()) == before
    assert sorted(p.name for p in boot.iterdir()) == ["capture.img", "capture.img.stamp"]
