"""makedumpfile's flattened format: read it, and rebuild the dump it stands for.

`makedumpfile -F` writes to a stream (a pipe, a raw disk) what it would have written into a
seekable file: every write becomes a record that names its file offset. Applied in stream
order as positioned writes, the records rebuild exactly the file `makedumpfile -R` rebuilds.
Doing it here lets the destination be anything with positioned writes (a local file, an
SFTP file) and keeps memory to one chunk: this also runs in a capture kernel with ~100 MB.

Layout, every integer a big-endian int64:

    0      "makedumpfile" padded with NULs to 16 bytes, type = 1, version = 1, zeros to 4096
    4096   records: offset, size, then `size` bytes of payload; offsets are absolute, in any
           order, and may overlap (the later record wins); bytes no record covers read as 0
    ...    end marker: 16 bytes of 0xFF (offset = size = -1)

Whatever follows the end marker is not read: on a raw device it is an older dump's leftovers.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from .errors import KdumpError

HEADER_SIZE = 4096
SIGNATURE = b"makedumpfile"
END_MARKER = b"\xff" * 16
FLAT_TYPE = 1
FLAT_VERSION = 1
DEFAULT_CHUNK_SIZE = 1 << 20
# No dump reaches a pebibyte: a record that ends beyond it is corrupt or stale data.
MAX_DUMP_END = 1 << 50

_SIGNATURE_FIELD = SIGNATURE.ljust(16, b"\0")
_HEADER = struct.Struct(">16sqq")
_RECORD = struct.Struct(">qq")


@dataclass
class FlatSummary:
    """What reassemble() applied: enough to describe the file it rebuilt."""

    records: int = 0
    payload_bytes: int = 0
    end: int = 0  # the highest offset + size written: the rebuilt file's length
    stream_bytes: int = 0  # read from the stream, the end marker included: where it ended


class FlatFormatError(KdumpError):
    """The stream is not a flattened dump, or stops being one part-way.

    Raised out of reassemble(), `written` says what had been applied before the stream
    went wrong, so a caller that keeps the partial file can describe it.
    """

    written: FlatSummary | None = None


def is_flattened(first_block: bytes) -> bool:
    """Whether data starts with the flattened signature (its type and version unchecked)."""
    return first_block[: len(_SIGNATURE_FIELD)] == _SIGNATURE_FIELD


def check_header(header: bytes, source: str) -> None:
    """Raise FlatFormatError naming source unless header starts a stream we can read."""
    if not is_flattened(header):
        raise FlatFormatError(f"{source}: not a flattened dump (no {SIGNATURE.decode()!r} signature)")
    if len(header) < HEADER_SIZE:
        raise FlatFormatError(
            f"{source}: flattened header cut short: {len(header)} of {HEADER_SIZE} bytes")
    _, kind, version = _HEADER.unpack_from(header)
    if kind != FLAT_TYPE:
        raise FlatFormatError(f"{source}: flattened header has type {kind}, expected {FLAT_TYPE}")
    if version != FLAT_VERSION:
        raise FlatFormatError(
            f"{source}: flattened header has version {version}, expected {FLAT_VERSION}")


def iter_records(stream: BinaryIO, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[tuple[int, bytes]]:
    """Yield (offset, data) for every record's payload, in stream order, up to the end marker.

    A large record comes in pieces of at most chunk_size bytes with advancing offsets, so
    memory stays bounded whatever makedumpfile wrote. A stream that ends, or turns into
    something that is not a record, before the end marker raises FlatFormatError only
    after everything readable was yielded: the caller may keep the partial dump.
    """
    return _Reader(stream, chunk_size).pieces()


def reassemble(stream: BinaryIO, write_at: Callable[[int, bytes], None],
               chunk_size: int = DEFAULT_CHUNK_SIZE) -> FlatSummary:
    """Rebuild the dump by calling write_at(offset, data) for each piece, in stream order.

    write_at is any positioned write (os.pwrite on a local file, seek + write on an SFTP
    file); the order matters, since a later record overwrites an earlier one. A
    FlatFormatError carries what was applied before it in `written`.
    """
    reader = _Reader(stream, chunk_size)
    summary = FlatSummary()
    try:
        for offset, data in reader.pieces():
            write_at(offset, data)
            summary.records = reader.record
            summary.payload_bytes += len(data)
            summary.end = max(summary.end, offset + len(data))
    except FlatFormatError as error:
        error.written = summary
        raise
    finally:
        summary.stream_bytes = reader.position
    return summary


def reassemble_to_file(stream: BinaryIO, destination: str | os.PathLike[str] | int,
                       chunk_size: int = DEFAULT_CHUNK_SIZE) -> FlatSummary:
    """Rebuild the dump into a local file, as `makedumpfile -R destination < stream` would.

    A path is created or emptied (mode 0600 when new); an open descriptor is written as it
    is and left open. Either way the file is cut to the dump's end, also when the stream
    breaks off (the partial file then holds everything readable): no stale tail survives,
    and bytes no record covered read as zeros.
    """
    if isinstance(destination, int):
        return _reassemble_to_fd(stream, destination, chunk_size)
    fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        return _reassemble_to_fd(stream, fd, chunk_size)
    finally:
        os.close(fd)


def _reassemble_to_fd(stream: BinaryIO, fd: int, chunk_size: int) -> FlatSummary:
    def write_at(offset: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written

    try:
        summary = reassemble(stream, write_at, chunk_size)
    except FlatFormatError as error:
        assert error.written is not None, "reassemble() sets it"
        os.ftruncate(fd, error.written.end)
        raise
    os.ftruncate(fd, summary.end)
    return summary


class _Reader:
    """Walks one flattened stream; `record` and `position` say how far it got."""

    def __init__(self, stream: BinaryIO, chunk_size: int) -> None:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        self.stream = stream
        self.chunk_size = chunk_size
        self.source = _name(stream)
        self.record = 0  # the record being read, from 1
        self.position = 0  # stream bytes consumed

    def pieces(self) -> Iterator[tuple[int, bytes]]:
        """The work of iter_records()."""
        check_header(self._read(HEADER_SIZE), self.source)
        while True:
            self.record += 1
            start = self.position
            raw = self._read(_RECORD.size)
            if raw == END_MARKER:
                return
            if len(raw) < _RECORD.size:
                where = (f"inside the header of record {self.record}" if raw
                         else f"after {self.record - 1} records")
                raise _incomplete(f"{self.source}: stream ends at byte {self.position}, {where}")
            offset, size = _RECORD.unpack(raw)
            _check_record(self.source, self.record, start, offset, size)
            yield from self._payload(offset, size)

    def _payload(self, offset: int, size: int) -> Iterator[tuple[int, bytes]]:
        done = 0
        while done < size:
            data = self._read(min(self.chunk_size, size - done))
            if not data:
                raise _incomplete(f"{self.source}: stream ends at byte {self.position}, "
                                  f"{size - done} bytes short of the {size}-byte payload of "
                                  f"record {self.record}")
            yield offset + done, data
            done += len(data)

    def _read(self, size: int) -> bytes:
        """size bytes, or fewer only at the end of the stream (pipes return short reads)."""
        data = self.stream.read(size)
        while len(data) < size:
            more = self.stream.read(size - len(data))
            if not more:
                break
            data += more
        self.position += len(data)
        return data


def _check_record(source: str, number: int, position: int, offset: int, size: int) -> None:
    """Refuse what makedumpfile never writes: zeroed or stale space after a cut looks like this.

    makedumpfile -R refuses a record whose size is not positive too; without that rule a
    zeroed device would read as endless empty records.
    """
    if offset < 0 or size <= 0:
        problem = f"offset {offset}, size {size}"
    elif offset + size > MAX_DUMP_END:
        problem = f"offset {offset} + size {size} ends beyond {MAX_DUMP_END} bytes"
    else:
        return
    raise _incomplete(f"{source}: record {number} at byte {position} is not a makedumpfile "
                      f"record ({problem})")


def _incomplete(what: str) -> FlatFormatError:
    return FlatFormatError(f"{what}, no end marker: the dump is incomplete")


def _name(stream: BinaryIO) -> str:
    """What to call the stream in an error: its path when it has one."""
    name = getattr(stream, "name", None)
    if isinstance(name, str):
        return name
    if isinstance(name, int):
        return f"descriptor {name}"
    return "flattened stream"
