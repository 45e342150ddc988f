"""One SSH connection to the dump server: SshTarget, and the errors it may raise.

The collector runs with `-F`; its flattened stream is read record by record and each record
becomes a positioned SFTP write into `<dir>/vmcore-incomplete` (sftp.py, flat.py), so the
server ends up with the file `makedumpfile -R` would rebuild, and no copy of the dump is
ever held in the capture kernel's memory. Only after the end marker arrived, every write was
acknowledged, the file was flushed and closed and its size on the server checks out, is it
renamed to `vmcore`. A server without the SFTP subsystem gets the raw stream through `cat`
instead (shell.py), kept as `vmcore.flat`.

Trust, before a byte of the dump leaves: the server's host key must be one pinned for it
(hostkeys.py), checked before we even authenticate; authentication is by key file only
(`sshkey`), never a password, an agent or a prompt.

Speed: paramiko never sets TCP_NODELAY, so we open the socket ourselves; aes128-gcm goes
first on a CPU with AES instructions, chacha20-poly1305 (chachapoly.py) on one without.

No operation waits forever: connect, handshake, authentication and every channel have a
timeout, and TCP_USER_TIMEOUT makes the kernel drop a connection whose data goes
unacknowledged (a dead server) instead of paramiko retrying the write forever. This module
is the one place where what paramiko and the socket raise becomes TransferError: the key
file's errors in load_client_key, resolving and connecting in open_socket, and everything
the connection and its writers raise after that in _transfer_errors. The caller runs the
failure action.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import socket
import stat
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self, cast

import paramiko

from ..errors import KdumpError, TransferError
from ..layout import FLAT_SUFFIX, VMCORE
from ..layout import partial as partial_name
from ..rotation import Entry as DumpFile
from ..targets.base import Transfer
from ..targets.sshdest import DEFAULT_TIMEOUT, SshDestination
from . import chachapoly
from .browse import Browser, Entry
from .hostkeys import check_host_key, describe_key, host_key_preference, pinned_host_keys
from .remote import (
    CONNECTION_ERRORS,
    ChannelDeadline,
    Progress,
    Remote,
    check_size,
    describe_error,
    keep_file,
)
from .resume import RESUME_SECONDS, Refused, Resumer
from .sftp import SftpRemote
from .shell import ShellRemote

log = logging.getLogger("kdump-agent")

# The AEAD ciphers first, then paramiko's order: AES-GCM where the CPU has AES instructions
# (paramiko lists it last), ChaCha20 where it has not (software AES is table look-ups: under
# QEMU's TCG, whose default CPU has no AES, it was most of an SSH dump's transfer).
AES_FIRST = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", chachapoly.NAME)
CHACHA_FIRST = (chachapoly.NAME, "aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
CPUINFO = "/proc/cpuinfo"


def cipher_preference(available: Sequence[str], cpuinfo: str | None = None) -> tuple[str, ...]:
    """The available ciphers, the fastest for this CPU first (`cpuinfo`: /proc/cpuinfo's
    text, read when not given; unreadable counts as a CPU with AES)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path(CPUINFO).read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    first = CHACHA_FIRST if cpuinfo and not chachapoly.has_aes_instructions(cpuinfo) else AES_FIRST
    return tuple(dict.fromkeys([*(c for c in first if c in available), *available]))


def load_client_key(path: str) -> paramiko.PKey:
    """The private key to log in with (ed25519, ECDSA or RSA; OpenSSH or PEM format).

    A key with a passphrase is refused here: nobody is there to type it.
    """
    passphrase = TransferError(f"SSH key {path} has a passphrase; kdump needs a key without one")
    try:
        return paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException:
        raise passphrase from None
    except TypeError as error:  # cryptography's way to say it: "... password was not provided"
        if "password" in str(error).lower():
            raise passphrase from None
        raise TransferError(f"cannot use SSH key {path}: {error}") from error
    except (OSError, paramiko.SSHException, ValueError) as error:
        raise TransferError(f"cannot use SSH key {path}: {error}") from error


def open_socket(host: str, port: int, timeout: float) -> socket.socket:
    """A connected TCP socket with TCP_NODELAY, trying each address of host in turn.

    TCP_USER_TIMEOUT: data unacknowledged for `timeout` seconds ends the connection with an
    error, where paramiko would otherwise retry a write to a vanished server forever.
    """
    failures: list[str] = []
    try:
        # An ASCII name goes as bytes: getaddrinfo() runs a str through the idna codec, which
        # needs unicodedata, a module the frozen binary may leave out.
        name: str | bytes = host.encode("ascii") if host.isascii() else host
        addresses = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, LookupError) as error:
        raise TransferError(f"cannot resolve {host}: {error}") from error
    for family, kind, protocol, _, address in addresses:
        sock = socket.socket(family, kind, protocol)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, max(1, int(timeout * 1000)))
            return sock
        except OSError as error:
            sock.close()
            reason = f"no answer within {timeout:g} s" if isinstance(error, TimeoutError) else (
                error.strerror or str(error))
            failures.append(f"{address[0]!s}: {reason}")
    raise TransferError(f"cannot connect to {host} port {port}: {'; '.join(failures) or 'no address'}")


class SshTarget:
    """One SSH connection to the dump server; use it as a context manager.

    `SshTarget.connect()` logs in (or raises); then make_dump_dir(), put_file() and
    receive_flattened() work in the dump directory; close() ends the connection.
    """

    def __init__(self, destination: SshDestination, transport: paramiko.Transport, timeout: float, *,
                 address: str | None = None, resume_seconds: float = RESUME_SECONDS) -> None:
        self.destination = destination
        self.timeout = timeout
        self.resume_seconds = resume_seconds
        self.dump_dir: str | None = None
        self._address = address
        self._closed = False
        self._transport = transport
        self._remote: Remote = self._open_remote()
        self._browser: Browser | None = None

    @classmethod
    def connect(cls, destination: SshDestination, timeout: float = DEFAULT_TIMEOUT, *,
                address: str | None = None, resume_seconds: float = RESUME_SECONDS) -> SshTarget:
        """Connect, check the host key against the pin, log in with the key file.

        The host key is checked right after the key exchange, before authentication: a
        server we do not trust never sees our key's signature, let alone the dump.
        `address` is the server's address when the caller resolved its name already; the
        pin is still looked up by the name kdump.conf gives. `resume_seconds` is what the
        outages of one dump transfer may cost in all before it fails (ssh/resume.py).
        """
        key = load_client_key(destination.key_path)
        pinned = pinned_host_keys(destination.known_hosts_path, destination)
        log.info("connecting to %s (%d pinned host key%s)", destination, len(pinned),
                 "" if len(pinned) == 1 else "s")
        sock = open_socket(address or destination.host, destination.port, timeout)
        transport = chachapoly.Transport(sock)
        try:
            with _transfer_errors(destination, "SSH handshake", timeout):
                transport.banner_timeout = transport.handshake_timeout = timeout
                transport.auth_timeout = transport.channel_timeout = timeout
                options = transport.get_security_options()
                options.ciphers = cipher_preference(options.ciphers)
                options.key_types = host_key_preference(pinned, options.key_types)
                transport.start_client(timeout=timeout)
                if not (transport.is_active() and transport.initial_kex_done):  # it returns on timeout
                    raise transport.get_exception() or TimeoutError()
            check_host_key(destination, transport.get_remote_server_key(), pinned)
            login = f"logging in as {destination.user} with {destination.key_path}"
            with _transfer_errors(destination, login, timeout):
                transport.auth_publickey(destination.user, key)
            log.info("logged in to %s with %s (%s)", destination, describe_key(key),
                     getattr(transport, "local_cipher", "?"))
            return cls(destination, transport, timeout, address=address, resume_seconds=resume_seconds)
        except BaseException:
            transport.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """End the connection for good; never raises (it runs after errors, which must not
        be masked). A transfer still running in a thread that overran its deadline then
        cannot reconnect: what it does ends here."""
        self._closed = True
        self._drop()

    def _drop(self) -> None:
        with contextlib.suppress(*CONNECTION_ERRORS):
            self._remote.close()
        if self._browser is not None:
            with contextlib.suppress(*CONNECTION_ERRORS):
                self._browser.close()
            self._browser = None
        self._transport.close()

    def _reconnect(self, timeout: float) -> Remote:
        """Log in anew (the host key checked again) and work on over the new connection."""
        if self._closed:
            raise Refused(f"{self.destination}: the connection was closed")
        fresh = SshTarget.connect(self.destination, timeout, address=self._address,
                                  resume_seconds=self.resume_seconds)
        if self._closed:  # closed while we logged in
            fresh.close()
            raise Refused(f"{self.destination}: the connection was closed")
        self._drop()
        self._transport, self._remote = fresh._transport, fresh._remote
        return self._remote

    @property
    def local_address(self) -> str:
        """Our address on the link to the server: the `<host-ip>` of the dump directory's name."""
        sock = cast(socket.socket, self._transport.sock)  # the socket open_socket() made
        return str(sock.getsockname()[0])

    @property
    def has_sftp(self) -> bool:
        """False when the server offers no SFTP subsystem and everything goes through `cat`."""
        return isinstance(self._remote, SftpRemote)

    def _open_remote(self) -> Remote:
        """SFTP if the server has it, else commands over exec channels (with a warning)."""
        with _transfer_errors(self.destination, "opening an SFTP session", self.timeout):
            channel = self._transport.open_session(timeout=self.timeout)
            channel.settimeout(self.timeout)
            try:
                with ChannelDeadline(channel, self.timeout):
                    channel.invoke_subsystem("sftp")
                return SftpRemote(paramiko.SFTPClient(channel))
            except (paramiko.SSHException, EOFError) as error:
                channel.close()
                if not self._transport.is_active():
                    raise
                log.warning("%s has no SFTP subsystem (%s): the dump will be saved in the flattened "
                            "format as %s%s; `makedumpfile -R vmcore < vmcore.flat` rebuilds it",
                            self.destination, error, VMCORE, FLAT_SUFFIX)
                return ShellRemote(self._transport, self.timeout)

    def make_dump_dir(self, name: str) -> str:
        """Create `<directory>/<name>` (0700, parents as needed) and work in it from now on.

        An existing directory of that name is never reused: the new one gets a suffix, -2,
        -3..., as steps/dumpdir.make_dump_dir does on a local target.
        """
        parent = self.destination.directory
        with self._errors(f"creating {parent}/{name}"):
            self._remote.makedirs(parent)
            candidate, suffix = posixpath.join(parent, name), 1
            while not self._remote.mkdir(candidate):
                suffix += 1
                candidate = posixpath.join(parent, f"{name}-{suffix}")
        self.dump_dir = candidate
        log.info("dump directory %s:%s", self.destination, candidate)
        return candidate

    def put_file(self, source: bytes | str | Path, remote_name: str) -> int:
        """Save a small file (bytes or a local path) as `<dump_dir>/<remote_name>`, 0600.

        It is written under its partial name and renamed once complete; returns its size.
        """
        final = self._path(remote_name)
        partial = self._path(partial_name(remote_name))
        with self._errors(f"saving {final}"):
            data = source if isinstance(source, bytes) else Path(source).read_bytes()
            self._remote.write_file(partial, data)
            check_size(self._remote, partial, len(data), str(self.destination))
            self._remote.rename(partial, final)
        log.info("saved %s:%s (%d bytes)", self.destination, final, len(data))
        return len(data)

    def receive_flattened(self, stream: BinaryIO, remote_name: str = VMCORE) -> Transfer:
        """Read makedumpfile's flattened stream and leave a complete dump on the server.

        With SFTP the records are applied as positioned writes to `<name>-incomplete`, which
        becomes `<name>`; without it the stream itself is saved and becomes `<name>.flat`.
        Either way the rename happens only after the end marker arrived and the server holds
        every byte. A stream that breaks off raises FlatFormatError, a failed transfer
        TransferError; both leave `<name>-incomplete` on the server.
        """
        partial = self._path(partial_name(remote_name))
        started = time.monotonic()
        what = f"writing {partial}"
        resumer = Resumer(self._reconnect, str(self.destination), self.timeout, budget=self.resume_seconds)

        def reconnect(error: BaseException) -> Remote:
            return resumer(f"{self.destination}: {what}: {describe_error(error)}")

        with self._errors(what):
            received = self._remote.receive(stream, partial, Progress(str(self.destination)), reconnect)
            final = self._path(remote_name + (FLAT_SUFFIX if received.flattened else ""))
            kept = keep_file(self._remote, partial, final, received.size, str(self.destination),
                             reconnect if self.has_sftp else None)
        interruptions = received.interruptions + kept
        seconds = time.monotonic() - started
        stream_bytes = received.summary.stream_bytes
        log.info("saved %s:%s: %d bytes in %.1f s (%.1f MiB/s), %d records", self.destination, final,
                 received.size, seconds, stream_bytes / (1 << 20) / max(seconds, 1e-6),
                 received.summary.records)
        return Transfer(path=final, size=received.size, records=received.summary.records,
                        stream_bytes=stream_bytes, seconds=seconds, flattened=received.flattened,
                        sha256=received.sha256, interruptions=interruptions)

    def listdir(self, path: str) -> list[Entry]:
        """Read-only (`kdump-agent dumps`): the names in a directory on the server."""
        with self._errors(f"listing {path}"):
            return self._browse().listdir(path)

    def sha256(self, path: str, size: int) -> str:
        """Read-only: a file's sha256 (`sha256sum` on the server, else read over SFTP)."""
        with self._errors(f"hashing {path}"):
            return self._browse().sha256(path, size)

    def _browse(self) -> Browser:
        if self._browser is None:
            self._browser = Browser(self._transport, self.timeout)
        return self._browser

    def _path(self, name: str) -> str:
        if self.dump_dir is None:
            raise TransferError(f"{self.destination}: no dump directory yet (make_dump_dir first)")
        return posixpath.join(self.dump_dir, name)

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        with _transfer_errors(self.destination, what, self.timeout):
            yield

    # ---- rotation (keep_old_dumps, free_disk_size): what is in `path`, deleting, free space.
    # SFTP only: without it the server is written with `cat` and nothing is rotated.

    def list_dir(self, path: str) -> list[DumpFile]:
        """What is in a directory on the server, as lstat shows it; [] if it does not exist."""
        sftp = self._sftp("listing old dumps")
        with self._errors(f"listing {path}"):
            try:
                return [DumpFile(name, size, stat.S_ISREG(mode)) for name, size, mode in sftp.listdir(path)]
            except FileNotFoundError:
                return []

    def is_directory(self, path: str) -> bool:
        """A real directory, not a link to one."""
        sftp = self._sftp("listing old dumps")
        with self._errors(f"looking at {path}"):
            return stat.S_ISDIR(sftp.lstat_mode(path))

    def read_small(self, path: str, limit: int) -> bytes:
        """At most limit bytes of a small file on the server (a dump's record)."""
        sftp = self._sftp("reading a dump's record")
        with self._errors(f"reading {path}"):
            return sftp.read_head(path, limit)

    def remove_file(self, path: str) -> None:
        sftp = self._sftp("deleting old dumps")
        with self._errors(f"deleting {path}"):
            sftp.remove(path)

    def remove_dir(self, path: str) -> None:
        sftp = self._sftp("deleting old dumps")
        with self._errors(f"deleting {path}"):
            sftp.rmdir(path)

    def free_bytes(self, path: str) -> int | None:
        """Free space where path is, if the server tells (OpenSSH's statvfs@openssh.com)."""
        sftp = self._sftp("asking for the free space")
        with self._errors(f"asking the free space at {path}"):
            return sftp.free_bytes(path)

    def _sftp(self, what: str) -> SftpRemote:
        if not isinstance(self._remote, SftpRemote):
            raise TransferError(f"{self.destination} has no SFTP subsystem: {what} needs it "
                                "(keep_old_dumps, free_disk_size)")
        return self._remote


@contextmanager
def _transfer_errors(destination: SshDestination, what: str, timeout: float) -> Iterator[None]:
    """Turn what paramiko and the socket raise into one TransferError naming what we did."""
    try:
        yield
    except KdumpError:
        raise
    except TimeoutError:  # socket.timeout too
        raise TransferError(f"{destination}: {what}: no answer within {timeout:g} s") from None
    except CONNECTION_ERRORS as error:
        raise TransferError(f"{destination}: {what}: {describe_error(error)}") from error
