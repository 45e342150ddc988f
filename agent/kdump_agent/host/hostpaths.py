"""Where the host-side commands read the kernel's state, and the small readers for it.

Every /sys, /proc and /etc file that load, status, estimate and test look at is named in
`HostPaths`, so the unit tests point them at temporary files instead of this machine's.
The readers say "absent" (None) rather than raise: a kernel built without crash-dump
support has no /sys/kernel/kexec_crash_size, and that is a finding to report, not a crash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..system import read_text


@dataclass(frozen=True)
class HostPaths:
    """The files the host side reads or writes; tests replace them."""

    cmdline: str = "/proc/cmdline"
    crash_size: str = "/sys/kernel/kexec_crash_size"
    crash_loaded: str = "/sys/kernel/kexec_crash_loaded"
    nmi_watchdog: str = "/proc/sys/kernel/nmi_watchdog"
    hardlockup_panic: str = "/proc/sys/kernel/hardlockup_panic"
    sysrq: str = "/proc/sys/kernel/sysrq"
    sysrq_trigger: str = "/proc/sysrq-trigger"
    iomem: str = "/proc/iomem"
    meminfo: str = "/proc/meminfo"
    stat: str = "/proc/stat"  # btime: when this boot started
    boot_id: str = "/proc/sys/kernel/random/boot_id"  # which boot this is
    mountinfo: str = "/proc/self/mountinfo"  # where a local dump target is mounted
    defaults: str = "/etc/default/kdump-agent"  # KDUMP_COMMANDLINE_APPEND / _REMOVE
    grub_defaults: str = "/etc/default/grub"
    boot_dir: str = "/boot"
    state_dir: str = "/var/lib/kdump-agent"  # the image's place when /boot is read-only


# The known_hosts files mkinitrd, dumps and propagate read an SSH server's host key from,
# here where the parser's help can name them without loading those commands' modules.
DEFAULT_KNOWN_HOSTS = (os.path.expanduser("~/.ssh/known_hosts"), "/etc/ssh/ssh_known_hosts")
USER_KNOWN_HOSTS = "/root/.ssh/known_hosts"  # OpenSSH's for root, and the first file mkinitrd reads

# This machine's files, for the commands; tests pass HostPaths of their own.
THIS_MACHINE = HostPaths()


def read_int(path: str) -> int | None:
    """The integer a sysfs/procfs file holds, or None when it is absent or not a number."""
    text = read_text(path)
    if text is None:
        return None
    try:
        return int(text.split()[0]) if text.split() else None
    except ValueError:
        return None


def crash_size(paths: HostPaths) -> int | None:
    """Bytes reserved with crashkernel=; None when the kernel has no crash kexec support."""
    return read_int(paths.crash_size)


def crash_loaded(paths: HostPaths) -> bool:
    """Whether a capture kernel is loaded (kexec -p) and would run at the next panic."""
    return read_int(paths.crash_loaded) == 1


def boot_time(paths: HostPaths) -> float | None:
    """When this boot started (epoch seconds, /proc/stat's btime); None if unreadable."""
    for line in (read_text(paths.stat) or "").splitlines():
        name, _, value = line.partition(" ")
        if name == "btime":
            try:
                return float(value)
            except ValueError:
                return None
    return None


def running_cmdline(paths: HostPaths) -> str:
    """The running kernel's command line, which the capture kernel's is built from."""
    text = read_text(paths.cmdline)
    if text is None:
        raise OSError(f"cannot read {paths.cmdline}")
    return text.strip()


def system_ram(paths: HostPaths) -> int:
    """Bytes of RAM a dump covers: the "System RAM" ranges of /proc/iomem.

    Only root sees the addresses there (others read zeros); MemTotal, which leaves out
    what the kernel reserved, is the fallback.
    """
    total = 0
    for line in (read_text(paths.iomem) or "").splitlines():
        span, _, name = line.partition(" : ")
        if name.strip() == "System RAM" and not line.startswith(" "):
            start, _, end = span.strip().partition("-")
            try:
                total += int(end, 16) - int(start, 16) + 1
            except ValueError:
                continue
    if total > 1 << 20:  # not the zeros an unprivileged reader sees
        return total
    for line in (read_text(paths.meminfo) or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"cannot tell how much RAM this machine has ({paths.iomem}, {paths.meminfo})")


def writable_dir(path: str) -> bool:
    """Whether files can be created in path (a read-only /boot is not)."""
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)
