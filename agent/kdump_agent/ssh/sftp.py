"""The dump applied on the server as pipelined, positioned SFTP writes, every reply checked.

paramiko's pipelined SFTPFile drops the status of writes still in flight when it closes,
and swallows the close's own error: exactly where a full disk shows. So writes, fsync and
close go through `_Sftp`, which keeps every request's reply and checks each one (it uses
two private SFTPClient methods; paramiko is pinned). Files are created 0600 and
directories 0700. SftpRemote works on the SFTPClient it is given, the seam where the
tests put a scripted server.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol, cast

import paramiko
from paramiko.message import Message
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_EXTENDED,
    CMD_EXTENDED_REPLY,
    CMD_HANDLE,
    CMD_OPEN,
    CMD_RENAME,
    CMD_STATUS,
    CMD_WRITE,
    SFTP_DESC,
    SFTP_FAILURE,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
    SFTP_OK,
    SFTP_OP_UNSUPPORTED,
    int64,
)
from paramiko.sftp_attr import SFTPAttributes

from .. import flat
from .remote import CONNECTION_ERRORS, Progress, Received

log = logging.getLogger("kdump-agent")

# The write size every SFTP server must take. A server that says it takes more (OpenSSH's
# limits@openssh.com: 256 KiB) gets writes of up to MAX_WRITE_SIZE: each write costs a
# request, a reply and Python work in paramiko, which is what limits the speed in a slow
# capture kernel, so fewer, larger writes go faster. Adjacent records are joined into one
# write. Writes are cut to fill whole SSH channel packets (paramiko puts at most the
# peer's packet size less 64 bytes in one), never leaving a few bytes for a packet of their
# own. Enough requests stay in flight to keep the server's 2 MiB window full.
WRITE_SIZE = 32 * 1024
MAX_WRITE_SIZE = 256 * 1024
PIPELINE_DEPTH = 64
PENDING_RUNS = 4
_CHANNEL_PACKET_SLACK = 64  # what paramiko keeps free in each channel packet
_WRITE_OVERHEAD = 4 + 1 + 4 + 4 + 8 + 4  # SFTP write: length, type, id, handle length, offset, data length


class _SftpStatusError(OSError):
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


class _SftpFile:
    """A remote file open for writing, with up to PIPELINE_DEPTH writes unacknowledged.

    makedumpfile writes its page descriptors and its page data to two regions of the file in
    turns, a few KiB at a time; data that continues a pending run (one per region, up to
    PENDING_RUNS) joins it, so the records leave as few, large writes. Data that overlaps
    anything pending sends everything pending first: a later record must win.
    """

    def __init__(self, sftp: _Sftp, path: str, server_limit: int | None = None) -> None:
        self.sftp = sftp
        self.path = path
        attributes = SFTPAttributes()
        attributes.st_mode = 0o600  # created 0600 (OpenSSH's sftp-server honours it; umask too)
        kind, message = sftp.call(CMD_OPEN, path, SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC,
                                  attributes)
        if kind == CMD_STATUS:
            code, text = message.get_int(), message.get_text()
            raise _SftpStatusError(code, text, "create")
        if kind != CMD_HANDLE:
            raise paramiko.SFTPError(f"create: unexpected reply type {kind}")
        self.handle = message.get_binary()
        packet = getattr(sftp.client.sock, "out_max_packet_size", 0) or WRITE_SIZE
        self.write_size = write_size(server_limit, packet, self.handle)
        self._in_flight: deque[tuple[int, int]] = deque()  # (request, offset)
        self._runs: list[_Run] = []  # pending data, oldest first, never overlapping
        self._closed = False

    def write_at(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        if any(run.offset < end and offset < run.end for run in self._runs):
            self._send_all()
        run = next((run for run in self._runs if run.end == offset), None)
        if run is None:
            if len(self._runs) >= PENDING_RUNS:
                self._send(self._runs.pop(0), everything=True)
            run = _Run(offset)
            self._runs.append(run)
        run.data += data
        self._send(run, everything=False)

    def _send_all(self) -> None:
        while self._runs:
            self._send(self._runs.pop(0), everything=True)

    def _send(self, run: _Run, *, everything: bool) -> None:
        """Send a run in writes of write_size; keep a short tail unless told."""
        size, sent = self.write_size, 0
        while len(run.data) - sent >= size or (everything and sent < len(run.data)):
            piece = bytes(run.data[sent:sent + size])
            offset = run.offset + sent
            self._in_flight.append((self.sftp.send(CMD_WRITE, self.handle, int64(offset), piece), offset))
            sent += len(piece)
            while self._in_flight and (len(self._in_flight) > PIPELINE_DEPTH or self.sftp.ready()):
                self._settle_oldest()
        del run.data[:sent]
        run.offset += sent

    def _settle_oldest(self) -> None:
        number, offset = self._in_flight.popleft()
        self.sftp.status(number, f"write at offset {offset}")

    def finish(self) -> None:
        """Wait for every write's status, flush the file to the server's disk, close it."""
        self._send_all()
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

    def abandon(self) -> None:
        """After a failure: close the handle if the connection still works, else leave it."""
        if self._closed:
            return
        self._closed = True
        self._in_flight.clear()
        self._runs.clear()
        with contextlib.suppress(*CONNECTION_ERRORS):  # if the connection is gone, so is the handle
            self.sftp.send(CMD_CLOSE, self.handle)


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

    def receive(self, stream: BinaryIO, path: str, progress: Progress) -> Received:
        """Apply the stream's records to path as positioned writes; flush and close it."""
        with self._open(path) as remote:
            def write_at(offset: int, data: bytes) -> None:
                remote.write_at(offset, data)
                progress.add(len(data))

            try:
                summary = flat.reassemble(stream, write_at)
            except flat.FlatFormatError:
                remote.finish()  # keep what arrived, flushed: the admin may still use it
                raise
            remote.finish()
            return Received(summary, size=summary.end, flattened=False)

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
        return int(self.client.stat(path).st_size or 0)

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
