"""Why the machine died, read from the crashed kernel's log: the manifest's `panic` object.

The input is what `makedumpfile --dump-dmesg` writes (`[   12.345678] message` lines); a
serial console capture reads the same. This module is pure (no I/O) and `parse` never
raises: a log it cannot read gives kind "other" and the raw panic line (or the last line)
as the message, because the dump matters more than its description.

The parts, in the order a kernel prints them:

- the report: the oops or BUG line that starts it (`header`), whose kind names what went
  wrong (page fault, general protection fault, BUG, lockup, hung task, OOM, machine check);
- the faulting function from `RIP: 0010:` (x86-64) or `pc : ` (arm64);
- `CPU: 0 PID: 123 Comm: bash Tainted: G        W  6.1.0 #1`: the task, taint, release;
- the call trace; frames marked `?` (x86-64's unreliable guesses) are left out;
- `Kernel panic - not syncing: <message>`.

The `signature` hashes the kind, the function and the top frames with offsets, addresses,
modules and compiler suffixes (`.cold`, `.constprop.0`) removed, so the same bug on two
machines (other addresses, pids, timestamps, builds of one source) has the same signature.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

KINDS = ("sysrq", "oops", "bug", "general_protection_fault", "page_fault", "soft_lockup",
         "hard_lockup", "hung_task", "machine_check", "out_of_memory", "watchdog", "other")
MAX_FRAMES = 8  # frames kept in the manifest
SIGNATURE_FRAMES = 5  # frames that go into the signature
SIGNATURE_HEX = 16

_STAMP = re.compile(r"^(?:<\d+>)?\[\s*\d+\.\d+\](?:\[\s*[TC]\d+\])?\s?")
_PANIC = re.compile(r"Kernel panic - not syncing: ?(?P<message>.*)")
_SYSRQ = re.compile(r"(?i)sysrq ?: Trigger a crash|sysrq triggered crash")
_CPU = re.compile(r"CPU: \d+ (?:UID: \d+ )?PID: (?P<pid>\d+) Comm: (?P<comm>.{1,20}?) "
                  r"(?:Kdump: loaded )?(?:Not tainted|Tainted: (?P<taint>[A-Z ]*?)) +"
                  r"(?P<release>\d\S*)")
_LINUX_VERSION = re.compile(r"Linux version (?P<release>\S+)")
_HUNG_TASK = re.compile(r"INFO: task (?P<comm>.+):(?P<pid>\d+) blocked for more than")
_X86_RIP = re.compile(r"^[RE]IP: [0-9a-f]{4}:(?P<where>.*)")
_ARM64_PC = re.compile(r"^(?:pc : |PC is at )(?P<where>\S+)")
_SYMBOL = re.compile(r"(?P<name>[A-Za-z_.$][\w.$]*)\+0x[0-9a-f]+/0x[0-9a-f]+"
                     r"(?: \[(?P<module>[\w-]+)(?: [0-9a-f]+)?\])?")
# x86-64 ` ? func+0x1/0x2 [mod]`, older `[<ffffffff81234567>] func+...`, arm64 ` func+... (P)`
_FRAME = re.compile(r"^(?:\[<[0-9a-f]+>\]\s+)*(?P<unreliable>\? )?" + _SYMBOL.pattern
                    + r"(?: \([A-Z]\))?\s*$")
_TRACE_START = re.compile(r"^Call [Tt]race:")
_TRACE_MARK = re.compile(r"^</?(?:TASK|IRQ|SOFTIRQ|NMI|#[A-Z]+|EOI)>$")
_TRACE_END = re.compile(r"^(?:</TASK>|Modules linked in|Code: |---\[ end|Kernel panic|Kernel Offset)")
_REGISTERS = re.compile(r"^(?:[RE]IP|[RE]SP|[RE]AX|[RE]DX|[RE]BP|R1[03]|FS|CS|CR2|DR[0-7]|PKRU|"
                        r"lr |sp |pc |x\d+|pstate)\b")
_NUMBERS = re.compile(r"0x[0-9a-f]+|[0-9a-f]{8,}|\d+")
_COMPILER_SUFFIX = re.compile(r"\.(?:cold|isra|constprop|part|lto_priv|llvm)(?:\.\d+)?")

# The reports a kernel starts before it panics, most specific first: the first that matches
# a line names its kind.
_HEADERS: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), kind) for p, kind in (
    (r"BUG: soft lockup", "soft_lockup"),
    (r"Watchdog detected hard LOCKUP|NMI watchdog: .*hard LOCKUP", "hard_lockup"),
    (r"INFO: task .+:\d+ blocked for more than", "hung_task"),
    (r"invoked oom-killer", "out_of_memory"),
    (r"Machine Check Exception|mce: \[Hardware Error\]", "machine_check"),
    (r"general protection fault", "general_protection_fault"),
    ((r"BUG: kernel NULL pointer dereference|BUG: unable to handle |"
     r"Unable to handle kernel |unable to handle kernel paging request"), "page_fault"),
    (r"kernel BUG at |BUG: ", "bug"),
    (r"^Oops|Internal error: Oops", "oops"),
))
# What the panic line itself says, which beats the report before it (an oops in a hung
# task's trace is still a hung task panic).
_MESSAGES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.IGNORECASE), kind) for p, kind in (
    (r"sysrq triggered crash", "sysrq"),
    (r"softlockup|soft lockup", "soft_lockup"),
    (r"hard lockup", "hard_lockup"),
    (r"hung_task|hung task", "hung_task"),
    (r"machine check|\bMCE\b", "machine_check"),
    (r"out of memory|deadlocked on memory", "out_of_memory"),
    (r"watchdog", "watchdog"),
))
# Frames that say how a panic or a report is printed, not where it happened.
_MACHINERY = frozenset({"dump_stack", "dump_stack_lvl", "__dump_stack", "show_stack", "show_regs",
                        "panic", "vpanic", "nmi_panic", "dump_header", "__warn", "report_bug",
                        "check_panic_on_oom"})
# Where a blocked task sleeps, whatever it waits for: a hung task's function is its caller.
_SLEEPING = re.compile(r"^(?:__schedule|schedule\w*|io_schedule\w*|preempt_schedule\w*)$")
# How deep a report is looked for its register dump, trace and task line.
_REPORT_LINES = 200
_SAME_REPORT_LINES = 25  # headers this close, with no trace between, are one report


@dataclass(frozen=True)
class _Report:
    """A crash report found in the log: where it starts and what kind it says."""

    line: int
    kind: str


def parse(log_text: str) -> dict[str, object]:
    """The `panic` object for the crashed kernel's log; never raises."""
    lines = [_STAMP.sub("", line).rstrip() for line in log_text.splitlines()]
    try:
        return _parse(lines)
    except Exception:  # noqa: BLE001 - a log we misread must never fail the dump
        return unreadable(lines)


def unreadable(lines: Sequence[str]) -> dict[str, object]:
    """What is said of a log we cannot read: kind other, the panic line or the last line."""
    panic_line = next((line for line in lines if _PANIC.search(line)), None)
    last = next((line for line in reversed(lines) if line.strip()), None)
    message = panic_line if panic_line is not None else last
    return _result(message=message.strip() if message else None, kind="other", header=None,
                   function=None, frames=[], taint=None, task=None, kernel=None)


def describe(panic: dict[str, object]) -> str:
    """One line for a listing: kind, message and signature (`kdump-agent dumps`)."""
    kind = panic.get("kind") or "other"
    message = panic.get("message") or panic.get("header") or "no panic message"
    signature = panic.get("signature") or "-"
    return f"{kind}: {message} [{signature}]"


def signature(kind: str, function: str | None, frames: Sequence[str], message: str | None = None) -> str:
    """A short hash of what identifies the bug, with what varies between machines removed.

    Without a function or frames, the message (its numbers masked) stands in for them, so
    two unreadable logs do not look like the same bug."""
    parts = [kind, _bare(function) if function else "", *(_bare(f) for f in frames[:SIGNATURE_FRAMES])]
    if not function and not frames:
        parts.append(_NUMBERS.sub("#", message or ""))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:SIGNATURE_HEX]


def _bare(symbol: str) -> str:
    """`out_of_memory.cold+0x67/0x7e [mod]` -> `out_of_memory`."""
    match = _SYMBOL.search(symbol)
    name = match.group("name") if match else symbol.split("+", 1)[0]
    return _COMPILER_SUFFIX.sub("", name)


def _parse(lines: list[str]) -> dict[str, object]:
    panic_at = next((i for i, line in enumerate(lines) if _PANIC.search(line)), None)
    before = lines if panic_at is None else lines[:panic_at]
    sysrq_at = next((i for i, line in enumerate(before) if _SYSRQ.search(line)), None)
    message = None
    if panic_at is not None:
        found = _PANIC.search(lines[panic_at])
        message = found.group("message").strip() or None if found else None
    message_kind = "sysrq" if sysrq_at is not None else _message_kind(message)
    report = _find_report(before, message_kind, after=sysrq_at or 0)
    if report is None and panic_at is None:
        return unreadable(lines)
    kind = message_kind or (report.kind if report else "other")
    start = report.line if report else panic_at
    assert start is not None, "either a report or a panic line"

    cpu = _first(_CPU, lines[start:start + _REPORT_LINES]) or _first(_CPU, lines)
    task: dict[str, object] | None = None
    if cpu:
        task = {"comm": cpu.group("comm"), "pid": int(cpu.group("pid"))}
    hung = _HUNG_TASK.search(lines[start]) if report and report.kind == "hung_task" else None
    if hung:  # the task the report is about, not khungtaskd that panicked
        task = {"comm": hung.group("comm"), "pid": int(hung.group("pid"))}
    version = _first(_LINUX_VERSION, lines)
    kernel = cpu.group("release") if cpu else (version.group("release") if version else None)
    taint = (cpu.group("taint") or "").strip() or None if cpu else None

    trace_at, frames = _trace(lines, start)
    if hung:
        frames = _after(frames, lambda name: bool(_SLEEPING.match(name)))
    function = _faulting_function(lines[start:trace_at]) if report else None
    if function is None and frames:
        function = frames[0]
    return _result(message=message, kind=kind, header=lines[start].strip() if report else None,
                   function=function, frames=frames[:MAX_FRAMES], taint=taint, task=task,
                   kernel=kernel)


def _result(*, message: str | None, kind: str, header: str | None, function: str | None,
            frames: list[str], taint: str | None, task: dict[str, object] | None,
            kernel: str | None) -> dict[str, object]:
    return {"message": message, "kind": kind, "header": header, "function": function,
            "frames": frames, "taint": taint, "task": task, "kernel": kernel,
            "signature": signature(kind, function, frames, message)}


def _first(pattern: re.Pattern[str], lines: Sequence[str]) -> re.Match[str] | None:
    return next((m for m in map(pattern.search, lines) if m), None)


def _report_kind(line: str) -> str | None:
    return next((kind for pattern, kind in _HEADERS if pattern.search(line)), None)


def _message_kind(message: str | None) -> str | None:
    if message is None:
        return None
    return next((kind for pattern, kind in _MESSAGES if pattern.search(message)), None)


def _find_report(before: list[str], kind: str | None, after: int) -> _Report | None:
    """The report the panic ends, taken from its first line ("BUG: kernel NULL pointer
    dereference" rather than the "Oops:" line after it).

    It is the last report before the panic line; of the panic's own kind when the panic
    line names one (an earlier warning in the log is not why the machine died); after the
    sysrq line for sysrq-c (older kernels oopsed for it); none when no report fits.
    """
    found = [_Report(i, k) for i in range(after, len(before)) if (k := _report_kind(before[i]))]
    if kind not in (None, "sysrq"):
        found = [r for r in found if r.kind == kind]
    if not found:
        return None
    chosen = found[-1]
    for earlier in reversed(found[:-1]):
        between = before[earlier.line:chosen.line]
        if chosen.line - earlier.line > _SAME_REPORT_LINES or any(
                _TRACE_START.match(line.strip()) for line in between):
            break
        # "Oops:" only continues a report that already said what it is.
        chosen = _Report(earlier.line, chosen.kind if earlier.kind == "oops" else earlier.kind)
    return chosen


def _faulting_function(registers: Sequence[str]) -> str | None:
    """The symbol of the report's first kernel RIP (a user RIP is a bare address) or arm64
    pc, from the lines before its call trace."""
    for line in registers:
        match = _X86_RIP.match(line.strip()) or _ARM64_PC.match(line.strip())
        symbol = _SYMBOL.search(match.group("where")) if match else None
        if symbol:
            return symbol.group(0)
    return None


def _trace(lines: list[str], start: int) -> tuple[int, list[str]]:
    """Where the first call trace at or after `start` begins, and its frames, with the
    machinery and the `?` guesses left out. Without a trace: (start + _REPORT_LINES, [])."""
    limit = min(len(lines), start + _REPORT_LINES)
    begin = next((i for i in range(start, limit) if _TRACE_START.match(lines[i].strip())), None)
    if begin is None:
        return limit, []
    frames: list[str] = []
    for line in lines[begin + 1:]:
        text = line.strip()
        if _TRACE_END.match(text):
            break
        frame = _FRAME.match(text)
        if frame:
            if not frame.group("unreliable"):
                frames.append(text[frame.start("name"):].split(" (", 1)[0])
            continue
        if frames and not (_TRACE_MARK.match(text) or _REGISTERS.match(text) or not text):
            break
    return begin, _after(frames, lambda name: name in _MACHINERY)


def _after(frames: list[str], skip: Callable[[str], bool]) -> list[str]:
    """The frames from the first one whose bare name `skip` does not accept."""
    for i, frame in enumerate(frames):
        if not skip(_bare(frame)):
            return frames[i:]
    return frames
