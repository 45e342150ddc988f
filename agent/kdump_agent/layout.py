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

import re
import time

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
# <ip>-<YYYY-MM-DD-HH:MM:SS>, and -N after it for a second dump in the same second
# (targets/directory.make_dump_dir). The ip is IPv4 or IPv6 (hex digits, dots and colons).
_DUMP_DIR = re.compile(r"([0-9A-Fa-f.:]+)-([0-9]{4}-[0-9]{2}-[0-9]{2}-[0-9]{2}:[0-9]{2}:[0-9]{2})"
                       r"(?:-([0-9]{1,6}))?")


def parse_dump_dir_name(name: str) -> tuple[str, str, int] | None:
    """(host address, `YYYY-MM-DD-HH:MM:SS`, suffix) of a dump directory's name, or None for
    any other name. The suffix is 1 for `<ip>-<stamp>`, N for `<ip>-<stamp>-N`."""
    match = _DUMP_DIR.fullmatch(name)
    if match is None:
        return None
    host, stamp, suffix = match.groups()
    try:
        time.strptime(stamp, "%Y-%m-%d-%H:%M:%S")
    except ValueError:
        return None
    number = int(suffix) if suffix else 1
    if suffix and (number < 2 or suffix.startswith("0")):
        return None
    return host, stamp, number
