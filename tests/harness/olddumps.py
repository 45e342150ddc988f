"""A dump `path` pre-filled with old dumps and with things rotation must never touch.

The same set serves the rotation tests on a local directory, on an SSH server's directory
and on a QEMU guest's target disk (`make_disk(contents=...)`): complete and incomplete
dumps of this host, a dump of another host, a directory named like a dump that holds an
admin's file, a directory that is not named like a dump, a plain file and a symbolic link
named like dumps. Every one is older than any dump a test makes now.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kdump_agent.layout import DMESG, KEXEC_DMESG, MANIFEST, VMCORE, partial

OTHER_HOST = "10.0.0.7"
VMCORE_BYTES = 64 << 10


def names(host: str) -> dict[str, str]:
    """What each pre-filled entry is called, by role."""
    return {
        "oldest": f"{host}-2024-01-01-00:00:00",  # complete
        "incomplete": f"{host}-2024-02-01-00:00:00",  # vmcore-incomplete: goes first
        "middle": f"{host}-2024-03-01-00:00:00",  # complete
        "newest": f"{host}-2024-04-01-00:00:00-2",  # complete, a second dump in that second
        "other_host": f"{OTHER_HOST}-2023-01-01-00:00:00",  # complete, oldest of all, not ours
        "foreign_named": f"{host}-2023-06-01-00:00:00",  # named like a dump, holds notes.txt
        "foreign_dir": "keep-me",  # a directory with a vmcore in it, not named like a dump
        "plain_file": f"{host}-2023-07-01-00:00:00",  # a file, not a directory
        "link": f"{host}-2023-08-01-00:00:00",  # a symbolic link to the foreign directory
    }


# Oldest and incomplete first: what keep_old_dumps deletes, in order.
DELETION_ORDER = ("incomplete", "oldest", "middle", "newest")
OURS = frozenset(DELETION_ORDER)


def deleted_by_keep(keep: int) -> set[str]:
    """The roles keep_old_dumps `keep` deletes: this host keeps keep - 1 old dumps."""
    return set(DELETION_ORDER[:max(0, len(DELETION_ORDER) - (keep - 1))])


def _manifest(result: str) -> str:
    return json.dumps({"format": 1, "result": result,
                       "collector": {"argv": ["makedumpfile", "-l", "-d", "31", "/proc/vmcore"],
                                     "exit_code": 0 if result == "success" else 1}}) + "\n"


def _dump(directory: Path, *, complete: bool) -> None:
    directory.mkdir(mode=0o700)
    (directory / DMESG).write_text("old crashed kernel log\n")
    (directory / (VMCORE if complete else partial(VMCORE))).write_bytes(os.urandom(VMCORE_BYTES))
    (directory / MANIFEST).write_text(_manifest("success" if complete else "failure"))
    (directory / KEXEC_DMESG).write_text("old capture kernel log\n")


def fill(parent: Path, host: str) -> dict[str, str]:
    """Make the set in parent (created); returns names()."""
    parent.mkdir(parents=True, exist_ok=True)
    role = names(host)
    for key in ("oldest", "middle", "newest", "other_host"):
        _dump(parent / role[key], complete=True)
    _dump(parent / role["incomplete"], complete=False)
    _dump(parent / role["foreign_named"], complete=True)
    (parent / role["foreign_named"] / "notes.txt").write_text("the admin's analysis\n")
    (parent / role["foreign_dir"]).mkdir()
    (parent / role["foreign_dir"] / VMCORE).write_bytes(b"someone's vmcore")
    (parent / role["plain_file"]).write_text("not a directory\n")
    os.symlink(role["foreign_dir"], parent / role["link"])
    return role


def snapshot(parent: Path) -> dict[str, object]:
    """Every entry under parent (links not followed) with its kind and content, to compare."""
    seen: dict[str, object] = {}
    for path in sorted(parent.rglob("*")):
        relative = str(path.relative_to(parent))
        if path.is_symlink():
            seen[relative] = ("link", os.readlink(path))
        elif path.is_dir():
            seen[relative] = ("dir",)
        else:
            seen[relative] = ("file", path.read_bytes())
    return seen
