"""Sub-commands: argument parsing and what each command prints. Library code raises;
`__main__` turns errors into exit statuses.

Each command imports what it needs when it runs: the capture kernel starts this program at
panic time, under a slow CPU, and the host commands' modules (mkinitrd, kexec, status, the
SSH setup) are never used there. For the same reason `capture` gets a parser that holds
only itself. paramiko and pyroute2 are never imported here (a unit test checks it in a
fresh interpreter): the SSH and network modules are imported inside the steps and host
modules that use them, so a local dump never loads them. That the frozen binary carries
every module all the same is checked by tests/integration/test_binary.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from . import config as kdump_config
from . import log as agent_log
from .context import DEFAULT_CONFIG_PATH, Paths

if TYPE_CHECKING:
    from .host.estimate import Estimate
    from .host.hostpaths import HostPaths

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_CONFIG = 2
# `capture` mounted the root file system for mount_root_run_init: the initramfs hook lets
# dracut's init switch to it instead of rebooting (dracut-module/55kdump-agent).
EXIT_HANDED_OVER = 75

log = logging.getLogger("kdump-agent")


def _host() -> HostPaths:
    """The machine's files (/proc, /sys, /etc/default, /boot): the host modules take them as
    a parameter so their tests can point them elsewhere; the commands use the real ones."""
    from .host.hostpaths import THIS_MACHINE
    return THIS_MACHINE


def _load_or_report(path: str) -> kdump_config.Config | None:
    """The config, or None after printing each of its errors as FILE:LINE: message."""
    try:
        return kdump_config.load(path)
    except kdump_config.ConfigErrors as errors:
        for error in errors.errors:
            print(error, file=sys.stderr)
        return None


def _check_config(args: argparse.Namespace) -> int:
    loaded = _load_or_report(args.config)
    if loaded is None:
        return EXIT_BAD_CONFIG
    print(f"{loaded.source}: valid")
    for line in loaded.summary():
        print(f"  {line}")
    return EXIT_OK


def _capture(args: argparse.Namespace) -> int:
    from .capture import capture, handed_over, last_resort, require_vmcore
    agent_log.setup(to_kernel_log=False)
    paths = Paths(config=args.config)
    require_vmcore(paths.vmcore)  # before anything on a running system is touched, its kernel log too
    agent_log.setup(to_kernel_log=os.path.exists("/dev/kmsg") and not args.no_kernel_log)
    done = capture(paths, from_rootfs=args.from_rootfs)
    if handed_over(done):
        return EXIT_HANDED_OVER
    if args.no_reboot_fallback:
        return EXIT_FAILURE
    last_resort()
    return EXIT_FAILURE


def _mkinitrd(args: argparse.Namespace) -> int:
    from .host.hostpaths import DEFAULT_KNOWN_HOSTS
    from .host.mkinitrd import mkinitrd
    loaded = _load_or_report(args.config)
    if loaded is None:
        print(f"{args.config}: not building an initramfs from a config with errors", file=sys.stderr)
        return EXIT_BAD_CONFIG
    built = mkinitrd(loaded, output=Path(args.output) if args.output else None, binary=args.binary,
                     kver=args.kver, kmoddir=args.kmoddir, dry_run=args.dry_run, force=args.force,
                     known_hosts_files=args.known_hosts or DEFAULT_KNOWN_HOSTS)
    if args.dry_run:
        if built.recorded_target:
            print(f"recorded target: {built.recorded_target.as_json()}")
        if built.recorded_network:
            print(f"recorded network: {json.dumps(json.loads(built.recorded_network))}")
        print(shlex.join([f"{k}={v}" for k, v in built.env.items()] + built.argv))
        print(f"{built.output}: {built.skipped or 'would be built: ' + '; '.join(built.reasons)}")
    else:
        print(f"{built.output}: {built.skipped or 'built (' + '; '.join(built.reasons) + ')'}")
    return EXIT_OK


def _load(args: argparse.Namespace) -> int:
    import platform

    from .host.kexec import default_kernel, load, load_problems, plan_load
    from .host.mkinitrd import default_output
    from .host.stamp import config_changed
    host = _host()
    kver = platform.release()
    kernel = args.kernel or default_kernel(host, kver)
    initrd = args.initrd or str(default_output(kver, host))
    plan = plan_load(host, kernel=kernel, initrd=initrd)
    if args.dry_run:
        print(shlex.join(plan.argv(file_load=True)))
        print(f"if kexec_file_load is refused: {shlex.join(plan.argv(file_load=False))}")
        for problem in load_problems(plan, host):
            print(f"would fail: {problem}", file=sys.stderr)
        return EXIT_OK
    if config_changed(Path(initrd), args.config):  # the image carries the config as it was
        log.warning("%s changed since %s was built: the capture would use the old copy; "
                    "`kdump-agent start` rebuilds and reloads", args.config, initrd)
    how = load(plan, host)
    print(f"capture kernel {kernel} loaded ({how}) with {initrd}")
    return EXIT_OK


def _start(args: argparse.Namespace) -> int:
    from .host import service
    loaded = _load_or_report(args.config)
    if loaded is None:
        return EXIT_BAD_CONFIG
    print(service.start(loaded, _host(), binary=args.binary))
    return EXIT_OK


def _stop(args: argparse.Namespace) -> int:
    from .host import service
    print(service.stop(_host()))
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    import platform

    from .host import status
    from .host.kexec import default_kernel
    from .host.mkinitrd import default_output
    from .host.sizing import estimate_here
    host = _host()
    kver = platform.release()
    kernel, image = default_kernel(host, kver), default_output(kver, host)

    def estimate(config: kdump_config.Config | None) -> Estimate | str:
        try:
            return estimate_here(config, host, kernel=kernel, image=str(image))
        except OSError as error:
            return str(error)

    checks = status.run_checks(args.config, host, image=image, estimate=estimate)
    print(f"kdump-agent {__version__}, kernel {kver}")
    for line in status.report(checks):
        print(line)
    return EXIT_OK if status.ready(checks) else EXIT_FAILURE


def _estimate(args: argparse.Namespace) -> int:
    import platform

    from .host.estimate import grub_advice, report
    from .host.kexec import default_kernel
    from .host.mkinitrd import default_output
    from .host.sizing import estimate_here
    from .system import read_text
    host = _host()
    kver = platform.release()
    try:
        loaded: kdump_config.Config | None = kdump_config.load(args.config)
    except kdump_config.ConfigErrors as errors:
        log.warning("%s: %s; estimating for a dump to a local disk", args.config, errors.errors[0].message)
        loaded = None
    estimate = estimate_here(loaded, host, kernel=default_kernel(host, kver),
                             image=str(default_output(kver, host)))
    advice = grub_advice(estimate.recommended, read_text(host.grub_defaults), host.grub_defaults)
    print("\n".join([*report(estimate), "", *advice]))
    return EXIT_OK


def _test(args: argparse.Namespace) -> int:
    from .host import crashtest
    crashtest.crash_now(_host(), assume_yes=args.yes)
    print("not crashing: the answer was not `yes`")
    return EXIT_FAILURE


def _propagate(args: argparse.Namespace) -> int:
    from .host.propagate import propagate
    loaded = _load_or_report(args.config)
    if loaded is None:
        return EXIT_BAD_CONFIG
    destination = propagate(loaded, known_hosts=args.known_hosts)
    print(f"{destination} accepts {destination.key_path}; its host key is in {args.known_hosts}. "
          "Now `kdump-agent start` packs both into the capture initramfs.")
    return EXIT_OK


def _restore_raw(args: argparse.Namespace) -> int:
    from .host.restore_raw import Outcome as RestoreOutcome
    from .host.restore_raw import restore_raw
    from .targets.raw import RawTarget
    device, path = args.device, args.path
    if device is None or path is None:
        loaded = _load_or_report(args.config)
        if loaded is None:
            return EXIT_BAD_CONFIG
        if device is None:
            target = loaded.dump_target
            if not isinstance(target, RawTarget):
                print(f"{loaded.source}: no raw target: nothing to restore")
                return EXIT_OK
            device = target.device
        path = path or loaded.path
    result = restore_raw(device, path)
    print(result.message)
    return EXIT_FAILURE if result.outcome is RestoreOutcome.INCOMPLETE else EXIT_OK


def _dumps(args: argparse.Namespace) -> int:
    from .host import dumps
    from .host.dumpstore import open_store
    from .host.hostpaths import DEFAULT_KNOWN_HOSTS
    config = None
    if args.path is None:
        config = _load_or_report(args.config)
        if config is None:
            return EXIT_BAD_CONFIG
    with open_store(config, path=args.path, known_hosts_files=args.known_hosts or DEFAULT_KNOWN_HOSTS,
                    mountinfo=_host().mountinfo) as store:
        found = dumps.list_dumps(store)
        if args.verify:
            found = [dumps.verify(store, dump) for dump in found]
    if args.json:
        print(json.dumps([dumps.as_json(dump, store.where) for dump in found], indent=2))
    elif not found:
        print(f"{store.where}: no dumps")
    else:
        print(f"{store.where}: {len(found)} dump{'' if len(found) == 1 else 's'}, newest first")
        for dump in found:
            print(dumps.line(dump))
    return EXIT_FAILURE if any(d.verdict is not None and d.verdict.failed for d in found) else EXIT_OK


def _states(args: argparse.Namespace) -> int:
    from .machine import dot, mermaid, table_rows
    if args.mermaid:
        print(mermaid())
        return EXIT_OK
    if args.dot:
        print(dot())
        return EXIT_OK
    for here, outcome, after in table_rows():
        print(f"{here.value:<15} {outcome.value:<10} -> {after.value}")
    return EXIT_OK


def build_parser(capture_only: bool = False) -> argparse.ArgumentParser:
    """Every command's parser; with capture_only, the `capture` command's alone (the host
    commands' dozen sub-parsers are work the capture kernel would do for nothing)."""
    parser = argparse.ArgumentParser(
        prog="kdump-agent", description="Save a Linux crash dump from the capture kernel.")
    parser.add_argument("--version", action="version", version=f"kdump-agent {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if capture_only:
        _add_capture(commands)
        return parser
    from .host.hostpaths import DEFAULT_KNOWN_HOSTS

    check = commands.add_parser("check-config", help="validate a kdump.conf",
                                description="Validate a kdump.conf: exit 0 with a summary, "
                                            "or exit 2 with FILE:LINE: message per error.")
    check.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH, help="the file to check")
    check.set_defaults(func=_check_config)

    _add_capture(commands)

    build = commands.add_parser("mkinitrd", help="build the capture initramfs with dracut",
                                description="Validate the config, then build a capture initramfs "
                                            "with dracut and kdump-agent's dracut module, unless the "
                                            "stamp next to it (IMAGE.stamp) shows nothing changed.")
    build.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH)
    build.add_argument("-o", "--output",
                       help="the initramfs to write (default: /boot/initramfs-KVERkdump.img, or under "
                            "/var/lib/kdump-agent when /boot is read-only)")
    build.add_argument("--force", action="store_true",
                       help="build even when the image's stamp says it is up to date")
    build.add_argument("--kver", help="kernel version (default: the running kernel)")
    build.add_argument("--kmoddir", help="kernel modules directory (default: /lib/modules/KVER)")
    build.add_argument("--binary", type=Path,
                       help="agent binary to pack (default: this program, when frozen)")
    build.add_argument("--known-hosts", action="append", metavar="FILE",
                       help="known_hosts file to pin an ssh target's host key from (repeatable; "
                            f"default: {', '.join(DEFAULT_KNOWN_HOSTS)})")
    build.add_argument("--dry-run", action="store_true", help="print the dracut command only")
    build.set_defaults(func=_mkinitrd)

    restore = commands.add_parser(
        "restore-raw", help="rebuild a vmcore saved to a raw device",
        description="At the next boot after a dump to a `raw` target: rebuild the vmcore "
                    "into <path>/127.0.0.1-<date>/ and clear the device's first block.")
    restore.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH)
    restore.add_argument("--device", help="the raw device (default: the config's `raw` line)")
    restore.add_argument("--path", help="where dumps go (default: the config's `path`)")
    restore.set_defaults(func=_restore_raw)

    lister = commands.add_parser(
        "dumps", help="list the dumps on the target, newest first, with their panics",
        description="List the dumps on the configured target (the local path, an NFS export "
                    "mounted read-only, or the SSH server through the pinned host key): date, host, "
                    "complete or incomplete, size, the panic's kind, message and signature, and how "
                    "many earlier dumps share that signature.")
    where = lister.add_mutually_exclusive_group()
    where.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH, help="its target says where")
    where.add_argument("--path", help="list the dump directories in this local directory instead")
    lister.add_argument("--json", action="store_true", help="print the list as JSON")
    lister.add_argument("--verify", action="store_true",
                        help="recompute each vmcore's sha256 against its record: OK, MISMATCH, "
                             "NOT HASHED or UNREADABLE; exit 1 on a mismatch or an unreadable vmcore")
    lister.add_argument("--known-hosts", action="append", metavar="FILE",
                        help="known_hosts file pinning an ssh target's host key (repeatable; "
                             f"default: {', '.join(DEFAULT_KNOWN_HOSTS)})")
    lister.set_defaults(func=_dumps)

    _add_host_commands(commands)

    states = commands.add_parser("states", help="print the capture state machine's transitions")
    graph = states.add_mutually_exclusive_group()
    graph.add_argument("--mermaid", action="store_true", help="as a mermaid flowchart")
    graph.add_argument("--dot", action="store_true", help="as a Graphviz digraph")
    states.set_defaults(func=_states)
    return parser


def _add_capture(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """What the capture initramfs runs."""
    capture = commands.add_parser("capture", help="save the dump (run by the capture initramfs)",
                                  description="Run the capture state machine on /proc/vmcore.")
    capture.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH)
    capture.add_argument("--no-kernel-log", action="store_true", help="log to the console only")
    capture.add_argument("--from-rootfs", action="store_true",
                         help="run from the root file system after mount_root_run_init: save the "
                              "dump to `path` there, then final_action")
    capture.add_argument("--no-reboot-fallback", action="store_true",
                         help="return instead of forcing a reboot if every action failed")
    capture.set_defaults(func=_capture)


def _add_host_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The service an admin runs on the host: load, status, estimate, test, start, propagate."""
    from .host.hostpaths import USER_KNOWN_HOSTS
    loader = commands.add_parser(
        "load", help="load the capture kernel (kexec -p)",
        description="Load the capture kernel with kexec -s -p (kexec_file_load), or kexec -p if that "
                    "is refused. Its command line is the running one with RHEL's edits, and "
                    "KDUMP_COMMANDLINE_APPEND/_REMOVE from /etc/default/kdump-agent.")
    loader.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH,
                        help="warn when this file changed since the initramfs was built")
    loader.add_argument("--kernel", help="the capture kernel (default: /boot/vmlinuz-$(uname -r))")
    loader.add_argument("--initrd", help="the capture initramfs (default: mkinitrd's default output)")
    loader.add_argument("--dry-run", action="store_true", help="print the kexec command only")
    loader.set_defaults(func=_load)

    unloader = commands.add_parser("unload", help="unload the capture kernel (kexec -p -u)",
                                   description="Unload the capture kernel: a panic is then not dumped.")
    unloader.set_defaults(func=_stop)

    starter = commands.add_parser(
        "start", help="what the boot service runs: restore a raw dump, rebuild if needed, load",
        description="Refuse without a crashkernel= reservation; restore a dump left on a raw target; "
                    "rebuild the capture initramfs if its inputs changed; load the capture kernel.")
    starter.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH)
    starter.add_argument("--binary", type=Path,
                         help="agent binary to pack (default: this program, when frozen)")
    starter.set_defaults(func=_start)

    stopper = commands.add_parser("stop", help="unload the capture kernel (the boot service's stop)",
                                  description="Same as unload.")
    stopper.set_defaults(func=_stop)

    checker = commands.add_parser(
        "status", help="is this machine ready to dump? one line per check, with the fix",
        description="Check the reservation, the loaded capture kernel, the config, the initramfs, "
                    "the target, the size, and the lockup and SysRq settings. Exit 1 when a panic "
                    "now would not be dumped.")
    checker.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH)
    checker.set_defaults(func=_status)

    sizer = commands.add_parser(
        "estimate", help="the crashkernel= size this machine needs, as its parts",
        description="Add up the capture kernel, the unpacked initramfs, kdump-agent and makedumpfile; "
                    "compare with the seed's rule and RHEL 9's default; print the crashkernel= value "
                    "and the GRUB line that reserves it.")
    sizer.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH,
                       help="its target decides kdump-agent's share (network dumps need more)")
    sizer.set_defaults(func=_estimate)

    tester = commands.add_parser(
        "test", help="crash this machine now (sysrq-c) to prove the dump works",
        description="Refuse unless a capture kernel is loaded; ask for `yes`; sync; then write c "
                    "to /proc/sysrq-trigger.")
    tester.add_argument("--yes", action="store_true", help="do not ask (automated tests)")
    tester.set_defaults(func=_test)

    propagator = commands.add_parser(
        "propagate", help="set up key login to the ssh target and pin its host key",
        description="Create the sshkey if missing (ed25519), show the server's host key and record "
                    "it after you confirm, install the public key with ssh-copy-id (it asks for the "
                    "password), then log in with the key alone.")
    propagator.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH)
    propagator.add_argument("--known-hosts", default=USER_KNOWN_HOSTS,
                            help=f"where to record the host key (default: {USER_KNOWN_HOSTS})")
    propagator.set_defaults(func=_propagate)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(capture_only=argv[:1] == ["capture"]).parse_args(argv)
    if args.command != "capture":
        agent_log.setup(to_kernel_log=False)
    code: int = args.func(args)
    return code
