"""The dump the agent saves opens in `crash`, as an admin opens it after a panic.

harness.dumps.assert_good_dump reads the log back with makedumpfile; here crash, with the
kernel's debug vmlinux (harness.crashtool), must find in the same vmcore the release, the
sysrq panic, sysrq_handle_crash on the crashing task's stack and the log ending at the panic.
One boot per format the agent writes to a disk: kdump-compressed (the default collector) and
ELF (`makedumpfile -E`), both at -d 31. Network targets write the same kdump-compressed file
(SSH's flattened stream is rebuilt into it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.crashtool import assert_crash_opens, fetch_vmlinux
from harness.disks import make_disk
from harness.dumps import assert_good_dump, find_dumps
from harness.kernels import Kernel
from harness.scenario import (
    STANDARD_UUID,
    panic_and_capture,
    standard_config,
    standard_initrd,
    with_config_overlay,
)

pytestmark = pytest.mark.qemu

# core_collector lines, by the vmcore format they write; None keeps the default collector.
FORMATS = {
    "kdump-compressed": None,
    "elf": "core_collector makedumpfile -E --message-level 7 -d 31",
}
ELF_MAGIC = b"\x7fELF"
KDUMP_MAGIC = b"KDUMP   "


@pytest.fixture(scope="module")
def vmlinux(kernel: Kernel, cache_dir: Path) -> Path:
    """The guest kernel's debug vmlinux, fetched into the cache once."""
    return fetch_vmlinux(kernel, cache_dir)


@pytest.fixture(scope="module")
def default_initrd(kernel: Kernel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return standard_initrd(kernel, tmp_path_factory.mktemp("crash-initrd"))


@pytest.mark.parametrize("dump_format", sorted(FORMATS))
def test_crash_opens_the_saved_dump(kernel: Kernel, vmlinux: Path, default_initrd: Path,
        dump_format: str, tmp_path: Path, console_logs: list[Path]) -> None:
    console_logs.append(tmp_path / "console.log")
    collector = FORMATS[dump_format]
    initrd = default_initrd if collector is None else with_config_overlay(
        default_initrd, standard_config(f"UUID={STANDARD_UUID}", collector),
        tmp_path / "capture.img")
    disk = make_disk(tmp_path / "target.img", 256, STANDARD_UUID, "KDUMP")
    panic_and_capture(kernel, initrd, [disk], tmp_path)
    dumps = find_dumps(disk, tmp_path / "out")
    assert len(dumps) == 1, f"expected one dump directory, found {[d.directory for d in dumps]}"
    assert_good_dump(dumps[0], tmp_path)
    vmcore = dumps[0].local_copy / "vmcore"
    with open(vmcore, "rb") as file:
        magic = file.read(8)
    expected = KDUMP_MAGIC if collector is None else ELF_MAGIC
    assert magic.startswith(expected), f"{vmcore} starts {magic!r}, not {expected!r} ({dump_format})"
    session = assert_crash_opens(vmlinux, vmcore, kernel)
    # crash marks a dump filtered by -d 31 "[PARTIAL DUMP]" after the path.
    assert (session.field("DUMPFILE") or "").startswith(str(vmcore))
