"""Loading the capture kernel with kexec -p, and unloading it.

kexec_file_load (`kexec -s`) is tried first: the kernel reads and checks the image itself,
which is the only way that works under Secure Boot lockdown, and RHEL's x86-64 default.
A kernel or image that refuses it (no CONFIG_KEXEC_FILE, an unsigned image with
signature checking on) gets the classic kexec_load (`kexec -p`). After either, the kernel's
own kexec_crash_loaded is the proof: kexec's exit status alone is not trusted.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass

from .. import system
from ..errors import CommandFailed, KdumpError
from .cmdline import capture_cmdline
from .defaults import load_defaults
from .hostpaths import HostPaths, crash_loaded, crash_size, running_cmdline
from .netcheck import network_problems

log = logging.getLogger("kdump-agent")

KEXEC_TIMEOUT = 120.0
NOT_FOUND = 127  # system.run's status for a program that could not be started


@dataclass(frozen=True)
class LoadPlan:
    """What `kexec -p` is given: printed by `load --dry-run`, run by `load`."""

    kernel: str
    initrd: str
    cmdline: str

    def argv(self, *, file_load: bool = True) -> list[str]:
        """kexec's argv: `-s` for kexec_file_load, without it the classic kexec_load."""
        return ["kexec", *(["-s"] if file_load else []), "-p", f"--command-line={self.cmdline}",
                f"--initrd={self.initrd}", self.kernel]


def default_kernel(paths: HostPaths, kver: str | None = None) -> str:
    """The running kernel's image, the one the capture boots too (RHEL's default)."""
    return os.path.join(paths.boot_dir, f"vmlinuz-{kver or platform.release()}")


def plan_load(paths: HostPaths, *, kernel: str, initrd: str) -> LoadPlan:
    """The capture command line from /proc/cmdline and /etc/default/kdump-agent."""
    defaults = load_defaults(paths.defaults)
    cmdline = capture_cmdline(running_cmdline(paths), remove=[defaults.remove], append=[defaults.append])
    return LoadPlan(kernel=kernel, initrd=initrd, cmdline=cmdline)


def require_reservation(paths: HostPaths) -> int:
    """The crashkernel= reservation in bytes, or a KdumpError saying how to make one."""
    size = crash_size(paths)
    if size is None:
        raise KdumpError(f"this kernel cannot load a capture kernel ({paths.crash_size} does not exist: "
                         "it was built without CONFIG_CRASH_DUMP/CONFIG_KEXEC)")
    if size == 0:
        raise KdumpError(f"no memory is reserved for a capture kernel ({paths.crash_size} is 0): add "
                         "crashkernel=<size> to the kernel command line and reboot "
                         "(`kdump-agent estimate` prints the size and the boot loader line)")
    return size


def load_problems(plan: LoadPlan, paths: HostPaths) -> list[str]:
    """Why loading would fail before kexec even runs: no reservation, files missing, network
    parameters the capture kernel would refuse or could not build (host/netcheck.py)."""
    problems: list[str] = []
    try:
        require_reservation(paths)
    except KdumpError as error:
        problems.append(str(error))
    if not os.path.isfile(plan.kernel):
        problems.append(f"the kernel {plan.kernel} does not exist")
    if not os.path.isfile(plan.initrd):
        problems.append(f"the capture initramfs {plan.initrd} does not exist (build it with "
                        "`kdump-agent mkinitrd`)")
    problems += network_problems(plan.cmdline, plan.initrd)
    return problems


def load(plan: LoadPlan, paths: HostPaths) -> str:
    """Load the capture kernel; returns which system call did it. Raises KdumpError."""
    problems = load_problems(plan, paths)
    if problems:
        raise KdumpError("; ".join(problems))
    try:
        system.run(plan.argv(file_load=True), timeout=KEXEC_TIMEOUT)
        how = "kexec_file_load"
    except CommandFailed as file_error:
        if file_error.returncode == NOT_FOUND:
            raise KdumpError("kexec is not installed (apt-get install kexec-tools)") from file_error
        log.warning("kexec -s (kexec_file_load) failed: %s; trying the classic kexec_load",
                    file_error.detail or file_error)
        try:
            system.run(plan.argv(file_load=False), timeout=KEXEC_TIMEOUT)
        except CommandFailed as classic_error:
            raise KdumpError(f"kexec could not load {plan.kernel}: kexec_file_load: "
                             f"{file_error.detail or file_error}; kexec_load: "
                             f"{classic_error.detail or classic_error}") from classic_error
        how = "kexec_load"
    if not crash_loaded(paths):
        raise KdumpError(f"kexec reported success but {paths.crash_loaded} does not say 1: "
                         "no capture kernel is loaded")
    return how


def unload(paths: HostPaths) -> bool:
    """Unload the capture kernel: a panic then just follows kernel.panic. False when none
    was loaded (nothing to do: stopping the service twice is not an error).

    Under lockdown only kexec_file_load is allowed, so `-s` is the second try.
    """
    if not crash_loaded(paths):
        return False
    try:
        system.run(["kexec", "-p", "-u"], timeout=KEXEC_TIMEOUT)
    except CommandFailed as error:
        log.warning("kexec -p -u failed: %s; trying kexec -s -p -u", error.detail or error)
        system.run(["kexec", "-s", "-p", "-u"], timeout=KEXEC_TIMEOUT)
    if crash_loaded(paths):
        raise KdumpError(f"kexec -p -u returned but {paths.crash_loaded} still says 1")
    return True
