"""`make demo`: a real panic in QEMU, saved by kdump-agent, read back on the host.

Phases: fetch a Debian cloud kernel, build the capture initramfs with `kdump-agent
mkinitrd`, boot a guest that loads it with `kexec -p` and panics with sysrq-c, then read
the dump off the guest's disk, check it as the e2e tests do (harness.dumps) and show the
crashed kernel's last words from the vmcore. Run by `make demo`, which puts `agent/` and
`tests/` (the harness package) on PYTHONPATH.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from harness.disks import make_disk
from harness.dumps import DMESG_READ_BACK, dump_problems, find_dumps
from harness.kernels import fetch_kernel
from harness.scenario import LEAN_DRACUT_ARGS, REPO, build_capture_initrd, panic_and_capture

OUTPUT = REPO / "demo-output"
DISK_UUID = "5d1c0e4f-7a3b-4b8e-9c2d-1e0f2a3b4c5d"
CONFIG = f"""\
# The demo's /etc/kdump.conf: dump to the ext4 file system with this UUID, under /var/crash.
ext4 UUID={DISK_UUID}
path /var/crash
core_collector makedumpfile -l --message-level 7 -d 31
# A lean image: only the two drivers the guest's disk needs.
{LEAN_DRACUT_ARGS}
failure_action reboot
final_action reboot
"""
SHOWN_CONSOLE = ("KDUMP-TEST", "kdump-agent:", "Kernel panic", "reboot:")


def phase(number: int, text: str) -> None:
    print(f"\n== [{number}/4] {text}", flush=True)


def main() -> int:
    OUTPUT.mkdir(exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=OUTPUT))
    phase(1, "Debian cloud kernel (downloaded once, then cached)")
    kernel = fetch_kernel()
    print(f"   kernel {kernel.kver}: {kernel.vmlinuz}")

    phase(2, "capture initramfs: dist/kdump-agent mkinitrd")
    print("   kdump.conf:\n" + "".join(f"     {line}\n" for line in CONFIG.splitlines()), end="")
    started = time.monotonic()
    initrd = build_capture_initrd(kernel, CONFIG, run_dir)
    print(f"   {initrd} ({initrd.stat().st_size / 1e6:.1f} MB, {time.monotonic() - started:.0f} s)")

    phase(3, "boot, kexec -p, echo c > /proc/sysrq-trigger, capture")
    console = run_dir / "console.log"
    print(f"   the guest's serial console is in {console}")
    disk = make_disk(run_dir / "target.img", 256, DISK_UUID, "KDUMP")

    def show(line: str) -> None:
        if any(mark in line for mark in SHOWN_CONSOLE):
            print(f"   | {line}", flush=True)

    result = panic_and_capture(kernel, initrd, [disk], run_dir, progress=show)
    print(f"   guest ended after {result.seconds:.0f} s" + (" (timed out)" if result.timed_out else ""))

    phase(4, "the dump, read back from the guest's disk")
    dumps = find_dumps(disk, run_dir)
    if not dumps:
        print(f"   no dump on the disk: see {console}", file=sys.stderr)
        return 1
    dump = dumps[0]
    print(f"   {dump.directory} on the guest's disk, copied to {dump.local_copy}")
    for name, info in sorted(dump.files.items()):
        print(f"     {oct(info.mode & 0o777)[2:]}  {info.size:>12,}  {name}")
    problems = dump_problems(dump, run_dir)
    dmesg = run_dir / DMESG_READ_BACK
    if dmesg.exists():
        print("   last lines of the crashed kernel's log, from the vmcore (makedumpfile --dump-dmesg):")
        for line in dmesg.read_text(errors="replace").rstrip().splitlines()[-12:]:
            print(f"     {line}")
    for problem in problems:
        print(f"   not a good dump: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
