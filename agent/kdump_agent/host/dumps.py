"""`kdump-agent dumps`: the dumps a target holds, newest first, their panics and repeats.

Wherever the dumps are (a directory here, an NFS export mounted read-only, an SSH
server: host/dumpstore.py), they are read through a `Store`, which lists and reads and
never writes. Only directories named as layout.py names them are dumps: anything else on
the target (restore-raw.partial, an admin's own directory) is not listed.

Each dump is read from its directory and its record (kdump-agent.json): complete when its
vmcore has its final name and the record does not say otherwise; the panic as the record's
`panic` object describes it. Dumps made before records had one are listed all the same,
as "panic unknown". A record that cannot be read (a capture cut short leaves the space
reserved for it, zeros) makes the dump "record unreadable", never an error of the listing.
Dumps whose panic signatures match are the same bug: each says how many earlier dumps share
its signature.
"""

from __future__ import annotations

import enum
import json
import logging
import posixpath
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from ..errors import KdumpError
from ..layout import FLAT_SUFFIX, MANIFEST, SUCCESS, VMCORE, DumpDirName, parse_dump_dir_name, partial

log = logging.getLogger("kdump-agent")

MANIFEST_LIMIT = 1 << 20  # a record is a few KiB; more is not one of ours
# The vmcore's names, the complete ones first: `vmcore.flat` is an SSH server's without SFTP.
COMPLETE_NAMES = (VMCORE, VMCORE + FLAT_SUFFIX)
PARTIAL_NAMES = (partial(VMCORE),)
PANIC_UNKNOWN = "panic unknown"


@dataclass(frozen=True)
class Entry:
    """A name in a directory of the target."""

    name: str
    is_dir: bool
    size: int
    mtime: float | None


class Store(Protocol):
    """Read-only access to the directory that holds the dump directories."""

    where: str  # for the admin: /var/crash, server:/export/crash, root@host:/var/crash

    def entries(self, path: str) -> list[Entry]:
        """The names in path ("" is the top), with type, size and mtime.

        Raises OSError or KdumpError (an SSH server's TransferError), as the others do."""
        ...

    def read_small(self, path: str, limit: int) -> bytes:
        """At most `limit` bytes of a file."""
        ...

    def sha256(self, path: str, size: int) -> str:
        """The file's sha256."""
        ...


class Verdict(enum.Enum):
    """`--verify`: the vmcore's sha256 recomputed against the record's."""

    OK = "OK"
    MISMATCH = "MISMATCH"
    NOT_HASHED = "NOT HASHED"  # the record has no sha256 for it (or there is no vmcore)
    UNREADABLE = "UNREADABLE"

    @property
    def failed(self) -> bool:
        return self in (Verdict.MISMATCH, Verdict.UNREADABLE)


@dataclass(frozen=True)
class Dump:
    """One dump directory, as its files and its record describe it."""

    directory: str
    name: DumpDirName
    complete: bool
    result: str | None  # the record's "result"; None without a readable record
    vmcore: str | None  # vmcore, vmcore.flat or vmcore-incomplete; None: no vmcore at all
    size: int | None
    recorded_sha256: str | None
    started: float | None  # epoch seconds: the record's `started`, else the directory's mtime
    panic: dict[str, Any] | None
    problem: str | None = None  # why the record or the directory could not be read
    repeats: int = 0  # earlier dumps with the same panic signature
    verdict: Verdict | None = None

    @property
    def signature(self) -> str | None:
        value = (self.panic or {}).get("signature")
        return value if isinstance(value, str) and value else None


def list_dumps(store: Store) -> list[Dump]:
    """Every dump directory of ours in the store, newest first, repeats counted."""
    dumps = []
    for entry in store.entries(""):
        name = parse_dump_dir_name(entry.name)
        if entry.is_dir and name is not None:
            dumps.append(read_dump(store, entry, name))
    dumps.sort(key=lambda dump: dump.name.sort_key())
    return list(reversed(count_repeats(dumps)))


def count_repeats(oldest_first: Sequence[Dump]) -> list[Dump]:
    """Each dump with the number of earlier ones that share its panic signature."""
    seen: Counter[str] = Counter()
    counted = []
    for dump in oldest_first:
        signature = dump.signature
        counted.append(replace(dump, repeats=seen[signature] if signature else 0))
        if signature:
            seen[signature] += 1
    return counted


def read_dump(store: Store, entry: Entry, name: DumpDirName) -> Dump:
    """One dump directory; what cannot be read is said in `problem`, never raised."""
    try:
        files = {each.name: each for each in store.entries(entry.name) if not each.is_dir}
    except (OSError, KdumpError) as error:
        return Dump(entry.name, name, False, None, None, None, None, entry.mtime, None,
                    problem=f"cannot list it: {error}")
    record, problem = _record(store, entry.name, files)
    vmcore = next((files[n] for n in (*COMPLETE_NAMES, *PARTIAL_NAMES) if n in files), None)
    result = record.get("result") if isinstance(record.get("result"), str) else None
    complete = vmcore is not None and vmcore.name in COMPLETE_NAMES and result in (None, SUCCESS)
    if record and result is None:
        complete = False  # a record that says nothing of the result vouches for nothing
    panic = record.get("panic")
    return Dump(
        directory=entry.name, name=name, complete=complete, result=result,
        vmcore=vmcore.name if vmcore else None, size=vmcore.size if vmcore else None,
        recorded_sha256=_recorded_sha256(record, vmcore.name) if vmcore else None,
        started=_started(record) or entry.mtime,
        panic=panic if isinstance(panic, dict) else None, problem=problem)


def _record(store: Store, directory: str, files: dict[str, Entry]) -> tuple[dict[str, Any], str | None]:
    """The record as a dict ({} without one) and why it could not be read, if so."""
    if MANIFEST not in files:
        return {}, None
    try:
        text = store.read_small(posixpath.join(directory, MANIFEST), MANIFEST_LIMIT).rstrip(b"\0 \n")
        if not text:  # the space reserved for it, never written: the capture ended first
            return {}, "no record written"
        record = json.loads(text)
    except (OSError, KdumpError, ValueError) as error:
        return {}, f"record unreadable: {error}"
    if not isinstance(record, dict):
        return {}, "record unreadable: not a JSON object"
    return record, None


def _recorded_sha256(record: dict[str, Any], name: str) -> str | None:
    files = record.get("files")
    for each in files if isinstance(files, list) else []:
        if isinstance(each, dict) and each.get("name") == name and isinstance(each.get("sha256"), str):
            return str(each["sha256"])
    return None


def _started(record: dict[str, Any]) -> float | None:
    started = record.get("started")
    if not isinstance(started, str):
        return None
    try:
        return datetime.strptime(started, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None


def verify(store: Store, dump: Dump) -> Dump:
    """The dump with its verdict: its vmcore hashed again and compared with the record."""
    if dump.vmcore is None or dump.recorded_sha256 is None or dump.size is None:
        return replace(dump, verdict=Verdict.NOT_HASHED)
    try:
        computed = store.sha256(posixpath.join(dump.directory, dump.vmcore), dump.size)
    except (OSError, KdumpError) as error:
        log.error("%s/%s/%s: %s", store.where, dump.directory, dump.vmcore, error)
        return replace(dump, verdict=Verdict.UNREADABLE)
    return replace(dump, verdict=Verdict.OK if computed == dump.recorded_sha256 else Verdict.MISMATCH)


def taken_since(dumps: Iterable[Dump], since: float) -> list[Dump]:
    """The dumps made after `since` (epoch seconds): the boot line's."""
    return [dump for dump in dumps if dump.started is not None and dump.started > since]


def describe_panic(dump: Dump) -> str:
    """`sysrq: "sysrq triggered crash" signature 3f2a...`, or "panic unknown"."""
    panic = dump.panic
    if panic is None:
        return PANIC_UNKNOWN
    kind = _text(panic.get("kind")) or "other"
    said = _text(panic.get("message")) or _text(panic.get("header")) or _text(panic.get("function"))
    words = [f"{kind}:", f'"{said}"' if said else "no panic message"]
    if dump.signature:
        words.append(f"signature {dump.signature}")
    return " ".join(words)


def _text(value: object) -> str | None:
    return " ".join(value.split()) if isinstance(value, str) and value.strip() else None


def state_word(dump: Dump) -> str:
    return "complete" if dump.complete else "incomplete"


def human_size(size: int | None) -> str:
    if size is None:
        return "no vmcore"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def display_date(name: DumpDirName) -> str:
    """`2024-05-01 10:22:33`, and `#2` for the second dump of that second."""
    day, _, clock = name.when.rpartition("-")
    return f"{day} {clock}" + (f" #{name.number}" if name.number > 1 else "")


def line(dump: Dump) -> str:
    """The dump as one line of `kdump-agent dumps`."""
    parts = [(f"{display_date(dump.name):<22} {dump.name.host:<15} {state_word(dump):<10} "
             f"{human_size(dump.size):>10}  {describe_panic(dump)}")]
    if dump.repeats:
        parts.append(f"same signature as {dump.repeats} earlier dump{'s' if dump.repeats > 1 else ''}")
    if dump.problem:
        parts.append(dump.problem)
    if dump.verdict is not None:
        parts.append(f"sha256 {dump.verdict.value}")
    return "; ".join(parts)


def as_json(dump: Dump, where: str) -> dict[str, object]:
    """The dump as one element of `kdump-agent dumps --json`."""
    return {
        "directory": posixpath.join(where, dump.directory), "date": dump.name.when,
        "host": dump.name.host, "complete": dump.complete, "result": dump.result,
        "vmcore": dump.vmcore, "size": dump.size, "panic": dump.panic, "signature": dump.signature,
        "same_signature_as": dump.repeats, "problem": dump.problem,
        **({"verify": dump.verdict.value} if dump.verdict is not None else {}),
    }


def summary(dump: Dump, where: str) -> str:
    """The dump in one line for status and the boot log: directory, state, panic."""
    return f"{posixpath.join(where, dump.directory)} ({state_word(dump)}): {describe_panic(dump)}"
