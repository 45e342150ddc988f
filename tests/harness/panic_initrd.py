"""The first kernel's initramfs: load the capture kernel with `kexec -p`, then crash.

This is how every QEMU case reaches a capture kernel: the same vmlinuz as the capture
kernel (as distributions do), a capture initramfs under test, and a crash: sysrq-c unless
the case asks for another `Trigger` (harness.panics has the others).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from .cpio import Cpio
from .kernels import Kernel, add_modules

KEXEC = Path("/usr/sbin/kexec")


@dataclass(frozen=True)
class Trigger:
    """How the first kernel dies once the capture kernel is loaded: busybox shell lines, and
    the kernel modules they need (insmod'ed first)."""

    name: str
    script: str
    modules: tuple[str, ...] = ()


SYSRQ_CRASH = Trigger("sysrq-c", "echo c > /proc/sysrq-trigger")

_PANIC_INIT = """\
#!/bin/sh
# First kernel: load the capture kernel, then crash on purpose.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "KDUMP-TEST: first kernel up, crashkernel reserved $(cat /sys/kernel/kexec_crash_size) bytes"
CMDLINE={cmdline}
if ! kexec -p /boot/vmlinuz --initrd=/boot/capture.img --append="$CMDLINE"; then
    echo "KDUMP-TEST: kexec_load failed, trying kexec_file_load (kexec -s)"
    kexec -s -p /boot/vmlinuz --initrd=/boot/capture.img --append="$CMDLINE"
fi
if [ "$(cat /sys/kernel/kexec_crash_loaded)" != 1 ]; then
    echo "KDUMP-TEST: kexec load failed"
    poweroff -f
    sleep 60
fi
{fill}{insmod}echo "KDUMP-TEST: panicking"
{trigger}
echo "KDUMP-TEST: still alive after {name}"
poweroff -f
"""


# Most of the first kernel's free memory filled with random data before the crash, so that a
# dump has real work: a tmpfs (shmem pages, which makedumpfile's -d 2 and up leave out and -d 1
# copies), FILL_RESERVE_MIB short of MemAvailable. 64 MiB from /dev/urandom, copied over and
# over: no page is zero and none compresses, and copying is many times faster under TCG than
# /dev/urandom itself.
FILL_RESERVE_MIB = 64
_FILL = """\
mkdir -p /fill
avail=$(awk '/^MemAvailable:/ {{print int($2 / 1024)}}' /proc/meminfo)
mount -t tmpfs -o size=$((avail - {reserve}))m fill /fill
dd if=/dev/urandom of=/fill/seed bs=1M count=64 2>/dev/null
n=0
while cp /fill/seed /fill/$n 2>/dev/null; do n=$((n + 1)); done
echo "KDUMP-TEST: filled $(df -m /fill | awk 'NR == 2 {{print $3}}') MiB of $avail MiB available"
"""


def build_panic_initrd(kernel: Kernel, capture_initrd: Path, capture_cmdline: str,
                       out: Path, trigger: Trigger = SYSRQ_CRASH, fill: bool = False) -> Path:
    """The first kernel's initramfs: busybox, kexec and its libraries, the capture kernel (the
    same vmlinuz, as distros do) and `capture_initrd`; its /init loads them with `kexec -p`
    and crashes the kernel with `trigger` (sysrq-c by default). With `fill`, most of the free
    memory is filled with random data first (FILL_RESERVE_MIB): what `make bench` dumps at
    larger guest sizes.

    If nothing could be loaded it prints `KDUMP-TEST: kexec load failed` and powers off, so a
    broken setup costs seconds, not the boot timeout. Cached by content at `out`.
    """
    archive = Cpio()
    archive.add_base_layout()
    archive.add_busybox()
    archive.add_binary(KEXEC, "sbin/kexec")
    archive.add_file("boot/vmlinuz", kernel.vmlinuz)
    archive.add_file("boot/capture.img", capture_initrd)
    modules = add_modules(archive, kernel, trigger.modules)
    init = _PANIC_INIT.format(cmdline=shlex.quote(capture_cmdline), name=trigger.name,
                              fill=_FILL.format(reserve=FILL_RESERVE_MIB) if fill else "",
                              insmod="".join(f"insmod {m}\n" for m in modules),
                              trigger=trigger.script)
    archive.add_file("init", init.encode(), 0o755)
    return archive.write_cached(out)

