"""An SFTP dump that survives a broken connection: the writer reconnects, reopens the same
file without truncating it, sends again what the server had not acknowledged, and the file
ends up as if nothing had happened; the Resumer bounds how long and how often it tries.

The connections are scripted SFTP clients (sftpscript.py) sharing one ScriptedServer, whose
files outlive them; each test breaks a connection at a chosen request.
"""

from __future__ import annotations

import io
import random
import struct
from collections.abc import Callable
from typing import BinaryIO, cast

import paramiko
import pytest
from paramiko.sftp import SFTP_FAILURE, SFTP_FLAG_TRUNC
from sftpscript import ScriptedServer, ScriptedSftpClient, status

from kdump_agent import flat
from kdump_agent.context import Capture, Paths
from kdump_agent.deadlines import deadline_for
from kdump_agent.errors import TransferError
from kdump_agent.machine import State
from kdump_agent.runner import Journal
from kdump_agent.ssh.remote import Progress, Received, Remote, keep_file
from kdump_agent.ssh.resume import FIRST_WAIT, LONGEST_WAIT, MAX_OUTAGES, RESUME_SECONDS, Refused, Resumer
from kdump_agent.ssh.sftp import MAX_IN_FLIGHT_BYTES, SftpRemote
from kdump_agent.targets.base import Interruption, Transfer
from kdump_agent.targets.sshdest import SshDestination
from kdump_agent.targets.sshserver import SshServer

PATH = "/var/crash/d/vmcore-incomplete"


def flattened(records: list[tuple[int, bytes]]) -> bytes:
    header = struct.pack(">16sqq", b"makedumpfile", 1, 1).ljust(flat.HEADER_SIZE, b"\0")
    body = b"".join(struct.pack(">qq", offset, len(data)) + data for offset, data in records)
    return header + body + flat.END_MARKER


def dump_records(seed: int = 3) -> list[tuple[int, bytes]]:
    """Like makedumpfile's: two regions written in turns, out of order, and the header at 0
    written first and rewritten last (the later one must win)."""
    rng = random.Random(seed)
    records = [(0, b"old header" * 100)]
    for page in range(200):
        records += [(4096 + page * 24, rng.randbytes(24)), (1 << 20 | page * 5000, rng.randbytes(5000))]
    records += [(rng.randrange(1 << 20, 2 << 20), rng.randbytes(30_000)) for _ in range(20)]
    return [*records, (0, b"KDUMP   " + rng.randbytes(992))]


def rebuilt(stream: bytes) -> bytes:
    """What the dump must be: the stream applied by our own reader (checked against makedumpfile
    -R by the integration tests)."""
    out = bytearray()

    def write_at(offset: int, data: bytes) -> None:
        if len(out) < offset:
            out.extend(bytes(offset - len(out)))
        out[offset:offset + len(data)] = data

    flat.reassemble(io.BytesIO(stream), write_at)
    return bytes(out)


class Connections:
    """Opens scripted connections to one server; each breaks at the request its script says:
    (break_after, done_at_break) or a request's name (break_on)."""

    def __init__(self, server: ScriptedServer, breaks: list[tuple[int, int] | str]) -> None:
        self.server = server
        self.breaks = list(breaks)  # for each next connection; the rest never break
        self.clients: list[ScriptedSftpClient] = []
        self.reasons: list[str] = []

    def open(self) -> SftpRemote:
        script = self.breaks.pop(0) if self.breaks else (None, 0)
        after, done = (None, 0) if isinstance(script, str) else script
        client = ScriptedSftpClient(write_length=8192, server=self.server, break_after=after,
                                    done_at_break=done, break_on=script if isinstance(script, str) else None)
        self.clients.append(client)
        return SftpRemote(cast(paramiko.SFTPClient, client))

    def reconnect(self, error: BaseException) -> Remote:
        self.reasons.append(str(error))
        return self.open()


def send(connections: Connections, stream: bytes) -> Received:
    first = connections.open()
    return first.receive(cast(BinaryIO, io.BytesIO(stream)), PATH, Progress("test"), connections.reconnect)


@pytest.mark.parametrize("break_after, done_at_break", [(5, 0), (40, 3), (41, 0), (150, 60)],
                         ids=["early", "replies-lost", "nothing-done", "deep"])
def test_sftp_connection_broken_mid_stream_resumes_and_leaves_the_same_file(
        break_after: int, done_at_break: int) -> None:
    server, stream = ScriptedServer(), flattened(dump_records())
    connections = Connections(server, [(break_after, done_at_break)])
    received = send(connections, stream)
    assert bytes(server.files[PATH]) == rebuilt(stream)
    assert received.size == len(rebuilt(stream)) and received.summary.stream_bytes == len(stream)
    (interruption,) = received.interruptions
    assert interruption.reason in ("Socket is closed", "Server connection dropped: ")  # as paramiko says
    assert interruption.resent > 0  # writes were in flight when it broke
    assert 0 <= interruption.at < len(rebuilt(stream))
    # the same file, created once, then reopened without truncating
    assert [(path, bool(flags & SFTP_FLAG_TRUNC)) for path, flags in server.opens] == [(PATH, True),
                                                                                      (PATH, False)]
    assert connections.clients[1].requests()[-2:] == ["fsync@openssh.com", "close"]


def test_sftp_acknowledged_bytes_are_not_sent_again() -> None:
    """`at` is what the server confirmed; everything after it, and only that, goes again."""
    server, stream = ScriptedServer(), flattened(dump_records())
    connections = Connections(server, [(60, 0)])
    received = send(connections, stream)
    (interruption,) = received.interruptions
    first, second = connections.clients
    sent_before = sum(len(data) for _, data in first.written())
    sent_after = sum(len(data) for _, data in second.written())
    payload = sum(len(data) for _, data in dump_records())
    # what went twice is exactly what was in flight, unacknowledged, when it broke
    assert interruption.resent == sent_before - interruption.at > 0
    assert sent_before + sent_after == payload + interruption.resent


def test_sftp_survives_several_breaks_including_one_during_fsync_and_close() -> None:
    server, stream = ScriptedServer(), flattened(dump_records(seed=9))
    connections = Connections(server, [(10, 2), (30, 5), "fsync@openssh.com", "close"])
    received = send(connections, stream)
    assert bytes(server.files[PATH]) == rebuilt(stream)
    assert len(received.interruptions) == 4
    assert [client.requests()[-1] for client in connections.clients] == [
        "write", "write", "fsync@openssh.com", "close", "close"]
    assert [flags & SFTP_FLAG_TRUNC for _, flags in server.opens[1:]] == [0, 0, 0, 0]
    assert [i.resent for i in received.interruptions[2:]] == [0, 0]  # all acknowledged by then


def test_sftp_a_connection_that_breaks_again_while_reopening_is_made_anew() -> None:
    server, stream = ScriptedServer(), flattened(dump_records())
    connections = Connections(server, [(20, 0), (2, 0)])  # the second breaks as it reopens the file
    received = send(connections, stream)
    assert bytes(server.files[PATH]) == rebuilt(stream)
    assert len(received.interruptions) == 1  # one outage, two reconnections
    assert len(connections.reasons) == 2


def test_sftp_unacknowledged_data_kept_for_resending_stays_bounded() -> None:
    records = [(offset, bytes([offset % 251]) * (1 << 20)) for offset in range(0, 64 << 20, 1 << 20)]
    client = ScriptedSftpClient(write_length=256 * 1024, server=ScriptedServer())
    SftpRemote(cast(paramiko.SFTPClient, client)).receive(
        cast(BinaryIO, io.BytesIO(flattened(records))), PATH, Progress("test"))
    assert client.most_waiting_bytes <= MAX_IN_FLIGHT_BYTES + 256 * 1024


def test_sftp_a_refusal_by_the_server_is_not_resumed() -> None:
    """A full disk answers "Failure": a new connection would get the same answer."""
    server = ScriptedServer()
    connections = Connections(server, [])
    first = connections.open()
    cast(ScriptedSftpClient, first.client).statuses[("write", 1 << 20)] = status(SFTP_FAILURE, "Failure")
    with pytest.raises(OSError, match=r"write at offset 1048576: Failure"):
        first.receive(cast(BinaryIO, io.BytesIO(flattened(dump_records()))), PATH, Progress("test"),
                      connections.reconnect)
    assert connections.reasons == []


def test_sftp_without_a_reconnect_a_broken_connection_fails_as_before() -> None:
    client = ScriptedSftpClient(write_length=8192, server=ScriptedServer(), break_after=20)
    with pytest.raises((paramiko.SSHException, OSError), match="Socket is closed|Server connection dropped"):
        SftpRemote(cast(paramiko.SFTPClient, client)).receive(
            cast(BinaryIO, io.BytesIO(flattened(dump_records()))), PATH, Progress("test"))


def test_sftp_file_that_lost_data_while_away_is_not_resumed_into() -> None:
    """Someone truncated the partial file meanwhile: resuming would leave a hole of zeros."""
    server, stream = ScriptedServer(), flattened(dump_records())
    connections = Connections(server, [(80, 0)])
    reopen = connections.reconnect

    def truncate_then_reconnect(error: BaseException) -> Remote:
        del server.files[PATH][100:]
        return reopen(error)

    first = connections.open()
    with pytest.raises(TransferError, match=rf"^{PATH} holds 100 bytes on the server, less than the \d+ "
                                            "acknowledged before the connection broke; cannot resume$"):
        first.receive(cast(BinaryIO, io.BytesIO(stream)), PATH, Progress("test"), truncate_then_reconnect)


@pytest.mark.parametrize("renamed_before_the_break", [True, False], ids=["reply-lost", "not-done"])
def test_sftp_a_break_at_the_rename_is_resumed_once_and_leaves_the_final_name(
        renamed_before_the_break: bool) -> None:
    server = ScriptedServer(files={PATH: bytearray(b"x" * 1000)})
    connections = Connections(server, [])
    first = connections.open()
    cast(ScriptedSftpClient, first.client).break_on = "posix-rename@openssh.com"
    cast(ScriptedSftpClient, first.client).done_at_break = 1 if renamed_before_the_break else 0
    final = PATH.replace("-incomplete", "")
    (interruption,) = keep_file(first, PATH, final, 1000, "root@dumps", connections.reconnect)
    assert server.files == {final: bytearray(b"x" * 1000)}
    assert (interruption.at, interruption.resent) == (1000, 0)
    assert connections.clients[1].requests().count("posix-rename@openssh.com") == (
        0 if renamed_before_the_break else 1)


def test_sftp_file_cut_short_keeps_its_partial_name() -> None:
    server = ScriptedServer(files={PATH: bytearray(b"x" * 10)})
    remote = Connections(server, []).open()
    with pytest.raises(TransferError, match=rf"^root@dumps: {PATH} holds 10 bytes instead of 1000 "):
        keep_file(remote, PATH, "/var/crash/d/vmcore", 1000, "root@dumps", None)
    assert list(server.files) == [PATH]


# The Resumer: how long and how often -----------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def resumer(clock: Clock, connect: Callable[[float], str], budget: float = RESUME_SECONDS,
            max_outages: int = MAX_OUTAGES) -> Resumer[str]:
    return Resumer(connect, "root@dumps", 20.0, budget=budget, max_outages=max_outages, sleep=clock.sleep,
                   clock=clock.time)


def test_resumer_retries_with_growing_waits_until_the_server_is_back() -> None:
    clock, timeouts = Clock(), []

    def connect(timeout: float) -> str:
        timeouts.append(timeout)
        if len(timeouts) < 6:
            raise TransferError("cannot connect to dumps port 22: Connection refused")
        return "connected"

    assert resumer(clock, connect)("root@dumps: writing x: the server closed the connection") == "connected"
    assert clock.sleeps == [FIRST_WAIT, 2 * FIRST_WAIT, 4 * FIRST_WAIT, 8 * FIRST_WAIT, 16 * FIRST_WAIT]
    assert max(clock.sleeps) <= LONGEST_WAIT
    assert timeouts[0] == 20.0  # each attempt has the connection's own timeout


def test_resumer_gives_up_within_its_budget_naming_both_errors() -> None:
    clock = Clock()

    def connect(timeout: float) -> str:
        clock.now += min(timeout, 3.0)  # each attempt takes a while to be refused
        raise TransferError("cannot connect to dumps port 22: Connection refused")

    with pytest.raises(TransferError, match=r"^root@dumps: writing x: the server closed the connection; "
                                            r"no new connection within 120 s \(\d+ attempts; the last: "
                                            r"cannot connect to dumps port 22: Connection refused\)$"):
        resumer(clock, connect)("root@dumps: writing x: the server closed the connection")
    assert clock.now - 1000.0 <= RESUME_SECONDS + 3.0


def test_resumer_budget_is_shared_by_every_outage_of_a_transfer() -> None:
    clock, down = Clock(), {"until": 0.0}

    def connect(timeout: float) -> str:
        if clock.now < down["until"]:
            raise TransferError("refused")
        return "connected"

    outages = resumer(clock, connect, budget=60.0)
    down["until"] = clock.now + 50.0
    outages("first")
    down["until"] = clock.now + 50.0
    with pytest.raises(TransferError, match="^second; no new connection within 60 s"):
        outages("second")


def test_resumer_stops_at_once_on_a_refusal_no_retry_mends() -> None:
    clock, attempts = Clock(), []

    def connect(timeout: float) -> str:
        attempts.append(timeout)
        raise Refused("root@dumps: HOST KEY MISMATCH: the server offers ...")

    with pytest.raises(TransferError, match="^broken; reconnecting refused: root@dumps: HOST KEY MISMATCH"):
        resumer(clock, connect)("broken")
    assert len(attempts) == 1 and clock.sleeps == []


def test_resumer_survives_a_bounded_number_of_breaks() -> None:
    outages = resumer(Clock(), lambda timeout: "connected", max_outages=2)
    assert outages("one") == outages("two") == "connected"
    with pytest.raises(TransferError, match="^three; the connection broke 3 times, more than the 2"):
        outages("three")


# What the record and the deadline make of it --------------------------------------------------

def test_transfer_record_lists_each_interruption() -> None:
    transfer = Transfer(path="/d/vmcore", size=10, records=2, stream_bytes=50, seconds=3.0, flattened=False,
                        sha256=None, interruptions=(Interruption(at=4096, seconds=1.23456, reason="reset",
                                                                 resent=512),))
    assert transfer.as_dict()["interruptions"] == [{"at": 4096, "seconds": 1.235, "reason": "reset",
                                                    "resent": 512}]
    assert Transfer(path="/d/vmcore", size=1, records=1, stream_bytes=1, seconds=0.1, flattened=False,
                    sha256=None).as_dict()["interruptions"] == []


def test_collect_deadline_of_an_ssh_dump_has_room_for_reconnecting() -> None:
    capture = Capture(paths=Paths(vmcore="/nonexistent"), journal=Journal())
    local = deadline_for(capture, State.COLLECT)
    capture.destination = SshServer(SshDestination("root", "dumps"))
    assert deadline_for(capture, State.COLLECT) - local == RESUME_SECONDS
