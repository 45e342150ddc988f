"""`kdump-agent status`: one screen that says whether the next panic will be dumped.

Each check is one line, OK or PROBLEM, and a PROBLEM carries the command or setting that
fixes it. Checks that decide whether a dump can happen (reservation, loaded kernel,
config, image, target, size) are blocking; the ones that only widen what gets dumped
(a hard lockup panicking, the SysRq crash key) are advisory and say so.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import config as kdump_config
from .. import flat
from ..config import Config
from ..errors import KdumpError
from ..layout import MANIFEST
from ..network.record import HostRecord
from ..storage.iscsi import IscsiSession
from ..targets.local import FilesystemTarget
from ..targets.nfs import NfsTarget
from ..targets.raw import RawTarget, signature
from ..targets.sshdest import SshDestination
from .blockdev import filesystem_holding, resolve_spec
from .dumps import display_date, list_dumps, summary
from .dumpstore import open_store, reachable_here
from .estimate import Estimate, megabytes
from .hostpaths import HostPaths, crash_loaded, crash_size, read_int
from .imagefiles import image_file, image_paths
from .mkinitrd import (
    IMAGE_MODE,
    collector_program,
    hostonly_wanted,
    image_changes,
    local_device,
    target_device,
)
from .netpack import record_here, server_host
from .stack import stack_under
from .stackpack import storage_pack

CONNECT_TIMEOUT = 3.0
NFS_PORT = 2049
SYSRQ_ALL = 1
SYSRQ_DUMP_BIT = 8  # the group sysrq-c (crash) belongs to: "debugging dumps"


@dataclass(frozen=True)
class Check:
    """One line of the status screen."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    blocking: bool = True


def check_reservation(paths: HostPaths) -> Check:
    size = crash_size(paths)
    name = "crashkernel reserved"
    if size is None:
        return Check(name, False, f"{paths.crash_size} missing: this kernel has no crash kexec support",
                     "boot a kernel built with CONFIG_KEXEC and CONFIG_CRASH_DUMP (Debian's are)")
    if size == 0:
        return Check(name, False, "nothing reserved",
                     "add crashkernel=<size> to the kernel command line and reboot (`kdump-agent estimate`)")
    return Check(name, True, megabytes(size))


def check_loaded(paths: HostPaths) -> Check:
    if crash_loaded(paths):
        return Check("capture kernel loaded", True, "a panic now boots the capture kernel")
    return Check("capture kernel loaded", False, "no: a panic now is not dumped",
                 "kdump-agent start (or: systemctl start kdump-agent)")


def check_config(config_path: str) -> tuple[Check, Config | None]:
    try:
        loaded = kdump_config.load(config_path)
    except kdump_config.ConfigErrors as errors:
        shown = "; ".join(str(error) for error in errors.errors[:3])
        more = f" (and {len(errors.errors) - 3} more)" if len(errors.errors) > 3 else ""
        unreadable = errors.errors[0].line == 0
        fix = (f"write {config_path} (kdump.conf(5)); an empty file means the defaults: dump to "
               "/var/crash on its own file system") if unreadable else (
            f"kdump-agent check-config -c {config_path} lists them all")
        return Check("config valid", False, shown + more, fix), None
    target = loaded.target
    where = f"{target.fstype or target.kind.value} {target.spec}" if target else f"{loaded.path}, local"
    return Check("config valid", True, f"{config_path}: dump to {where}"), loaded


def check_image(config: Config | None, image: Path,
                changes: Callable[[Config, Path], list[str]]) -> Check:
    """Present and built from what the config and this machine say now (mkinitrd's check)."""
    name = "initramfs up to date"
    fix = f"kdump-agent mkinitrd -o {image} (start does it too)"
    if not image.exists():
        return Check(name, False, f"{image} does not exist", fix)
    if config is None:
        return Check(name, False, f"{image} exists; not checked against an invalid config", "fix the config")
    if config.force_no_rebuild:
        return Check(name, True, f"{image} (not checked: force_no_rebuild is set)")
    try:
        reasons = changes(config, image)
    except (KdumpError, OSError) as error:
        return Check(name, False, f"cannot tell: {error}", "fix that, then kdump-agent mkinitrd")
    if reasons:
        return Check(name, False, f"{image} is stale: {'; '.join(reasons)}",
                     fix + ", then kdump-agent load")
    return Check(name, True, str(image))


def chap_session(config: Config) -> IscsiSession | None:
    """The iSCSI session with CHAP under the dump target on this host, whose passwords a
    hostonly image carries (host/stack.py finds it as mkinitrd does); None for any other
    target, or one that cannot be looked at now (check_target says why)."""
    if not hostonly_wanted(config.dracut_args):
        return None  # mkinitrd refuses iSCSI in a generic image
    target = config.dump_target
    try:
        device = local_device(target) or (
            filesystem_holding(os.path.realpath(config.path)).device if target is None else "")
        layers = stack_under(resolve_spec(device)).stack.layers if device else ()
    except (KdumpError, OSError):
        return None
    return next((layer for layer in layers if isinstance(layer, IscsiSession) and layer.chap), None)


def check_storage(config: Config | None, image: Path) -> Check:
    """The target's storage stack on this machine now, and that the image holds its record
    and tools: an LV renamed or an array rebuilt since the build would not come up."""
    name = "storage stack"
    if config is None:
        return Check(name, False, "not checked: the config is invalid", "fix the config")
    try:
        device = target_device(config)
        if not device:
            return Check(name, True, "a network target: no local storage")
        if not hostonly_wanted(config.dracut_args):
            return Check(name, True, "a generic (--no-hostonly) image: the stack comes from dracut_args")
        pack = storage_pack(config, device, "", hostonly=True)
    except (KdumpError, OSError) as error:
        return Check(name, False, _reason(error), "dump to a plain partition, an LV, md RAID, NFS or SSH")
    stack = pack.stacks.get("target")
    if not stack:
        return Check(name, True, f"{device} is on a plain disk")
    fix = f"kdump-agent mkinitrd -o {image}, then kdump-agent load"
    if not image.exists():
        return Check(name, False, f"{device} is on {stack.describe()}; {image} is not built", fix)
    try:
        held = image_file(image, "etc/kdump-agent/storage.json")
        missing = sorted(set(pack.programs) - image_paths(image))
    except (KdumpError, OSError) as error:
        return Check(name, False, f"cannot read {image}: {_reason(error)}", fix)
    if held is None or held.strip() != (pack.record() or "").strip():
        return Check(name, False, f"{device} is on {stack.describe()}, which {image} does not record", fix)
    if missing:
        return Check(name, False, f"{image} lacks {', '.join(missing)}, which {stack.describe()} needs", fix)
    return Check(name, True, f"{device} is on {stack.describe()}; {image} holds its record and "
                 f"{', '.join(pack.programs)}")


def check_network(config: Config | None, image: Path) -> Check:
    """The way to a network target's server now, and that the image records that way: a NIC
    replaced, a bond rebuilt or a VLAN moved since the build would not come up after a panic.
    Compared as the capture kernel's plan, so a DHCP address renewed since is no change."""
    name = "network"
    host = server_host(config) if config is not None else None
    if config is None or host is None:
        return Check(name, True, "no network target" if config else "not checked: the config is invalid")
    if not hostonly_wanted(config.dracut_args):
        return Check(name, True, "a generic (--no-hostonly) image: the capture kernel's command line "
                     "or DHCP says how")
    fix = f"kdump-agent mkinitrd -o {image}, then kdump-agent load"
    try:
        now = record_here(host)
    except KdumpError as error:
        return Check(name, False, _reason(error), "make the server reachable through a NIC, bond, VLAN "
                     "or bridge, or name the capture kernel's network with ip= (see README)")
    if not image.exists():
        return Check(name, False, f"{host} is reached through {now.described()}; {image} is not built", fix)
    try:
        held = image_file(image, "etc/kdump-agent/network.json")
        built = HostRecord.from_json(held) if held else None
    except (KdumpError, OSError) as error:
        return Check(name, False, f"cannot read {image}'s network record: {_reason(error)}", fix)
    if built is None or built.plan() != now.plan():
        recorded = f" (it records {built.described()})" if built else ""
        return Check(name, False, f"{host} is reached through {now.described()} now, which {image} does not "
                     f"record{recorded}", fix)
    return Check(name, True, f"{host} is reached through {now.described()}, as {image} records")


def check_image_mode(config: Config | None, image: Path,
                     chap: Callable[[Config], IscsiSession | None] = chap_session) -> Check:
    """Only root may read the image: for an ssh target it holds the private key, for a
    target on iSCSI with CHAP the CHAP passwords, which is why those cases block. For the
    others it is advisory: the image then holds kdump.conf, the hooks and the records, no
    more secret than those files on the host."""
    name = "initramfs private"
    secret = None
    if config is not None and isinstance(config.dump_target, SshDestination):
        secret = f"the private key {config.sshkey}"
    elif config is not None and (session := chap(config)) is not None:
        secret = f"the CHAP password of {session.describe()}"
    blocking = secret is not None
    try:
        mode = stat.S_IMODE(image.stat().st_mode)
    except FileNotFoundError:
        return Check(name, True, f"{image} not built yet", blocking=blocking)
    except OSError as error:
        return Check(name, False, f"{image}: {_reason(error)}", f"chmod {IMAGE_MODE:04o} {image}",
                     blocking=blocking)
    if mode & 0o077 == 0:
        return Check(name, True, f"{image} is mode {mode:04o}", blocking=blocking)
    what = f"and holds {secret}" if secret else "(advisory)"
    return Check(name, False, f"{image} is mode {mode:04o}: group and others can read it {what}",
                 f"chmod {IMAGE_MODE:04o} {image}", blocking=blocking)


def check_collector(config: Config | None) -> Check:
    """core_collector's program must be on this host: mkinitrd packs that file, and the
    capture kernel runs the same argv (a missing one fails the dump with 127)."""
    name = "core_collector on this host"
    if config is None:
        return Check(name, False, "not checked: the config is invalid", "fix the config")
    try:
        found = collector_program(config)
    except KdumpError as error:
        program = config.core_collector[0]
        return Check(name, False, str(error),
                     f"install {os.path.basename(program)}, or set core_collector in {config.source} "
                     "to a program this host has (`command -v makedumpfile`)")
    return Check(name, True, found)


def tcp_connect(host: str, port: int, timeout: float) -> None:
    """Open and close a TCP connection; raises OSError. An ASCII name goes as bytes: the
    frozen binary may lack the idna codec a str name is run through."""
    name: str | bytes = host.encode("ascii") if host.isascii() else host
    with socket.create_connection((name, port), timeout=timeout):  # type: ignore[arg-type]
        pass


def check_target(config: Config | None, connect: Callable[[str, int, float], None] = tcp_connect) -> Check:
    name = "target reachable"
    if config is None:
        return Check(name, False, "not checked: the config is invalid", "fix the config")
    where = f"{config.source}:{config.target.line}" if config.target else config.source
    fix = f"check the target in {where} and that it is up"
    target = config.dump_target
    try:
        if target is None:
            held = filesystem_holding(config.path)
            return Check(name, True, f"{config.path} is on {held.device} ({held.fstype})")
        if isinstance(target, FilesystemTarget) and target.fstype == "virtiofs":
            return Check(name, True, f"virtiofs tag {target.spec}: only the capture kernel can check it")
        if isinstance(target, FilesystemTarget):
            return Check(name, True, f"{target.spec} is {resolve_spec(target.spec)}")
        if isinstance(target, RawTarget):
            return check_raw_device(config, target.device, resolve_spec(target.device))
    except (KdumpError, OSError) as error:
        return Check(name, False, _reason(error), fix)
    if isinstance(target, NfsTarget):
        host, port = target.server, NFS_PORT
    else:
        host, port = target.host, target.port
    try:
        connect(host, port, CONNECT_TIMEOUT)
    except OSError as error:
        return Check(name, False, f"{host} port {port}: {_reason(error)}", fix)
    return Check(name, True, f"{host} port {port} answers")


def check_raw_device(config: Config, spec: str, device: str) -> Check:
    """A raw dump writes over the device from its first byte: it must be a block device that
    holds nothing blkid recognises, as mkinitrd and the capture kernel insist too.

    Raises KdumpError (blkid cannot probe) or OSError, which check_target reports.
    """
    name = "target reachable"
    line = config.target.line if config.target else 0
    fix = f"point `raw` in {config.source}:{line} at an empty partition or LV"
    if not stat.S_ISBLK(os.stat(device).st_mode):
        return Check(name, False, f"{device} is not a block device", fix)
    found = signature(device)
    if found:
        return Check(name, False, f"{device} holds {found} (blkid): a raw dump would destroy it", fix)
    return Check(name, True, f"{spec} is {device}, a block device blkid finds nothing on")


def check_raw_restored(config: Config | None) -> list[Check]:
    """A dump left on a raw target (its first block is a flattened header) waits for
    restore-raw: the next panic writes over it. No line for other targets."""
    target = config.dump_target if config else None
    if config is None or config.target is None or not isinstance(target, RawTarget):
        return []
    name = "raw dump restored"
    try:
        with open(target.device, "rb") as device:
            first_block = device.read(flat.HEADER_SIZE)
    except OSError as error:
        return [Check(name, False, f"cannot read {target.device}: {_reason(error)}",
                      f"check the target in {config.source}:{config.target.line}")]
    if flat.is_flattened(first_block):
        # Advisory: the next panic is dumped all the same (over this one), and `status`
        # exits 1 only when a panic now would not be dumped.
        return [Check(name, False, f"a dump on {target.device} waits to be restored (the next panic "
                                   "writes over it)",
                      f"kdump-agent restore-raw (start runs it too); free space in {config.path} if it "
                      "says the dump does not fit", blocking=False)]
    return [Check(name, True, f"no dump waits on {target.device}")]


def _reason(error: Exception) -> str:
    """An error as one line: the system's words for a failed connection, not its errno repr."""
    if isinstance(error, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT:g} s"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


def check_nmi_watchdog(paths: HostPaths) -> Check:
    """A hard lockup is dumped only if the NMI watchdog sees it and is told to panic."""
    name = "hard lockups panic"
    watchdog = read_int(paths.nmi_watchdog)
    lockup_panic = read_int(paths.hardlockup_panic)
    fix = ("sysctl -w kernel.nmi_watchdog=1 kernel.hardlockup_panic=1, and the same in a file in "
           "/etc/sysctl.d/ (advisory: other panics are dumped without it)")
    if watchdog is None:
        return Check(name, False, f"{paths.nmi_watchdog} missing: no hard lockup detector in this kernel, "
                                  "a hard lockup hangs the machine undumped",
                     "a kernel with CONFIG_HARDLOCKUP_DETECTOR (advisory)", blocking=False)
    if watchdog != 1:
        return Check(name, False, f"kernel.nmi_watchdog = {watchdog}: hard lockups go unnoticed", fix,
                     blocking=False)
    if lockup_panic == 0:
        return Check(name, False, "kernel.nmi_watchdog = 1 but kernel.hardlockup_panic = 0: a hard "
                                  "lockup is only logged", fix, blocking=False)
    return Check(name, True, "kernel.nmi_watchdog = 1" + (", kernel.hardlockup_panic = 1" if lockup_panic
                                                           else ""), blocking=False)


def check_sysrq(paths: HostPaths) -> Check:
    """The SysRq crash key: how an admin dumps a hung machine from the console.

    /proc/sysrq-trigger (`kdump-agent test`) works for root whatever kernel.sysrq says;
    the mask gates the keyboard and the serial console's break.
    """
    name = "SysRq crash key"
    value = read_int(paths.sysrq)
    if value is None:
        return Check(name, False, f"{paths.sysrq} missing: no magic SysRq in this kernel, so neither "
                                  "`kdump-agent test` nor Alt-SysRq-C can crash it",
                     "a kernel with CONFIG_MAGIC_SYSRQ (advisory)", blocking=False)
    if value == SYSRQ_ALL or value & SYSRQ_DUMP_BIT:
        return Check(name, True, f"kernel.sysrq = {value}: Alt-SysRq-C crashes a hung machine into a dump",
                     blocking=False)
    return Check(name, False, f"kernel.sysrq = {value}: Alt-SysRq-C is ignored",
                 f"sysctl -w kernel.sysrq={value | SYSRQ_DUMP_BIT} and the same in /etc/sysctl.d/ "
                 "(advisory)", blocking=False)


def check_size(estimate: Estimate | str) -> Check:
    """The reservation against the estimate (a str: why there is no estimate)."""
    name = "reservation large enough"
    if isinstance(estimate, str):
        return Check(name, False, f"no estimate: {estimate}", "kdump-agent estimate")
    needed = megabytes(estimate.recommended)
    reserved = estimate.reserved or 0
    if reserved >= estimate.recommended:
        return Check(name, True, f"{megabytes(reserved)} reserved, {needed} needed")
    have = f"{megabytes(reserved)} reserved" if reserved else "nothing reserved"
    return Check(name, False, f"{have}, this machine needs {needed}",
                 f"crashkernel={needed} on the kernel command line (`kdump-agent estimate` shows how)")


def check_last_dump(config: Config | None, paths: HostPaths) -> Check:
    """The newest dump on the target, in one line (advisory: it says what happened, not
    whether the next panic is dumped). Network targets are not contacted for it."""
    name = "last dump"
    if config is None:
        return Check(name, True, "not looked for: the config is invalid", blocking=False)
    if not reachable_here(config):
        return Check(name, True, "not looked for on a network target: `kdump-agent dumps` lists them",
                     blocking=False)
    try:
        with open_store(config, mountinfo=paths.mountinfo) as store:
            found = list_dumps(store)
            where = store.where
    except FileNotFoundError:
        return Check(name, True, f"none: {config.path} does not exist yet", blocking=False)
    except (KdumpError, OSError) as error:
        return Check(name, True, f"cannot look: {_reason(error)}", blocking=False)
    if not found:
        return Check(name, True, f"none in {where}", blocking=False)
    last = found[0]
    detail = f"{display_date(last.name)}, {summary(last, where)}"
    if last.complete:
        return Check(name, True, detail, blocking=False)
    return Check(name, False, detail, "`kdump-agent dumps` shows it and the ones before; its "
                 f"{MANIFEST} says what failed (advisory)", blocking=False)


def ready(checks: list[Check]) -> bool:
    """Whether the next panic will be dumped: every blocking check passed."""
    return all(check.ok for check in checks if check.blocking)


def report(checks: list[Check]) -> list[str]:
    """The screen: one OK/PROBLEM line per check, its fix under it, then the verdict."""
    lines: list[str] = []
    for check in checks:
        lines.append(f"{'OK' if check.ok else 'PROBLEM':<8} {check.name}: {check.detail}")
        if not check.ok and check.fix:
            lines.append(f"{'':<8}   fix: {check.fix}")
    blocking = [check.name for check in checks if check.blocking and not check.ok]
    advisory = [check.name for check in checks if not check.blocking and not check.ok]
    verdict = f"NOT READY to dump: {', '.join(blocking)}" if blocking else "ready to dump"
    if advisory:
        verdict += f" (advisory: {', '.join(advisory)})"
    return lines + [verdict]


def run_checks(config_path: str, paths: HostPaths, *, image: Path,
               estimate: Callable[[Config | None], Estimate | str],
               changes: Callable[[Config, Path], list[str]] | None = None) -> list[Check]:
    """Every check, in the order an admin fixes them."""
    config_check, config = check_config(config_path)
    return [
        check_reservation(paths),
        check_loaded(paths),
        config_check,
        check_image(config, image, changes or (lambda c, i: image_changes(c, output=i))),
        check_image_mode(config, image),
        check_collector(config),
        check_target(config),
        check_storage(config, image),
        check_network(config, image),
        *check_raw_restored(config),
        check_size(estimate(config)),
        check_nmi_watchdog(paths),
        check_sysrq(paths),
        check_last_dump(config, paths),
    ]
