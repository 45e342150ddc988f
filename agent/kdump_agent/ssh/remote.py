"""What the connection and its two ways of writing on the server (sftp.py, shell.py) share.

The connection picks one writer per server (SFTP if it has the subsystem, else `cat` over
exec channels) and from then on talks to it only through `Remote`. Both writers report
progress the same way, count the same errors as a lost connection, and open their
channels under the same deadline, so those live here, where each of them can import it.

A lost connection is not the same as a refusal: a server that answers "Failure" (a full
disk) is there and will say it again, while a connection that broke (a reset, an EOF, no
answer in time) may work again once made anew. `connection_lost` tells them apart, and a
writer given a `Reconnect` may go on over a new connection (sftp.py does; shell.py cannot:
the stream it had sent is gone), and `keep_file`, the size check and rename that end every
transfer, does the same after the stream.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO, Protocol

import paramiko

from .. import flat, system
from ..errors import TransferError
from ..targets.base import Interruption

# What paramiko and the socket raise when the connection or a request on it fails.
CONNECTION_ERRORS = (paramiko.SSHException, paramiko.SFTPError, OSError, EOFError)
PROGRESS_SECONDS = 5.0


class ServerAnswer(OSError):
    """The server answered a request with an error: the connection itself works."""


def connection_lost(error: BaseException) -> bool:
    """Whether error says the connection broke (worth a new one), not that the server refused.

    paramiko.SFTPError alone is a reply that made no sense, which a new connection would not mend.
    """
    return (isinstance(error, CONNECTION_ERRORS)
            and not isinstance(error, (ServerAnswer, paramiko.SFTPError)))


def describe_error(error: BaseException) -> str:
    """A connection error in a few words, for a message or the record."""
    if isinstance(error, EOFError):
        return "the server closed the connection"
    if isinstance(error, TimeoutError):
        return "no answer in time"
    return str(error) or type(error).__name__


@dataclass(frozen=True)
class Received:
    """What a remote made of the stream; the file still has its partial name."""

    summary: flat.FlatSummary
    size: int  # what the file must hold
    flattened: bool  # the stream itself, not the dump it describes
    sha256: str | None = None
    interruptions: tuple[Interruption, ...] = ()  # breaks the writer survived (sftp.py)


class Progress:
    """Bytes sent so far, shown on the console every few seconds (not in the kernel log)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.bytes = 0
        self.started = self.shown = time.monotonic()

    def add(self, count: int) -> None:
        self.bytes += count
        now = time.monotonic()
        if now - self.shown >= PROGRESS_SECONDS:
            self.shown = now
            mib = self.bytes / (1 << 20)
            rate = mib / (now - self.started)
            system.console_only(f"sent {mib:.0f} MiB to {self.where} ({rate:.1f} MiB/s)")


class Reconnect(Protocol):
    """Make a new connection after `error` broke the old one, and give its writer; raise
    TransferError when none can be made (SshTarget gives one, with bounded retries)."""

    def __call__(self, error: BaseException) -> Remote: ...


class Remote(Protocol):
    """The file operations SshTarget needs on the server, whichever way they are done."""

    def receive(self, stream: BinaryIO, path: str, progress: Progress,
                reconnect: Reconnect | None = None) -> Received: ...
    def makedirs(self, path: str) -> None: ...
    def mkdir(self, path: str) -> bool: ...  # False: it exists already
    def write_file(self, path: str, data: bytes) -> None: ...
    def rename(self, old: str, new: str) -> None: ...
    def size(self, path: str) -> int: ...
    def exists(self, path: str) -> bool: ...
    def close(self) -> None: ...


class ChannelDeadline:
    """paramiko waits for the answer to a channel request (exec, subsystem) with no timeout.

    If none comes in time, the channel is closed, which ends the wait; the error then says
    it was the server's silence (TimeoutError), not a refusal.
    """

    def __init__(self, channel: paramiko.Channel, timeout: float) -> None:
        self.channel = channel
        self.expired = threading.Event()
        self.timer = threading.Timer(timeout, self._expire)
        self.timer.daemon = True

    def _expire(self) -> None:
        self.expired.set()
        with contextlib.suppress(*CONNECTION_ERRORS):  # the waiter may close the transport first
            self.channel.close()

    def __enter__(self) -> None:
        self.timer.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.timer.cancel()
        if error is not None and self.expired.is_set():
            raise TimeoutError() from error


def check_size(remote: Remote, path: str, expected: int, where: str) -> None:
    """The server's word on the file's size: a full disk may have cut it short quietly."""
    size = remote.size(path)
    if size != expected:
        raise TransferError(f"{where}: {path} holds {size} bytes instead of {expected} "
                            "(is the server's disk full?); it keeps its partial name")


def keep_file(remote: Remote, partial: str, final: str, size: int, where: str,
              reconnect: Reconnect | None) -> tuple[Interruption, ...]:
    """Check the complete file's size and give it its final name.

    With `reconnect`, a connection that breaks meanwhile is made anew and the step done
    again, and a rename the server did before the break (its reply lost) counts as done.
    """
    interruptions: list[Interruption] = []
    while True:
        try:
            if interruptions and not remote.exists(partial) and remote.exists(final):
                check_size(remote, final, size, where)
            else:
                check_size(remote, partial, size, where)
                remote.rename(partial, final)
            return tuple(interruptions)
        except CONNECTION_ERRORS as error:
            if reconnect is None or not connection_lost(error):
                raise
            broke = time.monotonic()
            remote = reconnect(error)
            interruptions.append(Interruption(at=size, seconds=time.monotonic() - broke,
                                              reason=describe_error(error), resent=0))
