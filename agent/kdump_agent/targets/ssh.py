"""SSH targets: the dump sent to `user@host` with paramiko, rebuilt there as a ready vmcore.

The collector runs with `-F`; its flattened stream is read here record by record and each
record becomes a positioned SFTP write into `<dir>/vmcore-incomplete` (see flat.py), so the
server ends up with the file `makedumpfile -R` would rebuild, and no copy of the dump is
ever held in the capture kernel's memory. Only after the end marker arrived, every write was
acknowledged, the file was flushed and closed and its size on the server checks out, is it
renamed to `vmcore`. A server without the SFTP subsystem gets the raw stream through
`cat` instead, kept as `vmcore.flat` (what RHEL leaves), for `makedumpfile -R` later.

Trust and safety, before a byte of the dump leaves:

- the server's host key must be one pinned for it in a known_hosts-format file packed into
  the initramfs at mkinitrd time; an unknown or changed key is refused before we even
  authenticate (hashed names, wildcards and negations are understood as OpenSSH does);
- authentication is by key file only (`sshkey`), never a password, an agent or a prompt;
- files are made 0600 and the dump directory 0700 on the server.

Speed (DESIGN.md section 6): paramiko never sets TCP_NODELAY, so we open the socket
ourselves; aes128-gcm goes first; writes are pipelined. paramiko's pipelined SFTPFile
drops the status of writes still in flight when it closes, and swallows the close's own
error: exactly where a full disk shows. So writes, fsync and close go through `_Sftp`,
which keeps every request's reply and checks each one (it uses two private SFTPClient
methods; paramiko is pinned).

No operation waits forever: connect, handshake, authentication and every channel have a
timeout, and TCP_USER_TIMEOUT makes the kernel drop a connection whose data goes
unacknowledged (a dead server) instead of paramiko retrying the write forever. All of it
fails as TransferError; the caller runs the failure action.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import posixpath
import re
import shlex
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol, Self, cast

import paramiko
from paramiko.hostkeys import HostKeyEntry, HostKeys
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

from .. import flat, system
from ..errors import KdumpError, TransferError
from .sshdest import (  # noqa: F401 - the destination's names, used from here too
    DEFAULT_DIRECTORY,
    DEFAULT_KEY_PATH,
    DEFAULT_KNOWN_HOSTS_PATH,
    DEFAULT_TIMEOUT,
    SSH_PORT,
    SshDestination,
    parse_spec,
)

log = logging.getLogger("kdump-agent")
_CONNECTION_ERRORS = (paramiko.SSHException, paramiko.SFTPError, OSError, EOFError)
# paramiko logs its tracebacks at ERROR; the TransferError we raise says it in one line. Without
# a handler of its own, Python's last-resort handler would print them on the console.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

VMCORE_NAME = "vmcore"
FLAT_SUFFIX = ".flat"  # what a server without SFTP keeps: vmcore.flat

# First the AES-GCM ciphers (fast with AES-NI; paramiko lists them last), then paramiko's order.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
# A known_hosts "ssh-rsa" key is verified with the SHA-2 signature algorithms.
_HOST_KEY_ALGORITHMS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256")}

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
STREAM_BUFFER = 256 * 1024  # exec fallback: bytes gathered before one channel write
PROGRESS_SECONDS = 5.0


@dataclass(frozen=True)
class TransferSummary:
    """What the server holds after receive_flattened(): enough for the manifest."""

    path: str  # on the server: <dir>/vmcore, or <dir>/vmcore.flat without SFTP
    size: int  # its size on the server, checked
    records: int  # flattened records applied (or passed through)
    stream_bytes: int  # read from the collector, up to and with the end marker
    seconds: float
    flattened: bool  # True: the server has vmcore.flat, for `makedumpfile -R`
    sha256: str | None  # of the file on the server when we know it (the flat stream); SFTP: None

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def directory(self) -> str:
        return posixpath.dirname(self.path)


def partial_name(name: str) -> str:
    """The name a file has while it is written: vmcore-incomplete, vmcore-dmesg-incomplete.txt."""
    stem, dot, suffix = name.partition(".")
    return f"{stem}-incomplete{dot}{suffix}"


# Host keys ----------------------------------------------------------------------------------

def describe_key(key: paramiko.PKey) -> str:
    """`ssh-ed25519 SHA256:...`, the way `ssh-keygen -l` shows a key."""
    return f"{key.get_name()} {key.fingerprint}"


def _name_matches(name: str, patterns: Sequence[str]) -> bool:
    """OpenSSH's rule for the names field of a known_hosts line.

    Hashed entries (`|1|salt|hash`) match by HMAC; the others are patterns where only `*`
    and `?` are special (`[host]:port` is literal); a matching negated pattern (`!name`)
    excludes the line whatever else matches.
    """
    name = name.lower()
    matched = False
    for pattern in patterns:
        if pattern.startswith("|1|"):
            matched |= HostKeys.hash_host(name, pattern) == pattern
        elif pattern.startswith("!"):
            if _glob(pattern[1:]).fullmatch(name):
                return False
        else:
            matched |= _glob(pattern).fullmatch(name) is not None
    return matched


def _glob(pattern: str) -> re.Pattern[str]:
    """OpenSSH's match_pattern(): `*` any run, `?` one character, nothing else special."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                              for c in pattern.lower()), re.DOTALL)


REVOKED = "@revoked"
CERT_AUTHORITY = "@cert-authority"


@dataclass(frozen=True)
class KnownKey:
    """A key on one known_hosts line, and where that line is (`file:number`)."""

    key: paramiko.PKey
    where: str


@dataclass(frozen=True)
class KnownHosts:
    """What one known_hosts-format file says about one destination."""

    listed: list[KnownKey]  # the keys of the unmarked lines whose names match it
    revoked: list[KnownKey]  # the key of every `@revoked` line, whatever names the line lists


def read_known_hosts(known_hosts: str, destination: SshDestination) -> KnownHosts:
    """The destination's keys and every revoked key in a known_hosts-format file.

    OpenSSH applies a `@revoked` line to the names it matches; a revoked key stands for a
    stolen private key, so here it is refused for every host. `@cert-authority` lines pin
    nothing (host certificates are not checked) and say so when they name the destination.
    Lines paramiko cannot read are skipped with a warning. A file that cannot be read
    raises TransferError: without it no server can be trusted.
    """
    try:
        text = Path(known_hosts).read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise TransferError(f"{destination}: cannot read the pinned host keys: {error}") from error
    found = KnownHosts(listed=[], revoked=[])
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{known_hosts}:{number}"
        marker, rest = _split_marker(line)
        entry = _host_key_entry(rest, number)
        if marker not in ("", REVOKED, CERT_AUTHORITY) or entry is None:
            log.warning("%s: not a host key line paramiko can read; ignored", where)
            continue
        if marker == REVOKED:
            found.revoked.append(KnownKey(entry.key, where))
            continue
        if not _name_matches(destination.known_hosts_name, entry.hostnames):
            continue
        if marker == CERT_AUTHORITY:
            log.warning("%s: %s pins nothing for %s: the capture kernel checks the server's own host "
                        "key, not host certificates; pin that key", where, CERT_AUTHORITY,
                        destination.known_hosts_name)
            continue
        found.listed.append(KnownKey(entry.key, where))
    return found


def _split_marker(line: str) -> tuple[str, str]:
    """A line's marker (`@revoked`, `@cert-authority`; "" for none) and the rest of it."""
    if not line.startswith("@"):
        return "", line
    marker, _, rest = line.replace("\t", " ").partition(" ")
    return marker, rest.strip()


def _host_key_entry(line: str, number: int) -> HostKeyEntry | None:
    """The line as paramiko reads it, or None when it cannot (unknown key type, garbage)."""
    try:
        entry = HostKeyEntry.from_line(line, number)
    except paramiko.SSHException:
        return None
    return entry if entry is not None and entry.key is not None else None


def not_revoked(listed: Sequence[KnownKey], revoked: Sequence[KnownKey],
                destination: SshDestination) -> list[paramiko.PKey]:
    """The listed keys no revocation names, each once; every one refused is logged."""
    refused = {known.key.asbytes(): known.where for known in revoked}
    keys: list[paramiko.PKey] = []
    for known in listed:
        revocation = refused.get(known.key.asbytes())
        if revocation is not None:
            log.warning("%s: not pinning %s for %s: it is revoked (%s)", known.where,
                        describe_key(known.key), destination.known_hosts_name, revocation)
        elif all(key.asbytes() != known.key.asbytes() for key in keys):
            keys.append(known.key)
    return keys


def pinned_host_keys(known_hosts: str, destination: SshDestination) -> list[paramiko.PKey]:
    """The host keys pinned for the destination in a known_hosts-format file: its lines
    for the destination, less every key a `@revoked` line in the file names."""
    found = read_known_hosts(known_hosts, destination)
    return not_revoked(found.listed, found.revoked, destination)


def host_key_preference(pinned: Sequence[paramiko.PKey], available: Sequence[str]) -> tuple[str, ...]:
    """Host key algorithms in the order to offer them: the pinned keys' types first.

    The server then shows the key we hold rather than another of its keys we cannot check.
    """
    first = [algorithm for key in pinned
             for algorithm in _HOST_KEY_ALGORITHMS.get(key.get_name(), (key.get_name(),))
             if algorithm in available]
    return tuple(dict.fromkeys([*first, *available]))


def cipher_preference(available: Sequence[str]) -> tuple[str, ...]:
    """paramiko's ciphers with AES-GCM first (it lists them last)."""
    return tuple(dict.fromkeys([*(c for c in PREFERRED_CIPHERS if c in available), *available]))


def check_host_key(destination: SshDestination, offered: paramiko.PKey,
                   pinned: Sequence[paramiko.PKey]) -> None:
    """Accept the server's key only if it is one of the pinned ones; raise TransferError else."""
    if any(key.asbytes() == offered.asbytes() for key in pinned):
        return
    if not pinned:
        raise TransferError(
            f"{destination}: unknown host: {destination.known_hosts_path} pins no key for "
            f"{destination.known_hosts_name}, and the server offers {describe_key(offered)}; refusing "
            "to send the dump there (pin the server's key, then rebuild the initramfs)")
    raise TransferError(
        f"{destination}: HOST KEY MISMATCH: the server offers {describe_key(offered)}, but "
        f"{destination.known_hosts_path} pins {', '.join(describe_key(key) for key in pinned)} "
        f"for {destination.known_hosts_name}; refusing to send the dump there (someone may be in "
        "the middle; if the server's key really changed, pin the new one and rebuild the initramfs)")


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


# The connection -----------------------------------------------------------------------------

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

    def __init__(self, destination: SshDestination, transport: paramiko.Transport, timeout: float) -> None:
        self.destination = destination
        self.timeout = timeout
        self.dump_dir: str | None = None
        self._transport = transport
        self._remote: _Remote = self._open_remote()

    @classmethod
    def connect(cls, destination: SshDestination, timeout: float = DEFAULT_TIMEOUT, *,
                address: str | None = None) -> SshTarget:
        """Connect, check the host key against the pin, log in with the key file.

        The host key is checked right after the key exchange, before authentication: a
        server we do not trust never sees our key's signature, let alone the dump.
        `address` is the server's address when the caller resolved its name already; the
        pin is still looked up by the name kdump.conf gives.
        """
        key = load_client_key(destination.key_path)
        pinned = pinned_host_keys(destination.known_hosts_path, destination)
        log.info("connecting to %s (%d pinned host key%s)", destination, len(pinned),
                 "" if len(pinned) == 1 else "s")
        sock = open_socket(address or destination.host, destination.port, timeout)
        transport = paramiko.Transport(sock)
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
            return cls(destination, transport, timeout)
        except BaseException:
            transport.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """End the connection; never raises (it runs after errors, which must not be masked)."""
        with contextlib.suppress(*_CONNECTION_ERRORS):
            self._remote.close()
        self._transport.close()

    @property
    def local_address(self) -> str:
        """Our address on the link to the server: the `<host-ip>` of the dump directory's name."""
        sock = cast(socket.socket, self._transport.sock)  # the socket open_socket() made
        return str(sock.getsockname()[0])

    @property
    def has_sftp(self) -> bool:
        """False when the server offers no SFTP subsystem and everything goes through `cat`."""
        return isinstance(self._remote, _SftpRemote)

    def _open_remote(self) -> _Remote:
        """SFTP if the server has it, else commands over exec channels (with a warning)."""
        with _transfer_errors(self.destination, "opening an SFTP session", self.timeout):
            channel = self._transport.open_session(timeout=self.timeout)
            channel.settimeout(self.timeout)
            try:
                with _ChannelDeadline(channel, self.timeout):
                    channel.invoke_subsystem("sftp")
                return _SftpRemote(paramiko.SFTPClient(channel), str(self.destination))
            except (paramiko.SSHException, EOFError) as error:
                channel.close()
                if not self._transport.is_active():
                    raise
                log.warning("%s has no SFTP subsystem (%s): the dump will be saved in the flattened "
                            "format as %s%s; `makedumpfile -R vmcore < vmcore.flat` rebuilds it",
                            self.destination, error, VMCORE_NAME, FLAT_SUFFIX)
                return _ShellRemote(self._transport, self.timeout, str(self.destination))

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
            self._check_size(partial, len(data))
            self._remote.rename(partial, final)
        log.info("saved %s:%s (%d bytes)", self.destination, final, len(data))
        return len(data)

    def receive_flattened(self, stream: BinaryIO, remote_name: str = VMCORE_NAME) -> TransferSummary:
        """Read makedumpfile's flattened stream and leave a complete dump on the server.

        With SFTP the records are applied as positioned writes to `<name>-incomplete`, which
        becomes `<name>`; without it the stream itself is saved and becomes `<name>.flat`.
        Either way the rename happens only after the end marker arrived and the server holds
        every byte. A stream that breaks off raises FlatFormatError, a failed transfer
        TransferError; both leave `<name>-incomplete` on the server.
        """
        partial = self._path(partial_name(remote_name))
        started = time.monotonic()
        with self._errors(f"writing {partial}"):
            received = self._remote.receive(stream, partial, _Progress(str(self.destination)))
            final = self._path(remote_name + (FLAT_SUFFIX if received.flattened else ""))
            self._check_size(partial, received.size)
            self._remote.rename(partial, final)
        seconds = time.monotonic() - started
        stream_bytes = received.summary.stream_bytes
        log.info("saved %s:%s: %d bytes in %.1f s (%.1f MiB/s), %d records", self.destination, final,
                 received.size, seconds, stream_bytes / (1 << 20) / max(seconds, 1e-6),
                 received.summary.records)
        return TransferSummary(path=final, size=received.size, records=received.summary.records,
                               stream_bytes=stream_bytes, seconds=seconds, flattened=received.flattened,
                               sha256=received.sha256)

    def _check_size(self, path: str, expected: int) -> None:
        """The server's word on the file's size: a full disk may have cut it short quietly."""
        size = self._remote.size(path)
        if size != expected:
            raise TransferError(f"{self.destination}: {path} holds {size} bytes instead of {expected} "
                                "(is the server's disk full?); it keeps its partial name")

    def _path(self, name: str) -> str:
        if self.dump_dir is None:
            raise TransferError(f"{self.destination}: no dump directory yet (make_dump_dir first)")
        return posixpath.join(self.dump_dir, name)

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        with _transfer_errors(self.destination, what, self.timeout):
            yield


def send_dump(destination: SshDestination, stream: BinaryIO, timeout: float = DEFAULT_TIMEOUT, *,
              started: float | None = None) -> TransferSummary:
    """Connect, make `<path>/<our-ip>-<date>/` and save the flattened stream there as vmcore.

    `started` is the capture's start (time.time()) for the directory's name; the capture
    steps that also send vmcore-dmesg.txt and the record keep one SshTarget instead.
    """
    # Imported here: steps import the context, which may come to import this module.
    from ..layout import dump_dir_name

    with SshTarget.connect(destination, timeout) as target:
        when = time.localtime(time.time() if started is None else started)
        target.make_dump_dir(dump_dir_name(target.local_address, when))
        return target.receive_flattened(stream)


@contextmanager
def _transfer_errors(destination: SshDestination | str, what: str, timeout: float) -> Iterator[None]:
    """Turn what paramiko and the socket raise into one TransferError naming what we did."""
    try:
        yield
    except KdumpError:
        raise
    except TimeoutError:  # socket.timeout too
        raise TransferError(f"{destination}: {what}: no answer within {timeout:g} s") from None
    except _CONNECTION_ERRORS as error:
        reason = str(error) or type(error).__name__
        if isinstance(error, EOFError):
            reason = "the server closed the connection"
        raise TransferError(f"{destination}: {what}: {reason}") from error


class _ChannelDeadline:
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
        with contextlib.suppress(*_CONNECTION_ERRORS):  # the waiter may close the transport first
            self.channel.close()

    def __enter__(self) -> None:
        self.timer.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.timer.cancel()
        if error is not None and self.expired.is_set():
            raise TimeoutError() from error


class _Progress:
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


# The two ways of writing on the server ----------------------------------------------------

@dataclass(frozen=True)
class _Received:
    """What a remote made of the stream; the file still has its partial name."""

    summary: flat.FlatSummary
    size: int  # what the file must hold
    flattened: bool  # the stream itself, not the dump it describes
    sha256: str | None = None


class _Remote(Protocol):
    def receive(self, stream: BinaryIO, path: str, progress: _Progress) -> _Received: ...
    def makedirs(self, path: str) -> None: ...
    def mkdir(self, path: str) -> bool: ...  # False: it exists already
    def write_file(self, path: str, data: bytes) -> None: ...
    def rename(self, old: str, new: str) -> None: ...
    def size(self, path: str) -> int: ...
    def close(self) -> None: ...


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
        with contextlib.suppress(*_CONNECTION_ERRORS):  # if the connection is gone, so is the handle
            self.sftp.send(CMD_CLOSE, self.handle)


class _SftpRemote:
    def __init__(self, client: paramiko.SFTPClient, where: str) -> None:
        self.client = client
        self.sftp = _Sftp(client)
        self.where = where
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

    def receive(self, stream: BinaryIO, path: str, progress: _Progress) -> _Received:
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
            return _Received(summary, size=summary.end, flattened=False)

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


class _ShellRemote:
    """The same operations as POSIX commands over exec channels, for servers without SFTP."""

    def __init__(self, transport: paramiko.Transport, timeout: float, where: str) -> None:
        self.transport = transport
        self.timeout = timeout
        self.where = where

    def close(self) -> None:
        pass

    def makedirs(self, path: str) -> None:
        self._check(f"umask 077; mkdir -p -- {shlex.quote(path)}")

    def mkdir(self, path: str) -> bool:
        status, _, error = self._run(f"umask 077; mkdir -- {shlex.quote(path)}")
        if status == 0:
            return True
        if self._run(f"test -e {shlex.quote(path)}")[0] == 0:
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

    def receive(self, stream: BinaryIO, path: str, progress: _Progress) -> _Received:
        """Pass the stream through `cat` as it is read (checked record by record).

        A stream that breaks off still ends `cat` cleanly, so the server keeps what arrived.
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
            return _Received(summary, size=summary.stream_bytes, flattened=True,
                             sha256=tee.sha256.hexdigest())
        finally:
            channel.close()

    def _exec(self, command: str) -> paramiko.Channel:
        channel = self.transport.open_session(timeout=self.timeout)
        channel.settimeout(self.timeout)
        with _ChannelDeadline(channel, self.timeout):
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

    def __init__(self, stream: BinaryIO, channel: paramiko.Channel, progress: _Progress) -> None:
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

