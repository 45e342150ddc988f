"""A real vmcore for the integration tests, made once by a real panic and cached."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from harness.baseline import build_shell_capture_initrd
from harness.disks import extract, make_disk
from harness.guest import boot
from harness.kernels import Kernel
from harness.panic_initrd import build_panic_initrd
from harness.scenario import CAPTURE_CMDLINE, FIRST_KERNEL_CMDLINE


@pytest.fixture(scope="session")
def elf_vmcore(kernel: Kernel, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ELF vmcore of a 1 GiB guest that panicked with sysrq-c (makedumpfile -E -d 31).

    ELF is what /proc/vmcore itself is, so the agent's collector reads it exactly as in the
    capture kernel. Made with the baseline capture image (no agent involved).
    """
    cached = cache_dir / f"vmcore-elf-{kernel.kver}"
    if cached.exists():
        return cached
    work = tmp_path_factory.mktemp("elf-vmcore")
    images = cache_dir / "initrds"
    capture = build_shell_capture_initrd(kernel, images / f"elf-capture-{kernel.kver}.img",
                                         collector="makedumpfile -E -d 31")
    panic = build_panic_initrd(kernel, capture, CAPTURE_CMDLINE,
                               images / f"elf-panic-{kernel.kver}.img")
    disk = make_disk(work / "target.img", 512, str(uuid.uuid4()), "elfcore")
    result = boot(kernel, panic, append=FIRST_KERNEL_CMDLINE, disks=[disk], timeout_s=300,
                  log_path=work / "console.log")
    assert "BASELINE: done rc=0" in result.console, result.tail()
    partial = cached.with_suffix(".part")
    extract(disk, "/vmcore", partial)
    partial.rename(cached)
    return cached
