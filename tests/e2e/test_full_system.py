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
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from harness.debian_system import build_system
from harness.dumps import assert_good_dump, dump_in_image
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
