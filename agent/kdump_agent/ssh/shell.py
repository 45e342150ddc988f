"""The fallback for a server without the SFTP subsystem: POSIX commands over exec channels.

The dump cannot be rebuilt there with positioned writes, so the flattened stream itself is
passed through `cat` as it is read (still checked record by record, so a stream that stops
short is noticed); the connection names the file `vmcore.flat`, what RHEL leaves, for
`makedumpfile -R`. Every file is made under `umask 077`.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO, cast

import paramiko

from .. import flat
from .remote import ChannelDeadline, Progress, Received, Reconnect

STREAM_BUFFER = 256 * 1024  # bytes gathered before one channel write


class ShellRemote:
    """SftpRemote's operations as POSIX commands over exec channels, for servers without SFTP."""

    def __init__(self, transport: paramiko.Transport, timeout: float) -> None:
        self.transport = transport
        self.timeout = timeout

    def close(self) -> None:
        pass

    def makedirs(self, path: str) -> None:
        self._check(f"umask 077; mkdir -p -- {shlex.quote(path)}")

    def mkdir(self, path: str) -> bool:
        status, _, error = self._run(f"umask 077; mkdir -- {shlex.quote(path)}")
        if status == 0:
            return True
        if self.exists(path):
            return False
        raise OSError(_last_line(error) or f"mkdir exited {status}")

    def write_file(self, path: str, data: bytes) -> None:
        self._check(f"umask 077; cat > {shlex.quote(path)}", data)

    def rename(self, old: str, new: str) -> None:
        self._check(f"mv -f -- {shlex.quote(old)} {shlex.quote(new)}")

    def size(self, path: str) -> int:
        output = self._check(f"wc -c < {shlex.quote(path)}")
        try:
            return int(output.split()[0])
        except (IndexError, ValueError):
            raise OSError(f"cannot tell the size of {path}: wc printed {output[:80]!r}") from None

    def exists(self, path: str) -> bool:
        return self._run(f"test -e {shlex.quote(path)}")[0] == 0

    def receive(self, stream: BinaryIO, path: str, progress: Progress,
                reconnect: Reconnect | None = None) -> Received:
        """Pass the stream through `cat` as it is read (checked record by record).

        A stream that breaks off still ends `cat` cleanly, so the server keeps what arrived.
        A connection that breaks fails the dump whatever `reconnect` offers: what `cat` had
        received is unknown and the stream cannot be read again, so there is nothing to
        resume from.
        """
        command = f"umask 077; cat > {shlex.quote(path)}"
        channel = self._exec(command)
        try:
            tee = _Tee(stream, channel, progress)
            with self._explained(channel, command):
                try:
                    summary = flat.reassemble(cast(BinaryIO, tee), lambda offset, data: None)
                finally:
                    tee.flush()
            channel.shutdown_write()
            status, _, error = self._finish(channel)
            if status != 0:
                raise OSError(f"`{command}` exited {status}: {_last_line(error)}")
            return Received(summary, size=summary.stream_bytes, flattened=True,
                             sha256=tee.sha256.hexdigest())
        finally:
            channel.close()

    def _exec(self, command: str) -> paramiko.Channel:
        channel = self.transport.open_session(timeout=self.timeout)
        channel.settimeout(self.timeout)
        with ChannelDeadline(channel, self.timeout):
            channel.exec_command(command)
        return channel

    def _run(self, command: str, data: bytes = b"") -> tuple[int, bytes, bytes]:
        channel = self._exec(command)
        try:
            with self._explained(channel, command):
                channel.sendall(data)
            channel.shutdown_write()
            return self._finish(channel)
        finally:
            channel.close()

    @contextmanager
    def _explained(self, channel: paramiko.Channel, command: str) -> Iterator[None]:
        """Input for a command that already exited fails as "Socket is closed": say why it exited
        (`cat: write error: No space left on device`), and end its input on any other error."""
        try:
            yield
        except (OSError, EOFError) as error:
            if channel.closed or channel.exit_status_ready():
                status, _, stderr = self._finish(channel)
                raise OSError(f"`{command}` exited {status}: {_last_line(stderr) or error}") from error
            raise
        except BaseException:
            channel.shutdown_write()
            self._finish(channel)
            raise

    def _finish(self, channel: paramiko.Channel) -> tuple[int, bytes, bytes]:
        output = bytearray()
        while chunk := channel.recv(65536):
            output += chunk
        error = bytearray()
        while chunk := channel.recv_stderr(65536):
            error += chunk
        if not channel.status_event.wait(self.timeout):
            raise TimeoutError()
        return channel.recv_exit_status(), bytes(output), bytes(error)

    def _check(self, command: str, data: bytes = b"") -> bytes:
        status, output, error = self._run(command, data)
        if status != 0:
            raise OSError(f"`{command}` exited {status}: {_last_line(error)}")
        return output


class _Tee:
    """A readable stream that also sends what is read down a channel, in large writes."""

    def __init__(self, stream: BinaryIO, channel: paramiko.Channel, progress: Progress) -> None:
        self.stream = stream
        self.name = getattr(stream, "name", "flattened stream")
        self.channel = channel
        self.progress = progress
        self.sha256 = hashlib.sha256()
        self._pending = bytearray()

    def read(self, size: int) -> bytes:
        data = self.stream.read(size)
        self.sha256.update(data)
        self._pending += data
        if len(self._pending) >= STREAM_BUFFER:
            self.flush()
        return data

    def flush(self) -> None:
        if self._pending:
            self.channel.sendall(bytes(self._pending))
            self.progress.add(len(self._pending))
            self._pending.clear()


def _last_line(error: bytes) -> str:
    lines = error.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""
