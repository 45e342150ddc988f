"""Reading the server's dump directories, never writing: what `kdump-agent dumps` needs.

A `Browser` works on an SFTP session of its own, beside the one the dump is written
through (sftp.py), so nothing here can change a writer's state. It lists directories,
reads small files (the record) and hashes a vmcore: `sha256sum` on the server when it has
one (the file does not cross the network), else read over SFTP and hashed here. Every
request waits at most the connection's timeout; a hash on the server gets longer, in
proportion to the file's size. paramiko's errors pass through: the connection
(connection.py) turns them into TransferError.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import stat
from dataclasses import dataclass

import paramiko

from .remote import ChannelDeadline

READ_CHUNK = 256 * 1024
# What a server's sha256sum is given per byte, beyond the usual timeout: a slow disk
# reads 20 MiB/s; the wait is a deadline, not an estimate.
HASH_BYTES_PER_SECOND = 20 << 20
_SHA256 = re.compile(rb"([0-9a-f]{64})\b")


@dataclass(frozen=True)
class Entry:
    """One name in a directory on the server."""

    name: str
    is_dir: bool
    size: int
    mtime: float | None


class Browser:
    """A read-only view of the server's files through one SFTP session."""

    def __init__(self, transport: paramiko.Transport, timeout: float) -> None:
        self.transport = transport
        self.timeout = timeout
        channel = transport.open_session(timeout=timeout)
        channel.settimeout(timeout)
        try:
            with ChannelDeadline(channel, timeout):
                channel.invoke_subsystem("sftp")
        except BaseException:
            channel.close()
            raise
        self.client = paramiko.SFTPClient(channel)

    def close(self) -> None:
        self.client.close()

    def listdir(self, path: str) -> list[Entry]:
        """The names in path with their type, size and modification time (no `.`, `..`)."""
        return [Entry(attributes.filename, stat.S_ISDIR(attributes.st_mode or 0),
                      int(attributes.st_size or 0),
                      None if attributes.st_mtime is None else float(attributes.st_mtime))
                for attributes in self.client.listdir_attr(path)]

    def sha256(self, path: str, size: int) -> str:
        """The file's sha256, computed on the server if it can, else here from an SFTP read."""
        computed = self._sha256sum(path, size)
        if computed is not None:
            return computed
        digest = hashlib.sha256()
        with self.client.open(path, "rb") as remote:
            remote.prefetch(size)
            while chunk := remote.read(READ_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def _sha256sum(self, path: str, size: int) -> str | None:
        """`sha256sum` over an exec channel; None when the server cannot run it."""
        wait = self.timeout + size / HASH_BYTES_PER_SECOND
        channel = self.transport.open_session(timeout=self.timeout)
        try:
            channel.settimeout(wait)
            try:
                with ChannelDeadline(channel, self.timeout):
                    channel.exec_command(f"sha256sum -- {shlex.quote(path)}")
            except paramiko.SSHException:
                return None  # exec refused (an SFTP-only account)
            output = bytearray()
            while chunk := channel.recv(4096):
                output += chunk
            if not channel.status_event.wait(self.timeout) or channel.recv_exit_status() != 0:
                return None
            found = _SHA256.match(bytes(output))
            return found.group(1).decode() if found else None
        finally:
            channel.close()
