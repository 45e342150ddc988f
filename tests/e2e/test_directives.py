"""kdump.conf directives acted on in a real capture kernel: hooks, extra_bins, collectors, raw.

One dracut image (built by `kdump-agent mkinitrd` from a config naming hooks and
extra_bins) serves every case; cases that need another config lay it over the image
(harness.scenario.with_config_overlay), since the programs they name are packed already.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from harness.cache import cache_dir
from harness.disks import make_disk
from harness.dumps import PANIC_MARK, assert_good_dump, dmesg_from_vmcore, find_dumps
from harness.kernels import Kernel
from harness.scenario import (
    BINARY,
    CAPTURE_IMAGES,
    build_capture_initrd,
    panic_and_capture,
    standard_config,
    with_config_overlay,
)

pytestmark = pytest.mark.qemu

DISK_UUID = "8b2d0c4e-1f3a-4e5b-8c6d-7e8f9a0b1c2d"
HOOKS = {
    # The pre hook proves extra_bins: tac is not in the image unless extra_bins packs it.
    "pre.sh": '#!/bin/sh\necho "KDUMP-TEST: pre hook ran"\n'
              'printf "first\\nlast\\n" | tac | { read -r line; echo "KDUMP-TEST: tac says $line"; }\n',
    "post.sh": '#!/bin/sh\necho "KDUMP-TEST: post hook status=$1"\n'
               'test -d /sys/module/loop && echo "KDUMP-TEST: extra module loop is loaded"\n',
    "failing-pre.sh": '#!/bin/sh\necho "KDUMP-TEST: failing pre hook"\nexit 3\n',
    "emergency.sh": '#!/bin/sh\necho "KDUMP-TEST: emergency hook ran"\n',
}


@pytest.fixture(scope="module")
def hook_dir() -> Path:
    """The hook programs at a fixed host path: mkinitrd packs them at the same path."""
    directory = cache_dir(CAPTURE_IMAGES, "hooks")
    for name, text in HOOKS.items():
        (directory / name).write_text(text)
        (directory / name).chmod(0o755)
    return directory


def config(*lines: str) -> str:
    return standard_config(f"UUID={DISK_UUID}", *lines)


@pytest.fixture(scope="module")
def hooks_initrd(kernel: Kernel, hook_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = config(f"kdump_pre {hook_dir}/pre.sh", f"kdump_post {hook_dir}/post.sh",
                  f"extra_bins /usr/bin/tac {hook_dir}/failing-pre.sh {hook_dir}/emergency.sh",
                  "core_collector makedumpfile -c -d 1", "extra_modules loop", "debug_mem_level 2")
    return build_capture_initrd(kernel, text, tmp_path_factory.mktemp("hooks-initrd"),
                                packed=sorted(hook_dir.iterdir()))


def only_dump(disk: Path, workdir: Path) -> Path:
    """The disk's one dump, good by harness.dumps; where it was extracted."""
    dumps = find_dumps(disk, workdir / "out")
    assert len(dumps) == 1, [d.directory for d in dumps]
    assert_good_dump(dumps[0], workdir)
    return dumps[0].local_copy


def test_hooks_extra_bins_modules_memory_and_compressed_collector_in_one_capture(
        kernel: Kernel, hooks_initrd: Path, tmp_path: Path, console_logs: list[Path]) -> None:
    console_logs.append(tmp_path / "console.log")
    disk = make_disk(tmp_path / "target.img", 512, DISK_UUID, "KDUMP")
    result = panic_and_capture(kernel, hooks_initrd, [disk], tmp_path)
    console = result.console
    assert "KDUMP-TEST: pre hook ran" in console
    assert "KDUMP-TEST: tac says last" in console
    assert "KDUMP-TEST: post hook status=0" in console
    assert "KDUMP-TEST: extra module loop is loaded" in console
    assert "COLLECT: memory (MiB): MemFree" in console  # debug_mem_level 2, at every state
    assert "Shmem" in console
    assert console.index("pre hook ran") < console.index("makedumpfile -c -d 1") < console.index("post hook")
    dump = only_dump(disk, tmp_path)
    manifest = json.loads((dump / "kdump-agent.json").read_text())
    assert manifest["collector"]["argv"][:4] == ["makedumpfile", "-c", "-d", "1"]
    assert "KDUMP-TEST: pre hook ran" in (dump / "kexec-dmesg.log").read_text(errors="replace")


def test_failing_kdump_pre_skips_the_dump_and_runs_emergency_then_failure_action(
        kernel: Kernel, hooks_initrd: Path, hook_dir: Path, tmp_path: Path,
        console_logs: list[Path]) -> None:
    console_logs.append(tmp_path / "console.log")
    initrd = with_config_overlay(hooks_initrd, config(
        f"kdump_pre {hook_dir}/failing-pre.sh", f"kdump_post {hook_dir}/post.sh",
        f"kdump_emergency {hook_dir}/emergency.sh", "default poweroff"), tmp_path / "capture.img")
    disk = make_disk(tmp_path / "target.img", 256, DISK_UUID, "KDUMP")
    result = panic_and_capture(kernel, initrd, [disk], tmp_path)
    console = result.console
    assert "KDUMP-TEST: failing pre hook" in console
    assert "exited 3" in console
    assert "KDUMP-TEST: emergency hook ran" in console
    assert "post hook" not in console, "no dump was attempted, so kdump_post must not run"
    assert "failure action: poweroff" in console
    assert "reboot: Power down" in console
    assert find_dumps(disk, tmp_path / "out") == []


def test_cp_collector_saves_an_elf_vmcore_that_opens(
        kernel: Kernel, hooks_initrd: Path, hook_dir: Path, tmp_path: Path,
        console_logs: list[Path]) -> None:
    console_logs.append(tmp_path / "console.log")
    initrd = with_config_overlay(hooks_initrd, config("core_collector cp --sparse=always"),
                                 tmp_path / "capture.img")
    disk = make_disk(tmp_path / "target.img", 1600, DISK_UUID, "KDUMP")
    result = panic_and_capture(kernel, initrd, [disk], tmp_path, timeout_s=600)
    assert "+ cp --sparse=always /proc/vmcore" in result.console
    dump = only_dump(disk, tmp_path)
    assert (dump / "vmcore").read_bytes()[:4] == b"\x7fELF"


def test_raw_target_then_restore_raw_rebuilds_the_vmcore(
        kernel: Kernel, hooks_initrd: Path, hook_dir: Path, tmp_path: Path,
        console_logs: list[Path]) -> None:
    console_logs.append(tmp_path / "console.log")
    initrd = with_config_overlay(hooks_initrd, "raw /dev/vda\npath /var/crash\n",
                                 tmp_path / "capture.img")
    device = tmp_path / "raw.img"
    device.write_bytes(b"stale bytes of an older dump " * 4096)  # what restore-raw must ignore
    with open(device, "r+b") as image:
        image.truncate(256 << 20)
    result = panic_and_capture(kernel, initrd, [device], tmp_path)
    assert "makedumpfile" in result.console and "-F /proc/vmcore" in result.console
    assert "final action: reboot" in result.console

    # The next boot's service runs restore-raw; here the host plays that boot.
    crash = tmp_path / "crash"
    restored = subprocess.run([str(BINARY), "restore-raw", "--device", str(device), "--path", str(crash)],
                              capture_output=True, text=True, timeout=300, check=False)
    assert restored.returncode == 0, restored.stderr
    (dump_dir,) = crash.iterdir()
    assert dump_dir.name.startswith("127.0.0.1-")
    assert (dump_dir / "vmcore").read_bytes()[:8] == b"KDUMP   "
    assert PANIC_MARK in dmesg_from_vmcore(dump_dir / "vmcore", tmp_path / "dmesg.txt")
    with open(device, "rb") as image:
        assert image.read(4096) == bytes(4096), "the device's first block is cleared after restore"
    again = subprocess.run([str(BINARY), "restore-raw", "--device", str(device), "--path", str(crash)],
                           capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 0
    assert len(list(crash.iterdir())) == 1, "a restored dump is not restored twice"
