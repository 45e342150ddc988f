"""Sub-commands: argument parsing and what each command prints. Library code raises;
`__main__` turns errors into exit statuses.

Every module is imported here, eagerly: a frozen binary missing a module then fails at
`--help` on the build machine, not in the capture kernel after a panic.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from . import __version__
from . import config as kdump_config
from . import log as agent_log
from .capture import capture, handed_over, last_resort
from .config import TargetKind
from .context import DEFAULT_CONFIG_PATH, Paths
from .host.mkinitrd import mkinitrd
from .host.netpack import DEFAULT_KNOWN_HOSTS
from .host.restore_raw import Outcome as RestoreOutcome
from .host.restore_raw import restore_raw
from .machine import dot, mermaid, table_rows

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_CONFIG = 2
# `capture` mounted the root file system for mount_root_run_init: the initramfs hook lets
# dracut's init switch to it instead of rebooting (dracut-module/55kdump-agent).
EXIT_HANDED_OVER = 75


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
    agent_log.setup(to_kernel_log=os.path.exists("/dev/kmsg") and not args.no_kernel_log)
    done = capture(Paths(config=args.config), from_rootfs=args.from_rootfs)
    if handed_over(done):
        return EXIT_HANDED_OVER
    if args.no_reboot_fallback:
        return EXIT_FAILURE
    last_resort()
    return EXIT_FAILURE


def _mkinitrd(args: argparse.Namespace) -> int:
    loaded = _load_or_report(args.config)
    if loaded is None:
        print(f"{args.config}: not building an initramfs from a config with errors", file=sys.stderr)
        return EXIT_BAD_CONFIG
    built = mkinitrd(loaded, output=Path(args.output), binary=args.binary, kver=args.kver,
                     kmoddir=args.kmoddir, dry_run=args.dry_run,
                     known_hosts_files=args.known_hosts or DEFAULT_KNOWN_HOSTS)
    if args.dry_run:
        if built.recorded_target:
            print(f"recorded target: {built.recorded_target.as_json()}")
        print(shlex.join([f"{k}={v}" for k, v in built.env.items()] + built.argv))
    return EXIT_OK


def _restore_raw(args: argparse.Namespace) -> int:
    device, path = args.device, args.path
    if device is None or path is None:
        loaded = _load_or_report(args.config)
        if loaded is None:
            return EXIT_BAD_CONFIG
        if device is None:
            if loaded.target is None or loaded.target.kind is not TargetKind.RAW:
                print(f"{loaded.source}: no raw target: nothing to restore")
                return EXIT_OK
            device = loaded.target.spec
        path = path or loaded.path
    result = restore_raw(device, path)
    print(result.message)
    return EXIT_FAILURE if result.outcome is RestoreOutcome.INCOMPLETE else EXIT_OK


def _states(args: argparse.Namespace) -> int:
    if args.mermaid:
        print(mermaid())
        return EXIT_OK
    if args.dot:
        print(dot())
        return EXIT_OK
    for here, outcome, after in table_rows():
        print(f"{here.value:<15} {outcome.value:<10} -> {after.value}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdump-agent", description="Save a Linux crash dump from the capture kernel.")
    parser.add_argument("--version", action="version", version=f"kdump-agent {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check-config", help="validate a kdump.conf",
                                description="Validate a kdump.conf: exit 0 with a summary, "
                                            "or exit 2 with FILE:LINE: message per error.")
    check.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH, help="the file to check")
    check.set_defaults(func=_check_config)

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

    build = commands.add_parser("mkinitrd", help="build the capture initramfs with dracut",
                                description="Validate the config, then build a capture initramfs "
                                            "with dracut and kdump-agent's dracut module.")
    build.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH)
    build.add_argument("-o", "--output", required=True, help="the initramfs to write")
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

    states = commands.add_parser("states", help="print the capture state machine's transitions")
    graph = states.add_mutually_exclusive_group()
    graph.add_argument("--mermaid", action="store_true", help="as a mermaid flowchart")
    graph.add_argument("--dot", action="store_true", help="as a Graphviz digraph")
    states.set_defaults(func=_states)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "capture":
        agent_log.setup(to_kernel_log=False)
    code: int = args.func(args)
    return code
