"""The SSH target against a real OpenSSH server on 127.0.0.1 (tests/integration/sshd.py).

The server's dump directory is a local path here, so each test looks at what sshd really
wrote. Streams are built here (synthetic records, overlapping and out of order) or come
from real makedumpfile on the real vmcore (those carry the `qemu` marker: the vmcore is
made once by a real panic and cached).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import socket
import stat
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from harness import sshd as servers
from harness.sshd import ClientKey, Sshd, free_port, keygen
from kdump_agent import flat
from kdump_agent.errors import TransferError
from kdump_agent.layout import dump_dir_name
from kdump_agent.ssh.connection import SshTarget
from kdump_agent.ssh.resume import RESUME_SECONDS
from kdump_agent.targets.base import Transfer
from kdump_agent.targets.sshdest import SshDestination

# The fixtures live with the server they start.
client_key = servers.client_key
sshd = servers.sshd
sshd_no_sftp = servers.sshd_no_sftp
sshd_to_kill = servers.sshd_to_kill

TIMEOUT = 20.0
SERVERS = ["sshd", "sshd_no_sftp"]  # the same behaviour through SFTP and through `cat`


def header() -> bytes:
    return struct.pack(">16sqq", b"makedumpfile", 1, 1).ljust(flat.HEADER_SIZE, b"\0")


def record(offset: int, data: bytes) -> bytes:
    return struct.pack(">qq", offset, len(data)) + data


def synthetic_stream(seed: int = 1, records: int = 300) -> bytes:
    """A flattened stream like makedumpfile's: a header rewritten last, records out of order,
    some overlapping (the later wins), gaps that read as zeros."""
    rng = random.Random(seed)
    parts = [header(), record(0, b"\x01" * 4096)]
    for _ in range(records):
        size = rng.choice((360, 4096, 61440, 65536, 100_000))
        parts.append(record(rng.randrange(4096, 8 << 20), rng.randbytes(size)))
    parts.append(record(0, b"KDUMP   " + rng.randbytes(4088)))
    return b"".join(parts) + flat.END_MARKER


def reassembled(stream: bytes, tmp_path: Path, name: str = "reference") -> bytes:
    """What makedumpfile -R rebuilds from the stream (makedumpfile itself, not our reader)."""
    out = tmp_path / name  # makedumpfile -R will not overwrite a file
    subprocess.run(["makedumpfile", "-R", str(out)], input=stream, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return out.read_bytes()


def destination(server: Sshd, key: ClientKey, tmp_path: Path, *pinned: str,
                directory: str = "") -> SshDestination:
    known_hosts = server.known_hosts(tmp_path / f"known_hosts-{server.port}", *(pinned or ("ed25519",)))
    return SshDestination("root", "127.0.0.1", port=server.port, key_path=str(key.path),
                          known_hosts_path=str(known_hosts),
                          directory=directory or str(tmp_path / "crash"))


def send_dump(destination: SshDestination, stream: BinaryIO, timeout: float,
              resume_seconds: float = RESUME_SECONDS) -> Transfer:
    """What a capture does with one SshTarget: connect, make `<our-ip>-<date>/`, save the stream
    there as vmcore (the steps also save vmcore-dmesg.txt and the record in between)."""
    with SshTarget.connect(destination, timeout, resume_seconds=resume_seconds) as target:
        target.make_dump_dir(dump_dir_name(target.local_address, time.localtime()))
        return target.receive_flattened(stream)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def accepted_logins(server: Sshd) -> int:
    return server.log.read_text(errors="replace").count("Accepted publickey")


class Tee:
    """A collector's stdout that is also kept, to compare with makedumpfile -R of the same bytes."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.kept = bytearray()

    def read(self, size: int) -> bytes:
        data = self.stream.read(size)
        self.kept += data
        return data


# Real makedumpfile on the real vmcore ------------------------------------------------------

@pytest.mark.qemu
@pytest.mark.parametrize("server_name", SERVERS)
def test_ssh_target_saves_makedumpfile_stream_as_a_usable_dump(
        server_name: str, request: pytest.FixtureRequest, client_key: ClientKey, tmp_path: Path,
        elf_vmcore: Path) -> None:
    server: Sshd = request.getfixturevalue(server_name)
    collector = subprocess.Popen(["makedumpfile", "-F", "-l", "-d", "31", str(elf_vmcore)],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert collector.stdout is not None
    stream = Tee(cast(BinaryIO, collector.stdout))
    try:
        summary = send_dump(destination(server, client_key, tmp_path), cast(BinaryIO, stream), TIMEOUT)
    finally:
        collector.stdout.close()  # a collector we stopped reading must not block forever
        returncode = collector.wait()
    assert returncode == 0
    dump_dir = Path(summary.directory)
    assert re.fullmatch(r"127\.0\.0\.1-\d{4}-\d\d-\d\d-\d\d:\d\d:\d\d", dump_dir.name)
    assert mode(dump_dir) == 0o700
    reference = reassembled(bytes(stream.kept), tmp_path)
    if server.sftp:
        assert sorted(os.listdir(dump_dir)) == ["vmcore"]
        vmcore = dump_dir / "vmcore"
        assert vmcore.read_bytes() == reference
        assert (summary.flattened, summary.size) == (False, len(reference))
    else:
        assert sorted(os.listdir(dump_dir)) == ["vmcore.flat"]
        assert (dump_dir / "vmcore.flat").read_bytes() == bytes(stream.kept)
        vmcore = tmp_path / "vmcore"
        vmcore.write_bytes(reassembled((dump_dir / "vmcore.flat").read_bytes(), tmp_path, "from-flat"))
        assert vmcore.read_bytes() == reference
        assert summary.flattened and summary.size == len(stream.kept)
        assert summary.sha256 == hashlib.sha256(stream.kept).hexdigest()
    assert mode(dump_dir / summary.name) == 0o600
    dmesg = tmp_path / "dmesg.txt"
    subprocess.run(["makedumpfile", "--dump-dmesg", str(vmcore), str(dmesg)], check=True,
                   stdout=subprocess.DEVNULL)
    assert "sysrq: Trigger a crash" in dmesg.read_text(errors="replace")


# The dump directory as a capture fills it ---------------------------------------------------

@pytest.mark.parametrize("server_name", SERVERS)
def test_ssh_target_fills_a_dump_directory_like_a_local_target(
        server_name: str, request: pytest.FixtureRequest, client_key: ClientKey, tmp_path: Path) -> None:
    server: Sshd = request.getfixturevalue(server_name)
    stream = synthetic_stream()
    parent = tmp_path / "var" / "crash"  # created on the way, 0700
    dest = destination(server, client_key, tmp_path, directory=str(parent))
    with SshTarget.connect(dest, TIMEOUT) as target:
        assert target.has_sftp == server.sftp
        assert target.local_address == "127.0.0.1"
        first = target.make_dump_dir("127.0.0.1-2024-05-01-10:00:00")
        target.put_file(b"[    0.000000] Linux version\n", "vmcore-dmesg.txt")
        summary = target.receive_flattened(cast(BinaryIO, _BytesStream(stream)))
        log_file = tmp_path / "kexec.log"
        log_file.write_text("kdump-agent: saved\n")
        target.put_file(log_file, "kexec-dmesg.log")
        target.put_file(b"{}\n", "kdump-agent.json")
        second = target.make_dump_dir("127.0.0.1-2024-05-01-10:00:00")  # same second: never reused
        third = target.make_dump_dir("127.0.0.1-2024-05-01-10:00:00")
    assert (Path(second).name, Path(third).name) == ("127.0.0.1-2024-05-01-10:00:00-2",
                                                     "127.0.0.1-2024-05-01-10:00:00-3")
    dump_dir = Path(first)
    vmcore_name = "vmcore" if server.sftp else "vmcore.flat"
    assert sorted(os.listdir(dump_dir)) == sorted(["vmcore-dmesg.txt", vmcore_name, "kexec-dmesg.log",
                                                   "kdump-agent.json"])
    assert {mode(dump_dir / name) for name in os.listdir(dump_dir)} == {0o600}
    assert [mode(p) for p in (parent, dump_dir, Path(second), Path(third))] == [0o700] * 4
    assert (dump_dir / "kexec-dmesg.log").read_text() == "kdump-agent: saved\n"
    saved = (dump_dir / vmcore_name).read_bytes()
    assert saved == (reassembled(stream, tmp_path) if server.sftp else stream)
    assert summary.path == str(dump_dir / vmcore_name)
    assert summary.stream_bytes == len(stream)
    assert summary.records == 302


class _BytesStream:
    """A pipe-like stream: short reads, like a collector's stdout."""

    def __init__(self, data: bytes, piece: int = 7000) -> None:
        self.data = memoryview(data)
        self.position = 0
        self.piece = piece
        self.name = "collector"

    def read(self, size: int) -> bytes:
        size = min(size, self.piece)
        data = bytes(self.data[self.position:self.position + size])
        self.position += len(data)
        return data


@pytest.mark.parametrize("server_name", SERVERS)
def test_ssh_target_stream_without_end_marker_keeps_vmcore_incomplete(
        server_name: str, request: pytest.FixtureRequest, client_key: ClientKey, tmp_path: Path) -> None:
    server: Sshd = request.getfixturevalue(server_name)
    cut = synthetic_stream()[:-1000]
    with SshTarget.connect(destination(server, client_key, tmp_path), TIMEOUT) as target:
        dump_dir = Path(target.make_dump_dir("cut"))
        with pytest.raises(flat.FlatFormatError, match="no end marker: the dump is incomplete"):
            target.receive_flattened(cast(BinaryIO, _BytesStream(cut)))
    assert os.listdir(dump_dir) == ["vmcore-incomplete"]
    assert mode(dump_dir / "vmcore-incomplete") == 0o600
    if not server.sftp:
        assert (dump_dir / "vmcore-incomplete").read_bytes() == cut


# Trust ---------------------------------------------------------------------------------------

def test_ssh_target_refuses_unknown_host_key_and_creates_nothing(sshd: Sshd, client_key: ClientKey,
                                                                 tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{free_port()} {sshd.host_key_line('ed25519')}\n")  # another port
    logins = accepted_logins(sshd)
    dest = SshDestination("root", "127.0.0.1", port=sshd.port, key_path=str(client_key.path),
                          known_hosts_path=str(known_hosts), directory=str(tmp_path / "crash"))
    with pytest.raises(TransferError, match=rf"root@127\.0\.0\.1:{sshd.port}: unknown host: .* pins no key "
                                            rf"for \[127\.0\.0\.1\]:{sshd.port}, and the server offers "
                                            r"ssh-ed25519 SHA256:"):
        send_dump(dest, cast(BinaryIO, _BytesStream(synthetic_stream())), TIMEOUT)
    assert not (tmp_path / "crash").exists()
    assert accepted_logins(sshd) == logins


def test_ssh_target_refuses_changed_host_key_naming_both_fingerprints(sshd: Sshd, client_key: ClientKey,
                                                                      tmp_path: Path) -> None:
    impostor = keygen(tmp_path / "impostor", "ed25519")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(impostor.public_line.split()[:2])}\n")
    dest = SshDestination("root", "127.0.0.1", port=sshd.port, key_path=str(client_key.path),
                          known_hosts_path=str(known_hosts), directory=str(tmp_path / "crash"))
    logins = accepted_logins(sshd)
    with pytest.raises(TransferError, match="HOST KEY MISMATCH") as caught:
        send_dump(dest, cast(BinaryIO, _BytesStream(synthetic_stream())), TIMEOUT)
    fingerprints = [fingerprint(Path(f"{impostor.path}.pub")),
                    fingerprint(sshd.directory / "ssh_host_ed25519_key.pub")]
    assert all(f in str(caught.value) for f in fingerprints), (fingerprints, str(caught.value))
    assert not (tmp_path / "crash").exists()
    assert accepted_logins(sshd) == logins


def fingerprint(public_key: Path) -> str:
    """What `ssh-keygen -l` says, the way an admin would compare it."""
    return subprocess.run(["ssh-keygen", "-l", "-f", str(public_key)], check=True, capture_output=True,
                          text=True).stdout.split()[1]


def test_ssh_target_asks_for_the_pinned_host_key_type(sshd: Sshd, client_key: ClientKey,
                                                      tmp_path: Path) -> None:
    """The server has ed25519 and RSA keys; only the RSA one is pinned: it must be the one shown."""
    dest = destination(sshd, client_key, tmp_path, "rsa")
    with SshTarget.connect(dest, TIMEOUT) as target:
        assert target.has_sftp


def test_ssh_target_with_a_key_the_server_does_not_know_fails_without_prompting(
        sshd: Sshd, tmp_path: Path) -> None:
    stranger = keygen(tmp_path / "stranger", "ed25519")
    with pytest.raises(TransferError, match=r"logging in as root with .*/stranger: Authentication failed"):
        SshTarget.connect(destination(sshd, stranger, tmp_path), TIMEOUT)


# Failures ------------------------------------------------------------------------------------

class EndlessDump:
    """A flattened stream of 1 MiB records that never ends by itself; calls back after N bytes."""

    def __init__(self, after: int, callback: Callable[[], None], limit: int = 2 << 30) -> None:
        self.pending = bytearray(header())
        self.block = random.Random(7).randbytes(1 << 20)
        self.offset = 0
        self.sent = 0
        self.after = after
        self.callback: Callable[[], None] | None = callback
        self.limit = limit
        self.name = "makedumpfile"

    def read(self, size: int) -> bytes:
        while len(self.pending) < size and self.sent < self.limit:
            self.pending += record(self.offset, self.block)
            self.offset += len(self.block)
        data = bytes(self.pending[:size])
        del self.pending[:size]
        self.sent += len(data)
        if self.callback is not None and self.sent >= self.after:
            callback, self.callback = self.callback, None
            callback()
        return data


def test_ssh_target_server_killed_mid_transfer_raises_and_leaves_vmcore_incomplete(
        sshd_to_kill: Sshd, client_key: ClientKey, tmp_path: Path) -> None:
    killed = threading.Event()

    def kill_from_a_thread() -> None:
        sshd_to_kill.kill()
        killed.set()

    stream = EndlessDump(after=16 << 20, callback=lambda: threading.Thread(target=kill_from_a_thread).start())
    expected = rf"root@127\.0\.0\.1:{sshd_to_kill.port}: writing .*/vmcore-incomplete: "
    with pytest.raises(TransferError, match=expected):  # reconnecting fails too (test_ssh_resume_openssh.py)
        send_dump(destination(sshd_to_kill, client_key, tmp_path), cast(BinaryIO, stream), TIMEOUT,
                  resume_seconds=2.0)
    assert killed.wait(TIMEOUT)
    (dump_dir,) = (tmp_path / "crash").iterdir()
    assert os.listdir(dump_dir) == ["vmcore-incomplete"]
    assert (dump_dir / "vmcore-incomplete").stat().st_size > 0
    assert stream.sent < stream.limit


@pytest.fixture
def small_disk(sshd: Sshd, tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs as the server's dump file system."""
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mountpoint)],
                             check=False, capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        # lazy: the server's session may still be closing the partial file
        subprocess.run(["umount", "--lazy", str(mountpoint)], check=True)


@pytest.mark.parametrize("server_name", SERVERS)
def test_ssh_target_full_remote_disk_fails_and_keeps_the_partial_name(
        server_name: str, request: pytest.FixtureRequest, client_key: ClientKey, tmp_path: Path,
        small_disk: Path) -> None:
    server: Sshd = request.getfixturevalue(server_name)
    stream = EndlessDump(after=0, callback=lambda: None, limit=16 << 20)
    # sftp-server says a bare "Failure" for ENOSPC; cat says what it is.
    reason = "Failure (a full disk looks like this)" if server.sftp else "No space left on device"
    with pytest.raises(TransferError, match=re.escape(reason)):
        send_dump(destination(server, client_key, tmp_path, directory=str(small_disk)),
                  cast(BinaryIO, stream), TIMEOUT)
    (dump_dir,) = small_disk.iterdir()
    assert os.listdir(dump_dir) == ["vmcore-incomplete"]


def test_ssh_target_closed_port_fails_at_once(client_key: ClientKey, tmp_path: Path) -> None:
    dest = SshDestination("root", "127.0.0.1", port=free_port(), key_path=str(client_key.path),
                          known_hosts_path=str(tmp_path / "known_hosts"))
    (tmp_path / "known_hosts").write_text("")
    with pytest.raises(TransferError, match=f"cannot connect to 127.0.0.1 port {dest.port}: .*refused"):
        SshTarget.connect(dest, timeout=TIMEOUT)


def test_ssh_target_silent_server_fails_within_the_timeout(client_key: ClientKey, tmp_path: Path) -> None:
    """A server that accepts the connection and never speaks (a hung sshd) must not hang us."""
    (tmp_path / "known_hosts").write_text("")
    with socket_listening() as port:
        dest = SshDestination("root", "127.0.0.1", port=port, key_path=str(client_key.path),
                              known_hosts_path=str(tmp_path / "known_hosts"))
        started = time.monotonic()
        with pytest.raises(TransferError, match="SSH handshake"):
            SshTarget.connect(dest, timeout=1.0)
        assert time.monotonic() - started < 60  # not a timing test: "it came back at all"


@contextmanager
def socket_listening() -> Iterator[int]:
    """A port that accepts connections (the kernel does) and never says a word."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield int(listener.getsockname()[1])
