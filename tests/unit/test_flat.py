"""The flattened format, on streams built here byte by byte (struct, big-endian int64)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from kdump_agent.flat import (
    END_MARKER,
    HEADER_SIZE,
    MAX_DUMP_END,
    FlatFormatError,
    FlatSummary,
    is_flattened,
    iter_records,
    reassemble,
    reassemble_to_file,
)


def header(kind: int = 1, version: int = 1) -> bytes:
    return struct.pack(">16sqq", b"makedumpfile", kind, version).ljust(HEADER_SIZE, b"\0")


def record(offset: int, data: bytes) -> bytes:
    return struct.pack(">qq", offset, len(data)) + data


def flat_stream(*records: bytes, end: bool = True, after: bytes = b"") -> io.BytesIO:
    return io.BytesIO(header() + b"".join(records) + (END_MARKER if end else b"") + after)


def rebuild(stream: io.BytesIO) -> bytes:
    image = bytearray()

    def write_at(offset: int, data: bytes) -> None:
        image[len(image):offset] = bytes(max(0, offset - len(image)))
        image[offset:offset + len(data)] = data

    reassemble(stream, write_at)
    return bytes(image)


class Trickle(io.RawIOBase):
    """A pipe that hands out at most 3 bytes per read, as a slow pipe may."""

    def __init__(self, data: bytes) -> None:
        self.data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        chunk = self.data.read(min(3, len(buffer)))
        buffer[:len(chunk)] = chunk
        return len(chunk)


def test_is_flattened_wants_the_nul_padded_signature() -> None:
    assert is_flattened(header())
    assert not is_flattened(b"makedumpfileX" + bytes(100))
    assert not is_flattened(bytes(HEADER_SIZE))
    assert not is_flattened(b"")


def test_records_out_of_order_land_at_their_offsets() -> None:
    stream = flat_stream(record(8, b"world!!!"), record(0, b"hello, w"))
    assert rebuild(stream) == b"hello, wworld!!!"


def test_overlapping_records_the_later_one_wins() -> None:
    stream = flat_stream(record(0, b"aaaaaaaa"), record(2, b"BBB"), record(4, b"cc"))
    assert rebuild(stream) == b"aaBBccaa"


def test_gaps_read_as_zeros_in_the_rebuilt_file(tmp_path: Path) -> None:
    out = tmp_path / "vmcore"
    summary = reassemble_to_file(flat_stream(record(4096, b"x" * 10), record(10, b"yy")), out)
    data = out.read_bytes()
    assert len(data) == 4106 == summary.end
    assert data == bytes(10) + b"yy" + bytes(4084) + b"x" * 10


def test_summary_counts_records_payload_end_and_stream_length() -> None:
    stream = flat_stream(record(100, b"abc"), record(0, b"de"), after=b"leftovers")
    assert reassemble(stream, lambda offset, data: None) == FlatSummary(
        records=2, payload_bytes=5, end=103, stream_bytes=HEADER_SIZE + 16 + 3 + 16 + 2 + 16)


def test_a_big_record_comes_in_pieces_of_at_most_chunk_size() -> None:
    payload = bytes(range(256)) * 40  # 10240 bytes
    pieces = list(iter_records(flat_stream(record(1 << 20, payload)), chunk_size=4096))
    assert [(offset, len(data)) for offset, data in pieces] == [
        (1 << 20, 4096), ((1 << 20) + 4096, 4096), ((1 << 20) + 8192, 2048)]
    assert b"".join(data for _, data in pieces) == payload


def test_short_reads_from_a_pipe_are_joined() -> None:
    raw = header() + record(0, b"0123456789") + END_MARKER
    pieces = list(iter_records(Trickle(raw), chunk_size=8))  # type: ignore[arg-type]
    assert pieces == [(0, b"01234567"), (8, b"89")]


def test_trailing_garbage_after_the_end_marker_is_not_read() -> None:
    stale = record(-1, b"zz") + b"\x7f" * 100  # an invalid record, if it were read
    stream = flat_stream(record(0, b"new"), after=stale)
    assert rebuild(stream) == b"new"
    assert stream.tell() == HEADER_SIZE + 16 + 3 + 16


@pytest.mark.parametrize(("cut", "expected", "where"), [
    (0, b"aaaa", "after 1 records"),
    (7, b"aaaa", "inside the header of record 2"),
    (16 + 2, b"aabb", "2 bytes short of the 4-byte payload of record 2"),
], ids=["at-a-record-boundary", "inside-a-record-header", "inside-a-payload"])
def test_missing_end_marker_writes_what_was_readable_then_raises(
        tmp_path: Path, cut: int, expected: bytes, where: str) -> None:
    second = record(2, b"bbbb")
    stream = flat_stream(record(0, b"aaaa"), end=False, after=second[:cut])
    out = tmp_path / "vmcore-incomplete"
    with pytest.raises(FlatFormatError, match="no end marker: the dump is incomplete") as raised:
        reassemble_to_file(stream, out)
    assert where in str(raised.value)
    assert out.read_bytes() == expected
    assert raised.value.written is not None
    assert raised.value.written.end == len(expected)


@pytest.mark.parametrize(("first_block", "message"), [
    (b"KDUMP   " + bytes(4088), "not a flattened dump"),
    (bytes(HEADER_SIZE), "not a flattened dump"),
    (header(kind=2), "has type 2, expected 1"),
    (header(version=3), "has version 3, expected 1"),
], ids=["kdump-compressed", "zeros", "bad-type", "bad-version"])
def test_a_bad_header_is_refused_before_anything_is_written(first_block: bytes, message: str) -> None:
    writes: list[int] = []
    with pytest.raises(FlatFormatError, match=message):
        reassemble(io.BytesIO(first_block + record(0, b"data") + END_MARKER),
                   lambda offset, data: writes.append(offset))
    assert writes == []


def test_a_stream_shorter_than_the_header_is_refused() -> None:
    with pytest.raises(FlatFormatError, match="header cut short: 100 of 4096 bytes"):
        list(iter_records(io.BytesIO(header()[:100])))


@pytest.mark.parametrize(("offset", "size"), [
    (-5, 4), (0, -1), (MAX_DUMP_END, 1), (MAX_DUMP_END - 2, 3), (0, 0),
], ids=["negative-offset", "negative-size", "offset-beyond-bound", "end-beyond-bound", "empty"])
def test_a_record_makedumpfile_never_writes_is_refused_by_number_and_byte(offset: int, size: int) -> None:
    stream = flat_stream(record(0, b"good"), struct.pack(">qq", offset, size) + b"x" * 8)
    stream.name = "/dev/vdb"
    written: list[bytes] = []
    with pytest.raises(FlatFormatError,
                       match=f"^/dev/vdb: record 2 at byte {HEADER_SIZE + 20} is not a makedumpfile "
                             r"record .*the dump is incomplete$"):
        reassemble(stream, lambda offset, data: written.append(data))
    assert written == [b"good"]


def test_zeroed_space_after_a_cut_stops_the_read_at_once() -> None:
    stream = flat_stream(record(0, b"good"), end=False, after=bytes(64 << 20))
    with pytest.raises(FlatFormatError, match="record 2 at byte 4116"):
        reassemble(stream, lambda offset, data: None)
    assert stream.tell() == HEADER_SIZE + 20 + 16


def test_reassemble_to_file_replaces_an_older_longer_file(tmp_path: Path) -> None:
    out = tmp_path / "vmcore"
    out.write_bytes(b"stale" * 1000)
    reassemble_to_file(flat_stream(record(3, b"new")), out)
    assert out.read_bytes() == b"\0\0\0new"


def test_reassemble_to_file_on_a_descriptor_leaves_it_open(tmp_path: Path) -> None:
    with open(tmp_path / "vmcore", "wb") as out:
        reassemble_to_file(flat_stream(record(0, b"abc")), out.fileno())
        assert not out.closed
        out.seek(0, io.SEEK_END)
        out.write(b"!")
    assert (tmp_path / "vmcore").read_bytes() == b"abc!"
