"""The dump directory as admins and their tools find it: its name, its files, their partial
names, and the record's format.

`<path>/<host-ip>-<YYYY-MM-DD-HH:MM:SS>/` is the name RHEL's tools and admins' scripts
expect: network targets use our address towards the server, local targets 127.0.0.1. A
file being written carries its partial name (`vmcore-incomplete`) until it is complete,
so a file with its final name is always whole.

This module imports nothing of the package: the capture's steps, the destinations,
restore-raw on the host and the tests all read the layout from here.
"""

from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass

LOCAL_HOST_ADDRESS = "127.0.0.1"

VMCORE = "vmcore"
DMESG = "vmcore-dmesg.txt"  # the crashed kernel's log, saved first
MANIFEST = "kdump-agent.json"  # the record: states, outcomes, files and their sha256
KEXEC_DMESG = "kexec-dmesg.log"  # the capture kernel's log
FLAT_SUFFIX = ".flat"  # an SSH server without SFTP keeps the flattened stream: vmcore.flat

MANIFEST_FORMAT = 1
# The record's "result".
SUCCESS = "success"
FAILURE = "failure"
INCOMPLETE = "incomplete"  # restore-raw: part of a raw dump was readable


def partial(name: str) -> str:
    """The name a file has while it is written: vmcore-incomplete, vmcore-dmesg-incomplete.txt."""
    stem, dot, suffix = name.partition(".")
    return f"{stem}-incomplete{dot}{suffix}"


def dump_dir_name(host_address: str, when: time.struct_time) -> str:
    """`<host-ip>-<YYYY-MM-DD-HH:MM:SS>`, the dump directory's name."""
    return f"{host_address}-{time.strftime('%Y-%m-%d-%H:%M:%S', when)}"


# Every name a file of a dump directory has, final or partial: a directory holding anything
# else is not a dump of ours, and rotation (rotation.py) leaves it alone.
DUMP_FILES = frozenset(name for final in (VMCORE, VMCORE + FLAT_SUFFIX, DMESG, MANIFEST, KEXEC_DMESG)
                       for name in (final, partial(final)))

_DUMP_DIR_NAME = re.compile(r"(?P<host>[0-9A-Fa-f.:]+)-(?P<when>\d{4}-\d{2}-\d{2}-\d{2}:\d{2}:\d{2})"
                            r"(?:-(?P<number>[2-9]|[1-9][0-9]+))?")


@dataclass(frozen=True)
class DumpDirName:
    """What a dump directory's name says: whose dump, when, and which of the same second."""

    host: str  # the <host-ip>
    when: str  # YYYY-MM-DD-HH:MM:SS, the capture kernel's local time
    number: int  # 1, or the -N suffix of a later dump in the same second

    def sort_key(self) -> tuple[str, int]:
        return self.when, self.number


def parse_dump_dir_name(name: str) -> DumpDirName | None:
    """The parts of `<host-ip>-<YYYY-MM-DD-HH:MM:SS>[-N]`; None for any other name, which is
    not a dump directory of ours (restore-raw.partial, an admin's own directory)."""
    match = _DUMP_DIR_NAME.fullmatch(name)
    if match is None:
        return None
    try:
        ipaddress.ip_address(match["host"])
        time.strptime(match["when"], "%Y-%m-%d-%H:%M:%S")
    except ValueError:
        return None
    return DumpDirName(match["host"], match["when"], int(match["number"] or 1))
