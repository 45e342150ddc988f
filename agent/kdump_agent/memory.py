"""debug_mem_level: how much memory the capture kernel has left, at each state.

The seed article's knob for sizing crashkernel=. The reservation is spent first on the
unpacked initramfs and on the agent's own PyInstaller unpack (both in tmpfs, so counted in
Shmem, which is part of Cached), then on the agent and the collector. One line per state
shows the admin which step came closest to the edge:

    0  nothing
    1  MemFree, MemAvailable; the agent's VmRSS and VmHWM (its peak)
    2  and Buffers, Cached, Shmem; a running collector's VmRSS and VmHWM
    3  and Slab, SUnreclaim, KernelStack, PageTables; the five largest processes by VmRSS

Values are shown in MiB. The functions over text do the work, so they test on fixed /proc
contents; `snapshot` is the one reader.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

# The /proc/meminfo fields each level adds to the one below it.
LEVEL_FIELDS: tuple[tuple[str, ...], ...] = (
    (),
    ("MemFree", "MemAvailable"),
    ("Buffers", "Cached", "Shmem"),
    ("Slab", "SUnreclaim", "KernelStack", "PageTables"),
)
PROCESS_FIELDS: tuple[str, ...] = ("VmRSS", "VmHWM")
TOP_PROCESSES = 5

_KIB_LINE = re.compile(r"^([^:\s]+):\s+(\d+) kB$", re.MULTILINE)
_NAME_LINE = re.compile(r"^Name:\s*(.*)$", re.MULTILINE)


def parse_meminfo(text: str) -> dict[str, int]:
    """The `Field: N kB` lines of /proc/meminfo (or of /proc/<pid>/status), in KiB.

    Lines without the unit (HugePages_Total, Pid, ...) are counts, not sizes, and are left out.
    """
    return {name: int(value) for name, value in _KIB_LINE.findall(text)}


def report(level: int, meminfo_text: str, self_status_text: str,
           processes: list[tuple[str, int]] | None,
           collector_status_text: str | None = None) -> str | None:
    """The line for one state at this debug_mem_level, or None at level 0.

    `processes` is (label, VmRSS in KiB) for every process, used at level 3.
    `collector_status_text` is the running collector's /proc/<pid>/status, used from level 2.
    A field the kernel does not report is left out rather than shown as zero.
    """
    if level <= 0:
        return None
    fields = [name for names in LEVEL_FIELDS[1:level + 1] for name in names]
    parts = [_values(parse_meminfo(meminfo_text), fields),
             _process("agent", self_status_text)]
    if level >= 2 and collector_status_text is not None:
        parts.append(_process(f"collector {_name(collector_status_text)}", collector_status_text))
    if level >= 3 and processes:
        largest = sorted(processes, key=lambda process: process[1], reverse=True)[:TOP_PROCESSES]
        parts.append("largest VmRSS " + ", ".join(f"{label} {_mib(kib)}" for label, kib in largest))
    return "memory (MiB): " + "; ".join(part for part in parts if part)


def snapshot(level: int, proc: str = "/proc", collector_pid: int | None = None) -> str | None:
    """Read what `report` needs under proc and return its line (None at level 0).

    Never raises: an unreadable /proc costs this line, never the dump.
    """
    if level <= 0:
        return None
    try:
        meminfo = _read(os.path.join(proc, "meminfo"))
        self_status = _read(os.path.join(proc, "self", "status"))
        processes = _processes(proc) if level >= 3 else None
    except OSError as error:
        return f"memory: cannot read {error.filename}: {error.strerror}"
    collector = _status(proc, str(collector_pid)) if collector_pid is not None else None
    return report(level, meminfo, self_status, processes, collector)


def reading(path: str, field: str) -> int | None:
    """One `Field: N kB` value of a /proc file, in KiB, or None when it cannot be read.

    For the manifest's footprint: what the collector had free, what the agent peaked at.
    """
    try:
        return parse_meminfo(_read(path)).get(field)
    except OSError:
        return None


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def _values(values: dict[str, int], names: Sequence[str]) -> str:
    return ", ".join(f"{name} {_mib(values[name])}" for name in names if name in values)


def _process(label: str, status_text: str) -> str:
    """`label VmRSS x, VmHWM y`, or nothing when the status has neither (a kernel thread)."""
    values = _values(parse_meminfo(status_text), PROCESS_FIELDS)
    return f"{label} {values}" if values else ""


def _name(status_text: str) -> str:
    match = _NAME_LINE.search(status_text)
    return match.group(1) if match else "?"


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as file:
        return file.read()


def _status(proc: str, pid: str) -> str | None:
    """A process's status, or None when it has exited meanwhile."""
    try:
        return _read(os.path.join(proc, pid, "status"))
    except OSError:
        return None


def _processes(proc: str) -> list[tuple[str, int]]:
    """`(name[pid], VmRSS in KiB)` of every process with memory of its own.

    Kernel threads have no VmRSS and are left out; so is a process that exits while we look.
    """
    found: list[tuple[str, int]] = []
    for pid in filter(str.isdigit, os.listdir(proc)):
        status = _status(proc, pid)
        if status is None:
            continue
        rss = parse_meminfo(status).get("VmRSS")
        if rss is not None:
            found.append((f"{_name(status)}[{pid}]", rss))
    return found
