"""The capture kernel's command line, made from the running kernel's (RHEL's rules, x86-64).

kdumpctl (kdump-utils) takes /proc/cmdline, drops what must not reach the capture kernel,
drops KDUMP_COMMANDLINE_REMOVE, and appends KDUMP_COMMANDLINE_APPEND, whose x86-64 default
gen-kdump-sysconfig.sh writes. This does the same as one pure function, with the reasons
kept next to each parameter, so `load --dry-run` and the tests show exactly what the
capture kernel boots with.

Rules, in order:
1. Everything after `--` is dropped: those are arguments for the running system's init.
2. STRIPPED parameters are dropped, whatever their value.
3. The admin's KDUMP_COMMANDLINE_REMOVE entries are dropped: a bare name drops every
   parameter of that name, `name=value` only that exact one. They apply to the running
   kernel's line and to CAPTURE_DEFAULTS (so `nokaslr` can be taken out again).
4. CAPTURE_DEFAULTS, then KDUMP_COMMANDLINE_APPEND, are appended; a parameter appended
   replaces every parameter of the same name taken from the running line, and the admin's
   APPEND replaces a default of the same name (`panic=30` instead of `panic=10`).
`console=` and everything else not named here is kept.

Networking needs nothing added: for an NFS or SSH target without `ip=` the capture
reads the route mkinitrd recorded (network.json in the image).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# Never passed on: name -> why.
STRIPPED: dict[str, str] = {
    "crashkernel": "the capture kernel reserves nothing for another one",
    "panic_on_warn": "a warning in the capture kernel must not end the dump (RHEL)",
    "root": "the initramfs sets root= itself; the root device may be unreachable after the panic",
    "rootflags": "goes with root=",
    "rootfstype": "goes with root=",
    "rd.lvm.lv": "dracut would assemble the root's LVM",
    "rd.lvm.vg": "dracut would assemble the root's LVM",
    "rd.luks.uuid": "dracut would unlock the root's LUKS and wait for a passphrase",
    "rd.luks.name": "dracut would unlock the root's LUKS and wait for a passphrase",
    "rd.dm.uuid": "dracut would assemble the root's device-mapper devices",
    "rd.md.uuid": "dracut would assemble the root's MD RAID",
    "netroot": "network root: not what the capture mounts (RHEL)",
    "rd.iscsi.initiator": "network root (RHEL)",
    "iscsi_initiator": "network root (RHEL)",
    "fcoe": "network root (RHEL)",
    "resume": "never resume a hibernation image in the capture kernel",
    "resume_offset": "goes with resume=",
    "hugepages": "huge pages reserved at boot would take the reservation",
    "hugepagesz": "goes with hugepages=",
    "default_hugepagesz": "goes with hugepages=",
    "cma": "a CMA area would take the reservation (cma=0 is appended)",
    "hugetlb_cma": "a CMA area would take the reservation (hugetlb_cma=0 is appended)",
    "memmap": "edits the running kernel's memory map, not the capture kernel's (kexec passes that)",
    "kexec_jump_back_entry": "the running kernel's kexec jump, meaningless after a panic",
    "quiet": "the console is where a failed dump explains itself (RHEL)",
    "rhgb": "graphical boot: no plymouth in the capture initramfs",
    "splash": "graphical boot: no plymouth in the capture initramfs",
    "slub_debug": "debug metadata costs reserved memory (RHEL)",
    "log_buf_len": "a large log buffer costs reserved memory (RHEL)",
    "swiotlb": "a large bounce buffer costs reserved memory (RHEL)",
    "rdinit": "would replace dracut's /init in the capture initramfs",
    "initrd": "names the running kernel's initramfs; kexec gives the capture one",
    "BOOT_IMAGE": "names the running kernel's image, not the one kexec loaded",
}

# kdump-utils' x86-64 KDUMP_COMMANDLINE_APPEND, minus pcie_ports=compat (left to the admin:
# it switches off PCIe port services such as AER, and no capture here was tested with it).
# RHEL's kdumpctl also adds disable_cpu_apicid=<boot CPU>, which only matters when the
# capture kernel brings up more than one CPU: with nr_cpus=1 it does not.
CAPTURE_DEFAULTS: dict[str, str] = {
    "irqpoll": "devices the crashed kernel left running may raise interrupts nobody handles",
    "nr_cpus=1": "one CPU: less per-CPU memory, no other CPU to bring up after a crash",
    "reset_devices": "drivers reset their hardware, which may still be doing DMA",
    "cgroup_disable=memory": "the memory controller's page records cost reserved memory",
    "mce=off": "a machine-check handler in the capture kernel would panic it again",
    "numa=off": "one node: no per-node memory",
    "udev.children-max=2": "bounds the memory of udev's workers in the initramfs",
    "panic=10": "a capture kernel that panics reboots instead of hanging",
    "acpi_no_memhotplug": "no memory hotplug in a kernel that owns a fixed reservation",
    "transparent_hugepage=never": "huge pages would waste the reservation",
    "nokaslr": "a fixed layout inside a small reservation (RHEL)",
    "hest_disable": "firmware error sources could panic the capture kernel again",
    "novmcoredd": "no device dumps kept in capture-kernel memory",
    "cma=0": "no CMA area out of the reservation",
    "rootfstype=ramfs": ("the initramfs unpacks into ramfs, not the tmpfs capped at half the capture "
                         "kernel's memory that refuses a bigger image while memory is still free"),
    "hugetlb_cma=0": "no CMA area out of the reservation",
}


def split_params(cmdline: str) -> list[str]:
    """Parameters as the kernel splits them: on blanks outside double quotes, up to `--`."""
    params: list[str] = []
    current: list[str] = []
    quoted = False
    for char in cmdline:
        if char == '"':
            quoted = not quoted
        if char.isspace() and not quoted:
            if current:
                params.append("".join(current))
                current = []
            continue
        current.append(char)
    if current:
        params.append("".join(current))
    return params[:params.index("--")] if "--" in params else params


def param_name(param: str) -> str:
    """The name the kernel matches: before `=`, quotes off, `-` read as `_` (as parameq does)."""
    return param.split("=", 1)[0].strip('"').replace("-", "_")


def _removed_by(param: str, removals: Sequence[str]) -> bool:
    """A bare name removes every parameter of that name; `name=value` only that one."""
    for entry in removals:
        if "=" in entry:
            if param_name(entry) == param_name(param) and entry.split("=", 1)[1] == param.partition("=")[2]:
                return True
        elif param_name(entry) == param_name(param):
            return True
    return False


def _names(params: Iterable[str]) -> set[str]:
    return {param_name(param) for param in params}


def capture_cmdline(running: str, *, remove: Sequence[str] = (), append: Sequence[str] = ()) -> str:
    """The capture kernel's command line from the running one and the admin's edits."""
    removals = split_params(" ".join(remove))
    added = split_params(" ".join(append))
    stripped = _names(STRIPPED)
    defaults = [p for p in CAPTURE_DEFAULTS
                if not _removed_by(p, removals) and param_name(p) not in _names(added)]
    replaced = _names(defaults) | _names(added)
    kept = [p for p in split_params(running)
            if param_name(p) not in stripped | replaced and not _removed_by(p, removals)]
    return " ".join(kept + defaults + added)
