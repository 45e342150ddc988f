"""SFTP writes: every write's status counts, and records leave as few, large writes.

SftpRemote is given a scripted SFTP client (the request/reply plumbing of paramiko's
SFTPClient, answering as a server would), and fed a flattened stream as the collector writes
it; what the server was sent and which of its answers counts is read off the script.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from typing import BinaryIO, cast

import paramiko
import pytest
from paramiko.sftp import (
    SFTP_FAILURE,
    SFTP_OP_UNSUPPORTED,
)
from sftpscript import ScriptedSftpClient, status

from kdump_agent import flat
from kdump_agent.ssh.remote import Progress
from kdump_agent.ssh.sftp import SftpRemote, write_size


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
