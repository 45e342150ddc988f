"""The product as an admin meets it: a Debian 12 system with our .deb installed and
`systemctl enable kdump-agent`, nothing else done by hand.

Three boots of one disk:
1. without crashkernel=: `kdump-agent status` says so and exits non-zero; `estimate`
   prints the reservation this machine needs;
2. with crashkernel= at that estimate: the service builds the capture initramfs inside the
   guest (dracut, hostonly) and loads it; the test unit waits for `status` to report ready
   and panics the machine with `kdump-agent test --yes` (sysrq-c, as the seed's section 7
   does by hand); the capture kernel saves the dump to /var/crash on
   the root file system (no target line) and reboots;
3. the system comes back and finds the dump in /var/crash.

The siblings run the same story on systems laid out as servers are (harness.debian_layouts):
root on LVM with no target line, and /var/crash on an md RAID1 that loses a disk just
before the panic. Their first boot on the layout is cached with it; the check boot copies
the LV or array out to a blank disk that the host reads.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from harness.debian_layouts import (
    LVM_ROOT,
    MD_MEMBER_MIB,
    PV_MIB,
    degraded_panic_boot,
    export_boot,
    lvm_root_system,
    md_crash_system,
)
from harness.debian_system import build_system
from harness.disks import list_dir
from harness.dumps import assert_good_dump, dump_in_image, find_dumps
from harness.guest import BootResult
from harness.scenario import REPO

pytestmark = pytest.mark.qemu


@pytest.fixture(scope="module")
def deb() -> Path:
    subprocess.run(["make", "-C", str(REPO), "deb"], check=True, timeout=900, stdout=subprocess.DEVNULL)
    (package,) = sorted((REPO / "dist").glob("kdump-agent_*_amd64.deb"))
    return package


def test_debian_system_with_the_package_dumps_a_panic_and_boots_again(
        cache_dir: Path, deb: Path, tmp_path: Path, console_logs: list[Path],
        record_property: pytest.RecordProperty) -> None:
    started = time.monotonic()
    system = build_system(cache_dir, deb, tmp_path)

    console_logs.append(tmp_path / "1-report.log")
    report = system.boot("kdumptest=report", console_logs[-1])
    assert "KDUMP-TEST: estimate rc=0" in report.console, report.tail()
    status_rc = re.search(r"KDUMP-TEST: status rc=(\d+)", report.console)
    assert status_rc and status_rc.group(1) != "0", report.tail()
    assert "crashkernel" in report.console
    estimate = re.findall(r"crashkernel=(\d+)M", report.console)
    assert estimate, report.tail()
    reservation = int(estimate[-1])

    console_logs.append(tmp_path / "2-panic.log")
    panic = system.boot(f"crashkernel={reservation}M kdumptest=panic", console_logs[-1])
    assert "KDUMP-TEST: service active" in panic.console, panic.tail()
    assert "KDUMP-TEST: status rc=0" in panic.console, panic.tail()
    assert "KDUMP-TEST: panicking" in panic.console
    assert "dump saved in" in panic.console, panic.tail()
    assert "final action: reboot" in panic.console

    console_logs.append(tmp_path / "3-check.log")
    check = system.boot("kdumptest=check", console_logs[-1])
    assert "KDUMP-TEST: check done" in check.console, check.tail()
    dumps = re.findall(r"KDUMP-TEST: dump (/var/crash/127\.0\.0\.1-[\d:-]+)/", check.console)
    assert len(dumps) == 1, check.tail()
    assert_good_dump(dump_in_image(system.image, dumps[0], tmp_path / "dump"), tmp_path)
    record_property("full_system_case_seconds", round(time.monotonic() - started))
    record_property("crashkernel_mib", reservation)


def _reservation(report: str) -> int:
    """The crashkernel= size `kdump-agent estimate` printed in a report boot, in MiB."""
    assert "KDUMP-TEST: estimate rc=0" in report, report[-4000:]
    estimate = re.findall(r"crashkernel=(\d+)M", report)
    assert estimate, report[-4000:]
    return int(estimate[-1])


def _assert_dumped(panic: BootResult) -> None:
    """The service armed kdump at boot, the machine panicked and the capture kernel saved
    the dump and rebooted."""
    assert "KDUMP-TEST: service active" in panic.console, panic.tail()
    assert "KDUMP-TEST: status rc=0" in panic.console, panic.tail()
    assert "KDUMP-TEST: panicking" in panic.console, panic.tail()
    assert "dump saved in" in panic.console, panic.tail()
    assert "final action: reboot" in panic.console, panic.tail()


def _listed_dumps(check: BootResult) -> list[str]:
    """The dump directories the check boot found in /var/crash."""
    assert "KDUMP-TEST: check done" in check.console, check.tail()
    assert "KDUMP-TEST: export rc=0" in check.console, check.tail()
    return re.findall(r"KDUMP-TEST: dump (/var/crash/127\.0\.0\.1-[\d:-]+)/", check.console)


def test_debian_system_with_root_on_lvm_dumps_to_var_crash_on_the_root_lv(
        cache_dir: Path, deb: Path, tmp_path: Path, console_logs: list[Path],
        record_property: pytest.RecordProperty) -> None:
    started = time.monotonic()
    layout = lvm_root_system(cache_dir, deb, tmp_path)
    console_logs.append(tmp_path / "1-report.log")
    console_logs[-1].write_text(layout.report)
    assert f"KDUMP-TEST: root {LVM_ROOT} crash {LVM_ROOT}" in layout.report, layout.report[-4000:]
    reservation = _reservation(layout.report)

    console_logs.append(tmp_path / "2-panic.log")
    _assert_dumped(layout.system.boot(f"crashkernel={reservation}M kdumptest=panic", console_logs[-1]))

    console_logs.append(tmp_path / "3-check.log")
    check, export = export_boot(layout.system, "/", PV_MIB, tmp_path, console_logs[-1])
    dumps = _listed_dumps(check)
    assert len(dumps) == 1, check.tail()
    assert list(list_dir(export, "/var/crash")) == [dumps[0].rpartition("/")[2]]
    assert_good_dump(dump_in_image(export, dumps[0], tmp_path / "dump"), tmp_path)
    record_property("lvm_root_case_seconds", round(time.monotonic() - started))


def test_debian_system_with_var_crash_on_md_raid1_dumps_to_the_degraded_array(
        cache_dir: Path, deb: Path, tmp_path: Path, console_logs: list[Path],
        record_property: pytest.RecordProperty) -> None:
    started = time.monotonic()
    layout = md_crash_system(cache_dir, deb, tmp_path)
    console_logs.append(tmp_path / "1-report.log")
    console_logs[-1].write_text(layout.report)
    assert re.search(r"KDUMP-TEST: root /dev/vda crash /dev/md\d+", layout.report), layout.report[-4000:]
    reservation = _reservation(layout.report)

    console_logs.append(tmp_path / "2-panic.log")
    panic = degraded_panic_boot(layout.system, f"crashkernel={reservation}M", console_logs[-1])
    assert "KDUMP-TEST: degraded" in panic.console, panic.tail()
    _assert_dumped(panic)

    # The pulled disk stays out: the admin has not replaced it yet.
    root, survivor, _pulled = layout.system.disks
    console_logs.append(tmp_path / "3-check.log")
    check, export = export_boot(layout.system, "/var/crash", MD_MEMBER_MIB, tmp_path,
                                console_logs[-1], disks=(root, survivor))
    listed = _listed_dumps(check)
    dumps = find_dumps(export, tmp_path / "dumps")
    assert [f"/var/crash{dump.directory}" for dump in dumps] == listed, check.tail()
    assert len(dumps) == 1, check.tail()
    assert_good_dump(dumps[0], tmp_path)
    record_property("md_raid1_case_seconds", round(time.monotonic() - started))
