"""restore-raw: at the next normal boot, turn a dump left on a raw device into a vmcore.

For a `raw <dev>` target the capture kernel writes `makedumpfile -F` straight onto the
device: a flattened stream, no file system. This rebuilds it into the dump directory a
local dump would have had (`<path>/127.0.0.1-<date>/vmcore`, mode 0700, files 0600) and
records where it came from. Only once all that is on disk does it clear the device's first
block, so each dump is restored exactly once and never lost: whatever goes wrong before
that (an incomplete stream, a full disk) leaves the device as it was, to retry.

A restore that fails is retried at every boot (`kdump-agent start`), so a failure must not
pile up directories. The rule:

- The record headers are read first (seeking over the payloads): a file system under
  `path` without room for every record's payload plus the log and the record is refused
  before anything is written, with both sizes.
- The vmcore is rebuilt in one fixed directory, `<path>/restore-raw.partial`. Each try
  first removes what the one before left there: it is never more than the device holds.
- Complete, the vmcore moves into its dated dump directory and the partial one goes.
- A stream that ends early (an incomplete dump) keeps what was readable in
  `restore-raw.partial/vmcore-incomplete`, with its record, until the next try.
- A read or write error part-way (a disk that filled up after all) removes
  `restore-raw.partial`: the device still holds the whole dump.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import shutil
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .. import __version__, flat, system
from ..errors import CommandFailed, KdumpError
from ..layout import (
    DMESG,
    INCOMPLETE,
    LOCAL_HOST_ADDRESS,
    MANIFEST,
    MANIFEST_FORMAT,
    SUCCESS,
    VMCORE,
    dump_dir_name,
)
from ..layout import partial as partial_name
from ..targets.base import FileRecord
from ..targets.directory import make_dump_dir
from ..targets.raw import signature

log = logging.getLogger("kdump-agent")

DMESG_TIMEOUT = 300
PARTIAL_DIR_NAME = "restore-raw.partial"  # the one directory a restore works in
ROOM_FOR_LOG_AND_RECORD = 16 << 20  # vmcore-dmesg.txt and kdump-agent.json beside the vmcore
MIB = 1 << 20
_RECORD_HEADER = struct.Struct(">qq")  # flat.py's record header: offset, size


class Outcome(enum.Enum):
    """What restore_raw() found on the device; the CLI's exit status follows from it."""

    NOTHING = "nothing to restore"
    RESTORED = "restored"
    INCOMPLETE = "incomplete"


@dataclass(frozen=True)
class RestoreResult:
    """What restore_raw() did, with one line for the admin."""

    outcome: Outcome
    restored: Path | None  # the dump directory written; None when there was nothing
    message: str


def restore_raw(device: str, dump_root: str, *,
                clock: Callable[[], time.struct_time] = time.localtime) -> RestoreResult:
    """Rebuild the dump on device into a new directory under dump_root, then clear device.

    A device without the flattened signature is left alone: it holds nothing to restore,
    or (refused loudly) something blkid recognises that a misconfigured `raw` line must not
    destroy. An incomplete stream is kept as `vmcore-incomplete`, and the device is not
    cleared. The module docstring says what each failure leaves under dump_root.
    """
    root = Path(dump_root)
    try:
        with open(device, "rb") as stream:
            first_block = stream.read(flat.HEADER_SIZE)
            if not flat.is_flattened(first_block):
                return _not_a_dump(device)
            flat.check_header(first_block, device)
            _remove_partial(root)
            _require_room(device, root, _payload_bytes(stream.fileno()))
            partial = make_dump_dir(root, PARTIAL_DIR_NAME)
            stream.seek(0)
            log.info("restoring the dump on %s into %s", device, partial)
            try:
                summary = _rebuild(stream, partial / partial_name(VMCORE))
            except flat.FlatFormatError as error:
                return _keep_partial(device, partial, error)
            except OSError:
                _remove_partial(root)
                raise
        return _finish(device, root, partial, summary, clock())
    except OSError as error:
        raise KdumpError(f"restoring {device} into {dump_root} failed: {error}; "
                         f"{device} is left as it was") from error


def _remove_partial(root: Path) -> None:
    """Remove what an earlier try left in the partial directory: it never holds more than
    the device still does, and keeping it would pile up a copy per boot."""
    partial = root / PARTIAL_DIR_NAME
    if partial.exists() or partial.is_symlink():
        log.info("removing %s, left by an earlier restore", partial)
        shutil.rmtree(partial)  # refuses a symlink: only our own directory is removed


def _payload_bytes(fd: int) -> int:
    """The most the rebuilt vmcore can take on disk: every record's payload, up to the end
    marker or to where the stream stops being one, found by reading only record headers."""
    position, total = flat.HEADER_SIZE, 0
    while True:
        header = os.pread(fd, _RECORD_HEADER.size, position)
        if len(header) < _RECORD_HEADER.size or header == flat.END_MARKER:
            return total
        offset, size = _RECORD_HEADER.unpack(header)
        if offset < 0 or size <= 0 or offset + size > flat.MAX_DUMP_END:
            return total  # not a record: the rebuild stops here too (an incomplete dump)
        total += size
        position += _RECORD_HEADER.size + size


def _require_room(device: str, root: Path, payload: int) -> None:
    """Refuse before writing anything when the file system under root cannot hold the dump."""
    needed = payload + ROOM_FOR_LOG_AND_RECORD
    existing = next(path for path in (root, *root.parents) if path.exists())
    usage = os.statvfs(existing)
    free = usage.f_bavail * usage.f_frsize
    if free < needed:
        raise KdumpError(f"the dump on {device} needs {_mib(needed)} in {root}, which has {_mib(free)} "
                         f"free: make room there (or set `path` to a larger file system), then run "
                         f"kdump-agent restore-raw; {device} is left as it was")


def _mib(size: int) -> str:
    """Rounded up: a size just short of what is needed must not read as enough."""
    return f"{-(-size // MIB)} MiB"


def _not_a_dump(device: str) -> RestoreResult:
    found = signature(device)
    if found:
        raise KdumpError(f"{device} holds {found} (blkid), not a raw dump: refusing to touch it")
    log.info("%s holds no dump: nothing to restore", device)
    return RestoreResult(Outcome.NOTHING, None, f"{device}: nothing to restore")


def _rebuild(stream: BinaryIO, path: Path) -> flat.FlatSummary:
    """Reassemble into a new 0600 file and fsync it, also when the stream breaks off."""
    with open(path, "xb", opener=_private) as out:
        try:
            return flat.reassemble_to_file(stream, out.fileno())
        finally:
            os.fsync(out.fileno())


def _keep_partial(device: str, dump_dir: Path, error: flat.FlatFormatError) -> RestoreResult:
    """Record what was readable and leave the device alone: it may yet read better."""
    written = error.written or flat.FlatSummary()
    _write_manifest(dump_dir, device, written, [partial_name(VMCORE)], failure=str(error))
    message = (f"{error}; kept what was readable in {dump_dir / partial_name(VMCORE)} until the next try; "
               f"{device} is left as it was (restore-raw finds this dump again until its first "
               f"{flat.HEADER_SIZE} bytes are zeroed)")
    log.error("%s", message)
    return RestoreResult(Outcome.INCOMPLETE, dump_dir, message)


def _finish(device: str, root: Path, partial: Path, summary: flat.FlatSummary,
            when: time.struct_time) -> RestoreResult:
    """Move the complete dump into its dated directory, save its log and record, then clear
    the device."""
    dump_dir = make_dump_dir(root, dump_dir_name(LOCAL_HOST_ADDRESS, when))
    os.rename(partial / partial_name(VMCORE), dump_dir / VMCORE)
    os.rmdir(partial)
    system.fsync(dump_dir)
    system.fsync(root)
    notes = _save_dmesg(dump_dir)
    _write_manifest(dump_dir, device, summary, [DMESG, VMCORE], notes=notes)
    _clear(device, summary)
    message = (f"restored {summary.end} bytes ({summary.records} records) from {device} into "
               f"{dump_dir / VMCORE}; {device} cleared")
    log.info("%s", message)
    return RestoreResult(Outcome.RESTORED, dump_dir, message)


def _save_dmesg(dump_dir: Path) -> list[str]:
    """The crashed kernel's log beside the vmcore, as a local dump has it; notes on failure."""
    incomplete = dump_dir / partial_name(DMESG)
    try:
        system.run(["makedumpfile", "--dump-dmesg", str(dump_dir / VMCORE), str(incomplete)],
                   timeout=DMESG_TIMEOUT, stdout=None)
    except CommandFailed as error:
        log.warning("could not save the crashed kernel's log: %s; the vmcore is kept", error)
        return [f"{DMESG} not saved: {error}"]
    os.chmod(incomplete, 0o600)
    os.rename(incomplete, dump_dir / DMESG)
    return []


def _write_manifest(dump_dir: Path, device: str, summary: flat.FlatSummary, names: list[str], *,
                    failure: str | None = None, notes: list[str] | None = None) -> None:
    """kdump-agent.json for a restored dump: where it came from and how to check the copy."""
    document = {
        "format": MANIFEST_FORMAT,
        "result": INCOMPLETE if failure else SUCCESS,
        "failure": None if failure is None else {"reason": failure},
        "restored_from": device,
        "restored": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {"kdump_agent": __version__},
        "records": summary.records,
        "size": summary.end,
        "files": [{"name": record.name, "size": record.size, "sha256": record.sha256}
                  for record in (FileRecord.of(dump_dir / name) for name in names
                                 if (dump_dir / name).exists())],
        "notes": notes or [],
    }
    with open(dump_dir / MANIFEST, "x", opener=_private) as out:
        out.write(json.dumps(document, indent=2) + "\n")
        out.flush()
        os.fsync(out.fileno())
    system.fsync(dump_dir)


def _clear(device: str, summary: flat.FlatSummary) -> None:
    """Zero the stream's end marker, then its first block, syncing after each.

    Without its first block the device holds nothing to restore. The end marker goes first:
    a later dump cut short leaves this one's records behind its own, and they must not
    read as its complete ending.
    """
    end_marker_at = summary.stream_bytes - len(flat.END_MARKER)
    try:
        fd = os.open(device, os.O_WRONLY)  # no O_CREAT, no O_TRUNC: an image keeps its size
        try:
            for offset, size in ((end_marker_at, len(flat.END_MARKER)), (0, flat.HEADER_SIZE)):
                if os.pwrite(fd, bytes(size), offset) != size:
                    raise OSError(f"short write at byte {offset}")
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as error:
        raise KdumpError(f"the dump is saved, but clearing {device} failed: {error}; the next "
                         f"restore-raw would restore it again: clear its first "
                         f"{flat.HEADER_SIZE} bytes by hand") from error


def _private(path: str, flags: int) -> int:
    """open() opener: files in a dump directory are 0600, like the directory's 0700."""
    return os.open(path, flags, 0o600)
