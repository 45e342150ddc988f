"""A scripted SFTP client for the SFTP writer's unit tests: paramiko's request/reply plumbing
answering as a server would, and, given a ScriptedServer, applying what it is sent to files
that outlive one connection, so a test can break a connection and look at the file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    SFTP_FLAG_TRUNC,
    SFTP_NO_SUCH_FILE,
    SFTP_OK,
    SFTP_OP_UNSUPPORTED,
)
from paramiko.sftp_attr import SFTPAttributes


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


def handle(name: bytes) -> Message:
    message = Message()
    message.add_string(name)
    return message


@dataclass
class ScriptedServer:
    """The files a server holds across connections, and the flags of every open."""

    files: dict[str, bytearray] = field(default_factory=dict)
    opens: list[tuple[str, int]] = field(default_factory=list)

    def write(self, path: str, offset: int, data: bytes) -> None:
        content = self.files[path]
        if len(content) < offset:
            content.extend(bytes(offset - len(content)))
        content[offset:offset + len(data)] = data


class ScriptedSftpClient:
    """SFTPClient's request/reply plumbing, answering like a server.

    Without a script every request succeeds: an open gets a handle, limits@openssh.com is
    answered when `write_length` is set (else refused, as by a server that does not know
    it), everything else gets OK. `statuses` overrides the answer to one request, named
    ("write", offset), ("close",) or (extension,). `newest_first` answers the requests in
    flight in reverse order, which a server may.

    With a `server`, opens, writes and renames change its files as each request is answered,
    and stat answers from them. With
    `break_after` N, the connection breaks once the Nth request has been sent: the server
    carries out the first `done_at_break` requests still waiting (their replies are lost),
    drops the others, and every later send or wait raises what paramiko raises then. With
    `break_on` a request name, it breaks that way as that request is sent.
    """

    def __init__(self, write_length: int | None = None, newest_first: bool = False, *,
                 server: ScriptedServer | None = None, break_after: int | None = None,
                 done_at_break: int = 0, break_on: str | None = None) -> None:
        self.write_length = write_length
        self.newest_first = newest_first
        self.server = server
        self.break_after = break_after
        self.done_at_break = done_at_break
        self.break_on = break_on
        self.broken = False
        self.statuses: dict[tuple[Any, ...], Message] = {}
        self.sent: list[tuple[int, tuple[Any, ...]]] = []
        self.waiting: list[tuple[Any, int, int, tuple[Any, ...]]] = []
        self.most_waiting_bytes = 0
        self.handles: dict[bytes, str] = {}
        self.sock = self

    def recv_ready(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def _async_request(self, fileobj: Any, kind: int, *args: Any) -> int:
        if self.broken:
            raise OSError("Socket is closed")
        self.sent.append((kind, args))
        number = len(self.sent)
        self.waiting.append((fileobj, number, kind, args))
        self.most_waiting_bytes = max(self.most_waiting_bytes, sum(
            len(request[3][2]) for request in self.waiting if request[2] == CMD_WRITE))
        named = self.requests()[-1] == self.break_on
        if named or (self.break_after is not None and number >= self.break_after):
            for _, _, done_kind, done_args in self.waiting[:self.done_at_break]:
                self._answer(done_kind, done_args)
            self.waiting.clear()
            self.broken = True
        return number

    def _read_response(self, waitfor: int | None = None) -> None:
        if self.broken or not self.waiting:
            raise paramiko.SSHException("Server connection dropped: ")
        fileobj, number, kind, args = self.waiting.pop(-1 if self.newest_first else 0)
        kind_out, message = self._answer(kind, args)
        fileobj._async_response(kind_out, Message(message.asbytes()), number)

    def _answer(self, kind: int, args: tuple[Any, ...]) -> tuple[int, Message]:
        name = {CMD_WRITE: lambda: ("write", int(args[1])), CMD_CLOSE: lambda: ("close",),
                CMD_EXTENDED: lambda: (args[0],)}.get(kind, lambda: (kind,))()
        if name in self.statuses:
            return CMD_STATUS, self.statuses[name]
        if kind == CMD_OPEN:
            return CMD_HANDLE, handle(self._open(args[0], args[1]))
        if kind == CMD_STAT:
            return self._stat(args[0])
        if kind == CMD_RENAME or name == ("posix-rename@openssh.com",):
            self._rename(*args[-2:])
        if kind == CMD_WRITE and self.server is not None:
            self.server.write(self.handles[args[0]], int(args[1]), args[2])
        if name == ("limits@openssh.com",):
            if self.write_length is None:
                return CMD_STATUS, status(SFTP_OP_UNSUPPORTED)
            return CMD_EXTENDED_REPLY, limits(self.write_length)
        return CMD_STATUS, status(SFTP_OK)

    def _stat(self, path: str) -> tuple[int, Message]:
        if self.server is None or path not in self.server.files:
            return CMD_STATUS, status(SFTP_NO_SUCH_FILE, "No such file")
        message = Message()
        message.add_int(SFTPAttributes.FLAG_SIZE)
        message.add_int64(len(self.server.files[path]))
        return CMD_ATTRS, message

    def _rename(self, old: str, new: str) -> None:
        if self.server is not None:
            self.server.files[new] = self.server.files.pop(old)

    def _open(self, path: str, flags: int) -> bytes:
        name = b"h%d" % (len(self.handles) + 1)
        self.handles[name] = path
        if self.server is not None:
            self.server.opens.append((path, flags))
            if flags & SFTP_FLAG_TRUNC or path not in self.server.files:
                self.server.files[path] = bytearray()
        return name

    def written(self) -> list[tuple[int, bytes]]:
        return [(int(args[1]), args[2]) for kind, args in self.sent if kind == CMD_WRITE]

    def requests(self) -> list[str]:
        """What was asked, in order: open, write, fsync@openssh.com, close..."""
        names = {CMD_OPEN: "open", CMD_WRITE: "write", CMD_CLOSE: "close"}
        return [args[0] if kind == CMD_EXTENDED else names.get(kind, str(kind)) for kind, args in self.sent]
