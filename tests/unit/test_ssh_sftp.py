"""SFTP writes: every write's status counts, and records leave as few, large writes.

SftpRemote is given a scripted SFTP client (the request/reply plumbing of paramiko's
SFTPClient, answering as a server would), and fed a flattened stream as the collector writes
it; what the server was sent and which of its answers counts is read off the script.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from typing import Any, BinaryIO, cast

import paramiko
import pytest
from paramiko.message import Message
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_EXTENDED,
    CMD_EXTENDED_REPLY,
    CMD_HANDLE,
    CMD_OPEN,
    CMD_STATUS,
    CMD_WRITE,
    SFTP_FAILURE,
    SFTP_OK,
    SFTP_OP_UNSUPPORTED,
)

from kdump_agent import flat
from kdump_agent.ssh.remote import Progress
from kdump_agent.ssh.sftp import SftpRemote, write_size


def status(code: int, text: str = "") -> Message:
    message = Message()
    message.add_int(code)
    message.add_string(text)
    message.add_string("")
    return message


def limits(write_length: int) -> Message:
    """The server's limits@openssh.com answer: packet, read, write length, open handles."""
    message = Message()
    for value in (256 * 1024, 256 * 1024, write_length, 0):
        message.add_int64(value)
    return message


def handle() -> Message:
    message = Message()
    message.add_string(b"h1")
    return message


class ScriptedSftpClient:
    """SFTPClient's request/reply plumbing, answering like a server.

    Without a script every request succeeds: an open gets a handle, limits@openssh.com is
    answered when `write_length` is set (else refused, as by a server that does not know
    it), everything else gets OK. `statuses` overrides the answer to one request, named
    ("write", offset), ("close",) or (extension,). `newest_first` answers the requests in
    flight in reverse order, which a server may.
    """

    def __init__(self, write_length: int | None = None, newest_first: bool = False) -> None:
        self.write_length = write_length
        self.newest_first = newest_first
        self.statuses: dict[tuple[Any, ...], Message] = {}
        self.sent: list[tuple[int, tuple[Any, ...]]] = []
        self.waiting: list[tuple[Any, int, int, tuple[Any, ...]]] = []
        self.sock = self

    def recv_ready(self) -> bool:
        return False

    def _async_request(self, fileobj: Any, kind: int, *args: Any) -> int:
        self.sent.append((kind, args))
        number = len(self.sent)
        self.waiting.append((fileobj, number, kind, args))
        return number

    def _read_response(self, waitfor: int | None = None) -> None:
        fileobj, number, kind, args = self.waiting.pop(-1 if self.newest_first else 0)
        kind_out, message = self._answer(kind, args)
        fileobj._async_response(kind_out, Message(message.asbytes()), number)

    def _answer(self, kind: int, args: tuple[Any, ...]) -> tuple[int, Message]:
        name = {CMD_WRITE: lambda: ("write", int(args[1])), CMD_CLOSE: lambda: ("close",),
                CMD_EXTENDED: lambda: (args[0],)}.get(kind, lambda: (kind,))()
        if name in self.statuses:
            return CMD_STATUS, self.statuses[name]
        if kind == CMD_OPEN:
            return CMD_HANDLE, handle()
        if name == ("limits@openssh.com",):
            if self.write_length is None:
                return CMD_STATUS, status(SFTP_OP_UNSUPPORTED)
            return CMD_EXTENDED_REPLY, limits(self.write_length)
        return CMD_STATUS, status(SFTP_OK)

    def written(self) -> list[tuple[int, bytes]]:
        return [(int(args[1]), args[2]) for kind, args in self.sent if kind == CMD_WRITE]

    def requests(self) -> list[str]:
        """What was asked, in order: open, write, fsync@openssh.com, close..."""
        names = {CMD_OPEN: "open", CMD_WRITE: "write", CMD_CLOSE: "close"}
        return [args[0] if kind == CMD_EXTENDED else names.get(kind, str(kind)) for kind, args in self.sent]


def remote(client: ScriptedSftpClient) -> SftpRemote:
    return SftpRemote(cast(paramiko.SFTPClient, client))


class CollectorOutput(io.BytesIO):
    """makedumpfile's flattened stream; calls back when the reader reaches its end marker."""

    def __init__(self, records: list[tuple[int, bytes]], at_end: Callable[[], None] = lambda: None) -> None:
        header = struct.pack(">16sqq", b"makedumpfile", 1, 1).ljust(flat.HEADER_SIZE, b"\0")
        body = b"".join(struct.pack(">qq", offset, len(data)) + data for offset, data in records)
        super().__init__(header + body + flat.END_MARKER)
        self.end = len(header) + len(body)
        self.at_end = at_end
        self.name = "collector"

    def read(self, size: int | None = -1) -> bytes:
        if self.tell() == self.end:
            self.at_end()
        return super().read(size)


def receive(client: ScriptedSftpClient, stream: CollectorOutput) -> None:
    remote(client).receive(cast(BinaryIO, stream), "/var/crash/d/vmcore-incomplete", Progress("test"))


def test_sftp_write_failure_in_flight_is_reported_with_its_offset() -> None:
    client = ScriptedSftpClient(write_length=4)
    client.statuses[("write", 108)] = status(SFTP_FAILURE, "Failure")  # the third of three in flight
    with pytest.raises(OSError, match=r"^write at offset 108: Failure \(a full disk looks like this\)$"):
        receive(client, CollectorOutput([(100, b"abcdefghijkl")]))
    assert client.written() == [(100, b"abcd"), (104, b"efgh"), (108, b"ijkl")]


def test_sftp_replies_out_of_order_are_matched_by_request() -> None:
    client = ScriptedSftpClient(write_length=4, newest_first=True)
    client.statuses[("write", 0)] = status(SFTP_FAILURE, "disk on fire")  # answered after the others
    with pytest.raises(OSError, match="^write at offset 0: disk on fire$"):
        receive(client, CollectorOutput([(0, b"abcdefghijkl")]))


def test_sftp_finish_fsyncs_when_it_can_and_checks_the_close() -> None:
    client = ScriptedSftpClient()
    client.statuses[("fsync@openssh.com",)] = status(SFTP_OP_UNSUPPORTED)
    client.statuses[("close",)] = status(SFTP_FAILURE, "Input/output error")
    with pytest.raises(OSError, match="^close: Input/output error$"):
        remote(client).write_file("/d/f", b"x")
    assert client.requests() == ["limits@openssh.com", "open", "write", "fsync@openssh.com", "close"]


def test_sftp_adjacent_records_of_two_regions_leave_as_few_large_writes() -> None:
    client = ScriptedSftpClient(write_length=8)
    records = []
    for page in range(4):  # descriptors at 0.., data at 1000.., in turns, as makedumpfile writes
        records += [(page * 2, b"d%d" % page), (1000 + page * 3, b"P%d!" % page)]
    before_the_end: list[tuple[int, bytes]] = []
    receive(client, CollectorOutput(records, at_end=lambda: before_the_end.extend(client.written())))
    assert before_the_end == [(1000, b"P0!P1!P2"), (0, b"d0d1d2d3")]  # full writes leave at once
    assert sorted(client.written()) == [(0, b"d0d1d2d3"), (1000, b"P0!P1!P2"), (1008, b"!P3!")]


def test_sftp_a_record_overlapping_pending_data_is_sent_after_it() -> None:
    client = ScriptedSftpClient(write_length=64)
    # makedumpfile rewrites the header at the end: the later one wins
    receive(client, CollectorOutput([(0, b"old header"), (0, b"NEW")]))
    assert client.written() == [(0, b"old header"), (0, b"NEW")]


def test_sftp_write_size_fills_whole_channel_packets() -> None:
    assert write_size(None, 32768, b"1234") == 32768 - 64 - 25 - 4  # one packet, no tiny second
    big = write_size(261120, 32768, b"1234")  # OpenSSH's limit: 7 full packets
    assert big <= 261120 and (big + 25 + 4) % (32768 - 64) == 0
