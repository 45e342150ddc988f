"""An SSH dump that survives a broken connection, against real OpenSSH on 127.0.0.1.

The client reaches sshd through a TCP relay (harness.relay) that a test cuts in the middle
of the transfer while sshd stays up, or sshd itself is restarted mid-transfer (its sessions
killed, the same port again a moment later). Either way the file left on the server must be
exactly what `makedumpfile -R` rebuilds from the stream, and the transfer must say what the
break cost. A server that is gone for good still fails the dump, within the budget; the
shell (`cat`) fallback cannot resume and fails as before; a server that comes back with
another host key is refused.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, cast

import pytest
from test_ssh_openssh import Tee, destination, reassembled, send_dump, synthetic_stream

from harness import sshd as servers
from harness.relay import Relay
from harness.sshd import ClientKey, Sshd
from kdump_agent.errors import TransferError
from kdump_agent.ssh.connection import SshTarget
from kdump_agent.targets.base import Transfer
from kdump_agent.targets.sshdest import SshDestination

client_key = servers.client_key
TIMEOUT = 20.0


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory, client_key: ClientKey) -> Iterator[Sshd]:
    """A server of the test's own: it may be cut off, restarted or killed."""
    yield from servers._server(tmp_path_factory, client_key, sftp=True)


@pytest.fixture
def server_no_sftp(tmp_path_factory: pytest.TempPathFactory, client_key: ClientKey) -> Iterator[Sshd]:
    yield from servers._server(tmp_path_factory, client_key, sftp=False)


def through(relay: Relay, dest: SshDestination) -> SshDestination:
    """The same server, reached through the relay (pinned under the relay's port)."""
    known_hosts = Path(dest.known_hosts_path)
    line = known_hosts.read_text().split(" ", 1)[1]
    known_hosts.write_text(f"[127.0.0.1]:{relay.port} {line}")
    return SshDestination(dest.user, dest.host, port=relay.port, directory=dest.directory,
                          key_path=dest.key_path, known_hosts_path=dest.known_hosts_path)


class Paced:
    """A collector's pipe: the stream in pieces, calling back once after `after` bytes."""

    def __init__(self, data: bytes, after: int, callback: Callable[[], None]) -> None:
        self.data = memoryview(data)
        self.position = 0
        self.after = after
        self.callback: Callable[[], None] | None = callback
        self.name = "makedumpfile"

    def read(self, size: int) -> bytes:
        piece = bytes(self.data[self.position:self.position + min(size, 7000)])
        self.position += len(piece)
        if self.callback is not None and self.position >= self.after:
            callback, self.callback = self.callback, None
            callback()
        return piece


def big_stream() -> bytes:
    return synthetic_stream(seed=5, records=600)  # ~25 MB of records, out of order, overlapping


def saved(transfer: Transfer) -> bytes:
    return Path(transfer.path).read_bytes()


def test_ssh_dump_resumes_after_the_network_is_cut_mid_transfer(
        server: Sshd, client_key: ClientKey, tmp_path: Path) -> None:
    stream = big_stream()
    with Relay(server.port) as relay:
        relay.cut_once_after(8 << 20)
        dest = through(relay, destination(server, client_key, tmp_path))
        transfer = send_dump(dest, cast(BinaryIO, Paced(stream, len(stream), lambda: None)), TIMEOUT)
        assert relay.cuts == 1 and relay.accepted == 2  # the first connection, then one more
    assert saved(transfer) == reassembled(stream, tmp_path)
    assert sorted(os.listdir(Path(transfer.directory))) == ["vmcore"]
    (interruption,) = transfer.interruptions
    assert 0 < interruption.at < len(stream)
    assert 0 < interruption.seconds < TIMEOUT
    assert interruption.reason
    assert transfer.stream_bytes == len(stream)
    assert server.log.read_text(errors="replace").count("Accepted publickey") == 2  # logged in again


def test_ssh_dump_resumes_after_sshd_restarts_mid_transfer(
        server: Sshd, client_key: ClientKey, tmp_path: Path) -> None:
    stream = big_stream()
    restarted = threading.Event()

    def restart() -> None:
        server.restart(down_seconds=2.0)  # the client finds it refused for a while
        restarted.set()

    paced = Paced(stream, 8 << 20, lambda: threading.Thread(target=restart).start())
    started = time.monotonic()
    transfer = send_dump(destination(server, client_key, tmp_path), cast(BinaryIO, paced), TIMEOUT)
    assert restarted.wait(TIMEOUT)
    assert saved(transfer) == reassembled(stream, tmp_path)
    (interruption,) = transfer.interruptions
    assert interruption.seconds >= 1.5  # it waited for sshd to come back...
    assert time.monotonic() - started < 60  # ...and not much longer (not a timing test)


@pytest.mark.qemu
def test_ssh_dump_of_real_makedumpfile_survives_a_cut_and_opens(
        server: Sshd, client_key: ClientKey, tmp_path: Path, elf_vmcore: Path) -> None:
    collector = subprocess.Popen(["makedumpfile", "-F", "-l", "-d", "31", str(elf_vmcore)],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert collector.stdout is not None
    stream = Tee(cast(BinaryIO, collector.stdout))
    with Relay(server.port) as relay:
        relay.cut_once_after(4 << 20)
        try:
            transfer = send_dump(through(relay, destination(server, client_key, tmp_path)),
                                 cast(BinaryIO, stream), TIMEOUT)
        finally:
            collector.stdout.close()
            returncode = collector.wait()
        assert relay.cuts == 1
    assert returncode == 0
    assert len(transfer.interruptions) == 1
    assert saved(transfer) == reassembled(bytes(stream.kept), tmp_path)
    dmesg = tmp_path / "dmesg.txt"
    subprocess.run(["makedumpfile", "--dump-dmesg", transfer.path, str(dmesg)], check=True,
                   stdout=subprocess.DEVNULL)
    assert "sysrq: Trigger a crash" in dmesg.read_text(errors="replace")


def test_ssh_dump_to_a_server_gone_for_good_fails_within_the_budget(
        server: Sshd, client_key: ClientKey, tmp_path: Path) -> None:
    stream = big_stream()
    paced = Paced(stream, 8 << 20, server.kill)
    dest = destination(server, client_key, tmp_path)
    started = time.monotonic()
    with SshTarget.connect(dest, TIMEOUT, resume_seconds=5.0) as target:
        dump_dir = Path(target.make_dump_dir("gone"))
        with pytest.raises(TransferError, match=rf"^root@127\.0\.0\.1:{server.port}: writing "
                                                r".*/vmcore-incomplete: .*; no new connection within 5 s "
                                                r"\(\d+ attempts; the last: .*Connection refused\)$"):
            target.receive_flattened(cast(BinaryIO, paced))
    assert time.monotonic() - started < 5.0 + TIMEOUT
    assert os.listdir(dump_dir) == ["vmcore-incomplete"]


def test_ssh_dump_through_cat_cannot_resume_and_fails_as_before(
        server_no_sftp: Sshd, client_key: ClientKey, tmp_path: Path) -> None:
    stream = big_stream()
    with Relay(server_no_sftp.port) as relay:
        relay.cut_once_after(8 << 20)
        dest = through(relay, destination(server_no_sftp, client_key, tmp_path))
        with pytest.raises(TransferError, match=r"writing .*/vmcore-incomplete: "):
            send_dump(dest, cast(BinaryIO, Paced(stream, len(stream), lambda: None)), TIMEOUT)
        assert relay.accepted == 1  # no second connection was tried


def test_ssh_dump_refuses_a_server_that_comes_back_with_another_host_key(
        server: Sshd, client_key: ClientKey, tmp_path: Path,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    impostor = Sshd(tmp_path_factory.mktemp("impostor"), authorized=(client_key,)).start()
    try:
        with Relay(server.port) as relay:
            def redirect() -> None:
                relay.target_port = impostor.port  # the next connection lands elsewhere
                relay.cut()

            dest = through(relay, destination(server, client_key, tmp_path))
            with pytest.raises(TransferError, match=r"reconnecting refused: .*HOST KEY MISMATCH"):
                send_dump(dest, cast(BinaryIO, Paced(big_stream(), 8 << 20, redirect)), TIMEOUT)
        assert "Accepted publickey" not in impostor.log.read_text(errors="replace")
    finally:
        impostor.stop()
