"""The dump applied on the server as pipelined, positioned SFTP writes, every reply checked.

paramiko's pipelined SFTPFile drops the status of writes still in flight when it closes,
and swallows the close's own error: exactly where a full disk shows. So writes, fsync and
close go through `_Sftp`, which keeps every request's reply and checks each one (it uses
two private SFTPClient methods; paramiko is pinned). Files are created 0600 and
directories 0700. SftpRemote works on the SFTPClient it is given, the seam where the
tests put a scripted server.

Every write keeps its data until the server acknowledged it, so when the connection breaks
mid-dump, what the server has not confirmed is still here, and `_ResumingFile` sends it
again over a new connection into the same file, reopened without truncating.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol, cast

import paramiko
from paramiko.message import Message
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_EXTENDED,
    CMD_EXTENDED_REPLY,
    CMD_HANDLE,
    CMD_OPEN,
    CMD_RENAME,
    CMD_STAT,
    CMD_STATUS,
    CMD_WRITE,
    SFTP_DESC,
    SFTP_FAILURE,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
    SFTP_NO_SUCH_FILE,
    SFTP_OK,
    SFTP_OP_UNSUPPORTED,
    int64,
)
from paramiko.sftp_attr import SFTPAttributes

from .. import flat
from ..errors import TransferError
from ..targets.base import Interruption
from .remote import (
    CONNECTION_ERRORS,
    Progress,
    Received,
    Reconnect,
    ServerAnswer,
    connection_lost,
    describe_error,
)

log = logging.getLogger("kdump-agent")

# The write size every SFTP server must take. A server that says it takes more (OpenSSH's
# limits@openssh.com: 256 KiB) gets writes of up to MAX_WRITE_SIZE: each write costs a
# request, a reply and Python work in paramiko, which is what limits the speed in a slow
# capture kernel, so fewer, larger writes go faster. Adjacent records are joined into one
# write. Writes are cut to fill whole SSH channel packets (paramiko puts at most the
# peer's packet size less 64 bytes in one), never leaving a few bytes for a packet of their
# own. Enough requests stay in flight to keep the server's 2 MiB window full; each keeps its
# data until the server acknowledged it, to be sent again over a new connection if the old
# one breaks, so the bytes in flight are bounded too (four times the window).
WRITE_SIZE = 32 * 1024
MAX_WRITE_SIZE = 256 * 1024
PIPELINE_DEPTH = 64
MAX_IN_FLIGHT_BYTES = 8 << 20
PENDING_RUNS = 4
_CHANNEL_PACKET_SLACK = 64  # what paramiko keeps free in each channel packet
_WRITE_OVERHEAD = 4 + 1 + 4 + 4 + 8 + 4  # SFTP write: length, type, id, handle length, offset, data length


class _SftpStatusError(ServerAnswer):
    """An SFTP request the server answered with an error status."""

    def __init__(self, code: int, text: str, what: str) -> None:
        name = SFTP_DESC[code] if 0 <= code < len(SFTP_DESC) else f"status {code}"
        vague = not text or text.lower() == name.lower()
        detail = name if vague else text
        # OpenSSH's sftp-server says a bare "Failure" for ENOSPC (and for EIO, EFBIG...).
        hint = " (a full disk looks like this)" if vague and code == SFTP_FAILURE else ""
        super().__init__(f"{what}: {detail}{hint}")
        self.code = code


class _Plumbing(Protocol):
    """The two private SFTPClient methods _Sftp uses (paramiko is pinned; a test covers them)."""

    def _async_request(self, fileobj: object, t: int, *args: object) -> int: ...
    def _read_response(self, waitfor: int | None = None) -> object: ...


class _Sftp:
    """SFTP requests whose every reply is kept and checked, several of them in flight.

    SFTPClient hands each reply to the object a request was sent with (`_async_response`);
    registering ourselves, we see the status of every write, not only the last one.
    """

    def __init__(self, client: paramiko.SFTPClient) -> None:
        self.client = client
        self._plumbing = cast(_Plumbing, client)
        self._replies: dict[int, tuple[int, Message]] = {}

    def _async_response(self, kind: int, message: Message, number: int) -> None:
        self._replies[number] = (kind, message)  # called by SFTPClient._read_response

    def send(self, kind: int, *args: object) -> int:
        return self._plumbing._async_request(self, kind, *args)

    def reply(self, number: int) -> tuple[int, Message]:
        while number not in self._replies:
            self._plumbing._read_response()
        return self._replies.pop(number)

    def ready(self) -> bool:
        return bool(self.client.sock.recv_ready())

    def call(self, kind: int, *args: object) -> tuple[int, Message]:
        return self.reply(self.send(kind, *args))

    def status(self, number: int, what: str) -> None:
        kind, message = self.reply(number)
        if kind != CMD_STATUS:
            raise paramiko.SFTPError(f"{what}: unexpected reply type {kind}")
        code, text = message.get_int(), message.get_text()
        if code != SFTP_OK:
            raise _SftpStatusError(code, text, what)


@dataclass
class _Run:
    """Contiguous data not sent yet, starting at offset."""

    offset: int
    data: bytearray = field(default_factory=bytearray)

    @property
    def end(self) -> int:
        return self.offset + len(self.data)


def write_size(server_limit: int | None, channel_packet: int, handle: bytes) -> int:
    """Data bytes per SFTP write: as many whole channel packets as the server's limit allows."""
    limit = min(server_limit or WRITE_SIZE, MAX_WRITE_SIZE)
    overhead = _WRITE_OVERHEAD + len(handle)
    per_packet = channel_packet - _CHANNEL_PACKET_SLACK
    packets = max(1, (limit + overhead) // per_packet)
    return max(1, min(limit, packets * per_packet - overhead))


@dataclass(frozen=True)
class _Write:
    """A write sent and not yet acknowledged: its data is kept until it is."""

    request: int
    offset: int
    data: bytes


class _SftpFile:
    """A remote file open for writing, with up to PIPELINE_DEPTH writes unacknowledged.

    makedumpfile writes its page descriptors and its page data to two regions of the file in
    turns, a few KiB at a time; data that continues a pending run (one per region, up to
    PENDING_RUNS) joins it, so the records leave as few, large writes. Data that overlaps
    anything pending seals everything pending, sent before it: a later record must win.

    What the server has not acknowledged is all here, in the order it must reach the file:
    the writes in flight, then the sealed runs, then the pending runs. If the connection
    breaks, a new _SftpFile opened `resume_from` this one takes it over and sends it first.
    """

    def __init__(self, sftp: _Sftp, path: str, server_limit: int | None = None, *,
                 resume_from: _SftpFile | None = None) -> None:
        self.sftp = sftp
        self.path = path
        attributes = SFTPAttributes()
        attributes.st_mode = 0o600  # created 0600 (OpenSSH's sftp-server honours it; umask too)
        flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | (0 if resume_from else SFTP_FLAG_TRUNC)
        kind, message = sftp.call(CMD_OPEN, path, flags, attributes)
        if kind == CMD_STATUS:
            code, text = message.get_int(), message.get_text()
            raise _SftpStatusError(code, text, "reopen" if resume_from else "create")
        if kind != CMD_HANDLE:
            raise paramiko.SFTPError(f"create: unexpected reply type {kind}")
        self.handle = message.get_binary()
        packet = getattr(sftp.client.sock, "out_max_packet_size", 0) or WRITE_SIZE
        self.write_size = write_size(server_limit, packet, self.handle)
        self._in_flight: deque[_Write] = deque()
        self.in_flight_bytes = 0
        self._sealed: deque[_Run] = deque()  # to be sent whole before the pending runs
        self._runs: list[_Run] = []  # pending data, oldest first, never overlapping
        self.acknowledged = 0  # payload bytes the server confirmed
        self.acknowledged_end = 0  # the end of the furthest write it confirmed
        self._closed = False
        if resume_from is not None:
            self.acknowledged = resume_from.acknowledged
            self.acknowledged_end = resume_from.acknowledged_end
            self._sealed.extend(_Run(write.offset, bytearray(write.data)) for write in resume_from._in_flight)
            self._sealed.extend(resume_from._sealed)
            self._runs = resume_from._runs

    def write_at(self, offset: int, data: bytes) -> None:
        self.absorb(offset, data)
        self.pump()

    def absorb(self, offset: int, data: bytes) -> None:
        """Take data into the pending runs; nothing is sent, so this cannot fail."""
        end = offset + len(data)
        if any(run.offset < end and offset < run.end for run in self._runs):
            self._sealed.extend(self._runs)
            self._runs = []
        run = next((run for run in self._runs if run.end == offset), None)
        if run is None:
            if len(self._runs) >= PENDING_RUNS:
                self._sealed.append(self._runs.pop(0))
            run = _Run(offset)
            self._runs.append(run)
        run.data += data

    def pump(self) -> None:
        """Send the sealed runs whole, then the full writes of the pending runs.

        A connection error may stop it anywhere: whatever was not sent stays where it was,
        whatever was sent is in flight, so pumping again (on a new connection) goes on.
        """
        while self._sealed:
            self._send(self._sealed[0], everything=True)
            self._sealed.popleft()
        for run in self._runs:
            self._send(run, everything=False)

    def _send(self, run: _Run, *, everything: bool) -> None:
        """Send a run in writes of write_size; keep a short tail unless told."""
        size, sent = self.write_size, 0
        try:
            while len(run.data) - sent >= size or (everything and sent < len(run.data)):
                piece = bytes(run.data[sent:sent + size])
                offset = run.offset + sent
                request = self.sftp.send(CMD_WRITE, self.handle, int64(offset), piece)
                self._in_flight.append(_Write(request, offset, piece))
                self.in_flight_bytes += len(piece)
                sent += len(piece)
                while self._in_flight and (len(self._in_flight) > PIPELINE_DEPTH
                                           or self.in_flight_bytes > MAX_IN_FLIGHT_BYTES
                                           or self.sftp.ready()):
                    self._settle_oldest()
        finally:
            del run.data[:sent]
            run.offset += sent

    def _settle_oldest(self) -> None:
        """Wait for the oldest write's status; only once it is OK may its data go."""
        write = self._in_flight[0]
        self.sftp.status(write.request, f"write at offset {write.offset}")
        self._in_flight.popleft()
        self.in_flight_bytes -= len(write.data)
        self.acknowledged += len(write.data)
        self.acknowledged_end = max(self.acknowledged_end, write.offset + len(write.data))

    def finish(self) -> None:
        """Wait for every write's status, flush the file to the server's disk, close it."""
        self._sealed.extend(self._runs)
        self._runs = []
        self.pump()
        while self._in_flight:
            self._settle_oldest()
        try:
            self.sftp.status(self.sftp.send(CMD_EXTENDED, "fsync@openssh.com", self.handle), "fsync")
        except _SftpStatusError as error:
            if error.code != SFTP_OP_UNSUPPORTED:
                raise
            log.info("the server cannot fsync %s (no fsync@openssh.com); relying on close", self.path)
        self._closed = True
        self.sftp.status(self.sftp.send(CMD_CLOSE, self.handle), "close")

    def forget(self) -> None:
        """After the connection broke: the handle went with it; nothing is sent."""
        self._closed = True

    def abandon(self) -> None:
        """After a failure: close the handle if the connection still works, else leave it."""
        if self._closed:
            return
        self._closed = True
        self._in_flight.clear()
        self._sealed.clear()
        self._runs.clear()
        with contextlib.suppress(*CONNECTION_ERRORS):  # if the connection is gone, so is the handle
            self.sftp.send(CMD_CLOSE, self.handle)


class _ResumingFile:
    """An _SftpFile that, given a Reconnect, survives the connection breaking under it.

    On a lost connection it reconnects, checks that the file on the server still holds what
    was acknowledged, reopens it without truncating, and hands the unacknowledged data to the
    new handle, to be sent first; the stream is not read meanwhile, so the collector waits on
    its pipe. Without a Reconnect, or for an error the server answered, the error goes on.
    """

    def __init__(self, remote: SftpRemote, path: str, reconnect: Reconnect | None) -> None:
        self.path = path
        self.reconnect = reconnect
        self.file = _SftpFile(remote.sftp, path, remote.write_limit)
        self.interruptions: list[Interruption] = []

    def write_at(self, offset: int, data: bytes) -> None:
        self.file.absorb(offset, data)
        self._guarded(lambda: self.file.pump())

    def finish(self) -> None:
        self._guarded(lambda: self.file.finish())

    def abandon(self) -> None:
        self.file.abandon()

    def _guarded(self, operation: Callable[[], None]) -> None:
        while True:
            try:
                operation()
                return
            except CONNECTION_ERRORS as error:
                if self.reconnect is None or not connection_lost(error):
                    raise
                self._resume(error)

    def _resume(self, error: BaseException) -> None:
        assert self.reconnect is not None
        lost, started, reason = self.file, time.monotonic(), describe_error(error)
        lost.forget()
        log.warning("the connection broke while writing %s (%s) with %d bytes acknowledged; reconnecting",
                    self.path, reason, lost.acknowledged)
        while True:
            remote = self.reconnect(error)
            if not isinstance(remote, SftpRemote):
                raise TransferError(f"{self.path}: the server offers no SFTP any more; cannot resume")
            try:
                self._check_kept(remote, lost)
                self.file = _SftpFile(remote.sftp, self.path, remote.write_limit, resume_from=lost)
                break
            except CONNECTION_ERRORS as again:
                if not connection_lost(again):
                    raise
                error = again
        interruption = Interruption(at=lost.acknowledged, seconds=time.monotonic() - started, reason=reason,
                                    resent=lost.in_flight_bytes)
        self.interruptions.append(interruption)
        log.warning("resumed %s after %.1f s at %d bytes acknowledged, sending %d bytes again",
                    self.path, interruption.seconds, interruption.at, interruption.resent)

    def _check_kept(self, remote: SftpRemote, lost: _SftpFile) -> None:
        """The file must still hold what the server acknowledged, or resuming would leave holes."""
        if not remote.exists(self.path):
            raise TransferError(f"{self.path} is gone from the server; cannot resume")
        size = remote.size(self.path)
        if size < lost.acknowledged_end:
            raise TransferError(f"{self.path} holds {size} bytes on the server, less than the "
                                f"{lost.acknowledged_end} acknowledged before the connection broke; "
                                "cannot resume")


class SftpRemote:
    """The Remote of a server with the SFTP subsystem, on the SFTP client given to it."""

    def __init__(self, client: paramiko.SFTPClient) -> None:
        self.client = client
        self.sftp = _Sftp(client)
        self.write_limit = self._write_limit()

    def _write_limit(self) -> int | None:
        """The largest write the server takes, if it says (OpenSSH's limits@openssh.com)."""
        kind, message = self.sftp.call(CMD_EXTENDED, "limits@openssh.com")
        if kind != CMD_EXTENDED_REPLY:
            return None  # a status: the server does not know the extension
        message.get_int64()  # max packet length
        message.get_int64()  # max read length
        return message.get_int64() or None

    def close(self) -> None:
        self.client.close()

    def makedirs(self, path: str) -> None:
        parts = [part for part in path.split("/") if part]
        current = "/" if path.startswith("/") else ""
        for part in parts:
            current = posixpath.join(current, part)
            try:
                self.client.stat(current)
            except FileNotFoundError:
                self.mkdir(current)  # False if made by someone else meanwhile: as good

    def mkdir(self, path: str) -> bool:
        try:
            self.client.mkdir(path, 0o700)
        except OSError as error:
            # SFTP reports an existing directory as a bare "Failure": look.
            try:
                self.client.stat(path)
            except FileNotFoundError:
                raise error from None
            return False
        self.client.chmod(path, 0o700)  # whatever the server's umask made of it
        return True

    def write_file(self, path: str, data: bytes) -> None:
        with self._open(path) as remote:
            remote.write_at(0, data)
            remote.finish()

    def receive(self, stream: BinaryIO, path: str, progress: Progress,
                reconnect: Reconnect | None = None) -> Received:
        """Apply the stream's records to path as positioned writes; flush and close it.

        With `reconnect`, a connection that breaks is made anew and the writes go on where
        the server's acknowledgements left off (_ResumingFile).
        """
        remote = _ResumingFile(self, path, reconnect)
        try:
            def write_at(offset: int, data: bytes) -> None:
                remote.write_at(offset, data)
                progress.add(len(data))

            try:
                summary = flat.reassemble(stream, write_at)
            except flat.FlatFormatError:
                remote.finish()  # keep what arrived, flushed: the admin may still use it
                raise
            remote.finish()
            return Received(summary, size=summary.end, flattened=False,
                            interruptions=tuple(remote.interruptions))
        finally:
            remote.abandon()

    @contextmanager
    def _open(self, path: str) -> Iterator[_SftpFile]:
        remote = _SftpFile(self.sftp, path, self.write_limit)
        try:
            yield remote
        finally:
            remote.abandon()

    def rename(self, old: str, new: str) -> None:
        try:
            self.sftp.status(self.sftp.send(CMD_EXTENDED, "posix-rename@openssh.com", old, new),
                             f"rename to {new}")
        except _SftpStatusError as error:
            if error.code != SFTP_OP_UNSUPPORTED:
                raise
            self.sftp.status(self.sftp.send(CMD_RENAME, old, new), f"rename to {new}")

    def size(self, path: str) -> int:
        """The file's size; a server's refusal (no such file...) is a ServerAnswer, so it is
        never taken for a broken connection, as paramiko's stat() errors could be."""
        kind, message = self.sftp.call(CMD_STAT, path)
        if kind == CMD_STATUS:
            code, text = message.get_int(), message.get_text()
            raise _SftpStatusError(code, text, f"stat {path}")
        if kind != CMD_ATTRS or not message.get_int() & SFTPAttributes.FLAG_SIZE:
            raise paramiko.SFTPError(f"stat {path}: no size in the reply (type {kind})")
        return int(message.get_int64())

    def exists(self, path: str) -> bool:
        try:
            self.size(path)
        except _SftpStatusError as error:
            if error.code == SFTP_NO_SUCH_FILE:
                return False
            raise
        return True

    # ---- rotation (keep_old_dumps, free_disk_size): listing, removal, free space

    def listdir(self, path: str) -> list[tuple[str, int, int]]:
        """(name, size, mode) of what is in path; OpenSSH's readdir reports lstat, so a link
        is a link."""
        return [(a.filename, int(a.st_size or 0), int(a.st_mode or 0))
                for a in self.client.listdir_attr(path)]

    def lstat_mode(self, path: str) -> int:
        return int(self.client.lstat(path).st_mode or 0)

    def read_head(self, path: str, limit: int) -> bytes:
        """At most limit bytes from the start of a (small) file."""
        with self.client.open(path, "rb") as remote:
            return bytes(remote.read(limit))

    def remove(self, path: str) -> None:
        self.client.remove(path)

    def rmdir(self, path: str) -> None:
        self.client.rmdir(path)

    def free_bytes(self, path: str) -> int | None:
        """f_bavail x f_frsize of the file system holding path (statvfs@openssh.com); None
        when the server does not offer the extension."""
        kind, message = self.sftp.call(CMD_EXTENDED, "statvfs@openssh.com", path)
        if kind != CMD_EXTENDED_REPLY:
            return None
        _bsize, frsize, _blocks, _bfree, bavail = (message.get_int64() for _ in range(5))
        return int(bavail * frsize)
