"""The harness, proven end to end without kdump-agent.

First kernel loads a capture kernel with the baseline (busybox + makedumpfile) initramfs,
crashes with sysrq-c; the capture kernel writes the dump to an ext4 virtio disk; the host reads
the disk back and finds the crash in the dumped kernel log. If this fails, every agent e2e
test would fail for the same reason, so it is the first thing to look at.
"""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import pytest

from harness.baseline import build_shell_capture_initrd
from harness.disks import extract, make_disk, read_tree
from harness.dumps import PANIC_MARK, dmesg_from_vmcore
from harness.guest import boot
from harness.kernels import Kernel
from harness.panic_initrd import build_panic_initrd

FIRST_CMDLINE = "console=ttyS0 crashkernel=256M panic=1"
CAPTURE_CMDLINE = "console=ttyS0 irqpoll nr_cpus=1 reset_devices"
BOOT_TIMEOUT_S = 300


def _show_markers(line: str) -> None:
    """Progress worth seeing with `pytest -s`: our own markers, not the whole boot log."""
    if line.startswith(("KDUMP-TEST:", "BASELINE:")) or "Kernel panic" in line:
        print(line, flush=True)


@pytest.mark.qemu
def test_baseline_capture_saves_a_readable_dump(kernel: Kernel, cache_dir: Path,
                                                tmp_path: Path, console_logs: list[Path]):
    images = cache_dir / "initrds"
    capture = build_shell_capture_initrd(kernel, images / f"baseline-capture-{kernel.kver}.img")
    panic = build_panic_initrd(kernel, capture, CAPTURE_CMDLINE,
                               images / f"baseline-panic-{kernel.kver}.img")
    disk = make_disk(tmp_path / "target.img", 256, str(uuid.uuid4()), "kdumptarget")
    log_path = tmp_path / "console.log"
    console_logs.append(log_path)

    result = boot(kernel, panic, append=FIRST_CMDLINE, disks=[disk], memory_mib=1024,
                  timeout_s=BOOT_TIMEOUT_S, log_path=log_path, progress=_show_markers)

    assert not result.timed_out, f"guest still running after {BOOT_TIMEOUT_S}s"
    assert "KDUMP-TEST: kexec load failed" not in result.console
    assert "KDUMP-TEST: panicking" in result.console
    assert "BASELINE: done rc=0" in result.console
    panicked, done = result.at("KDUMP-TEST: panicking"), result.at("BASELINE: done")
    print(f"boot {result.seconds:.1f}s; panic -> capture done {done - panicked:.1f}s")

    tree = read_tree(disk)
    for name in ("/vmcore", "/vmcore-dmesg.txt"):
        assert name in tree and stat.S_ISREG(tree[name].mode), sorted(tree)
        assert tree[name].size > 0
    vmcore = extract(disk, "/vmcore", tmp_path / "vmcore")
    assert vmcore.read_bytes()[:8] == b"KDUMP   "
    saved_dmesg = extract(disk, "/vmcore-dmesg.txt", tmp_path / "vmcore-dmesg.txt")
    assert PANIC_MARK in saved_dmesg.read_text(errors="replace")
    assert PANIC_MARK in dmesg_from_vmcore(vmcore, tmp_path / "host-dmesg.txt")
