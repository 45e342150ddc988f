"""SshTarget's connection: algorithm order, client keys, names on the server, and its refusal of
untrusted servers, against an in-process paramiko server on 127.0.0.1."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sshkeys import ed25519_key, known_hosts_line, revoked_line

from kdump_agent.errors import TransferError
from kdump_agent.layout import partial
from kdump_agent.ssh import chachapoly
from kdump_agent.ssh.connection import (
    SshTarget,
    cipher_preference,
    load_client_key,
)
from kdump_agent.targets.base import Transfer
from kdump_agent.targets.sshdest import SshDestination

# Names on the server ------------------------------------------------------------------------

def test_transfer_summary_names_the_file() -> None:
    summary = Transfer(path="/var/crash/d/vmcore", size=1, records=1, stream_bytes=1, seconds=0.1,
                              flattened=False, sha256=None)
    assert (summary.directory, summary.name) == ("/var/crash/d", "vmcore")


def test_partial_names_follow_the_local_target() -> None:
    assert partial("vmcore") == "vmcore-incomplete"
    assert partial("vmcore-dmesg.txt") == "vmcore-dmesg-incomplete.txt"
    assert partial("kdump-agent.json") == "kdump-agent-incomplete.json"


# Algorithms ---------------------------------------------------------------------------------

def test_ssh_cipher_preference_puts_aes_gcm_first_and_keeps_the_rest() -> None:
    available = paramiko.Transport._preferred_ciphers
    preferred = cipher_preference(available, "flags\t: fpu sse2 aes\n")
    assert preferred[:2] == ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
    assert sorted(preferred) == sorted(available)
    assert cipher_preference(("aes128-ctr", "aes256-ctr"), "") == ("aes128-ctr", "aes256-ctr")


@pytest.mark.parametrize(("flags", "first"), [("fpu sse2 aes", "aes128-gcm@openssh.com"),
                                               ("fpu sse2", "chacha20-poly1305@openssh.com")])
def test_ssh_transport_options_accept_the_preferred_order(flags: str, first: str) -> None:
    with socket.socket() as unconnected:
        transport = chachapoly.Transport(unconnected)
        options = transport.get_security_options()
        options.ciphers = cipher_preference(options.ciphers, f"flags\t: {flags}\n")
        assert transport._preferred_ciphers[0] == first


# Client keys --------------------------------------------------------------------------------

def test_ssh_client_keys_of_every_kind_load(tmp_path: Path) -> None:
    paramiko.RSAKey.generate(2048).write_private_key_file(str(tmp_path / "rsa"))
    paramiko.ECDSAKey.generate().write_private_key_file(str(tmp_path / "ecdsa"))
    ed25519_key(tmp_path / "ed25519")
    assert load_client_key(str(tmp_path / "rsa")).get_name() == "ssh-rsa"
    assert load_client_key(str(tmp_path / "ecdsa")).get_name() == "ecdsa-sha2-nistp256"
    assert load_client_key(str(tmp_path / "ed25519")).get_name() == "ssh-ed25519"


def test_ssh_client_key_with_passphrase_is_refused_without_prompting(tmp_path: Path) -> None:
    paramiko.RSAKey.generate(2048).write_private_key_file(str(tmp_path / "pem"), password="secret")
    (tmp_path / "openssh").write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.BestAvailableEncryption(b"secret")))
    for name in ("pem", "openssh"):
        with pytest.raises(TransferError, match=f"SSH key {tmp_path}/{name} has a passphrase; kdump needs "
                                                "a key without one"):
            load_client_key(str(tmp_path / name))


def test_ssh_client_key_missing_is_an_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(TransferError, match=f"cannot use SSH key {tmp_path}/none: .*No such file"):
        load_client_key(str(tmp_path / "none"))


# The connection, against an in-process server ----------------------------------------------

class RecordingServer(paramiko.ServerInterface):  # type: ignore[misc]  # paramiko has no types
    """Remembers every authentication attempt; lets in only `accepted`; then hangs on a request."""

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self.accepted: paramiko.PKey | None = None
        self.release = threading.Event()  # what a hung sshd never gets

    def get_allowed_auths(self, username: str) -> str:
        return "publickey,password"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        self.attempts.append(f"publickey {username} {key.get_name()}")
        if self.accepted is not None and key.asbytes() == self.accepted.asbytes():
            return int(paramiko.AUTH_SUCCESSFUL)
        return int(paramiko.AUTH_FAILED)

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return int(paramiko.OPEN_SUCCEEDED)

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        self.release.wait(60)  # the transport thread stalls: the connection is up, nobody answers
        return False

    def check_auth_password(self, username: str, password: str) -> int:
        self.attempts.append(f"password {username}")
        return int(paramiko.AUTH_FAILED)


class InProcessServer:
    def __init__(self) -> None:
        self.host_key = paramiko.ECDSAKey.generate()
        self.interface = RecordingServer()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        transport = paramiko.Transport(connection)
        transport.add_server_key(self.host_key)
        try:
            transport.start_server(server=self.interface)
            transport.join(30)
        except (paramiko.SSHException, EOFError, OSError):
            pass  # the client hung up: that is what these tests are about
        finally:
            transport.close()

    def close(self) -> None:
        self.listener.close()
        self.thread.join(30)


@pytest.fixture
def server() -> Iterator[InProcessServer]:
    running = InProcessServer()
    yield running
    running.close()


def client_setup(tmp_path: Path, server: InProcessServer, pin: paramiko.PKey | None) -> SshDestination:
    ed25519_key(tmp_path / "id")
    (tmp_path / "known_hosts").write_text(known_hosts_line(f"[127.0.0.1]:{server.port}", pin) if pin else "")
    return SshDestination("root", "127.0.0.1", port=server.port, key_path=str(tmp_path / "id"),
                          known_hosts_path=str(tmp_path / "known_hosts"))


def test_ssh_target_rejects_unknown_host_key_before_authenticating(tmp_path: Path,
                                                                   server: InProcessServer) -> None:
    with pytest.raises(TransferError, match=f"unknown host: .*{re.escape(server.host_key.fingerprint)}"):
        SshTarget.connect(client_setup(tmp_path, server, None), timeout=30)
    server.thread.join(30)
    assert server.interface.attempts == []


def test_ssh_target_rejects_changed_host_key_before_authenticating(tmp_path: Path,
                                                                   server: InProcessServer) -> None:
    with pytest.raises(TransferError, match="HOST KEY MISMATCH"):
        SshTarget.connect(client_setup(tmp_path, server, paramiko.ECDSAKey.generate()), timeout=30)
    server.thread.join(30)
    assert server.interface.attempts == []


def test_ssh_target_refuses_a_server_whose_pinned_key_is_revoked(tmp_path: Path,
                                                                 server: InProcessServer) -> None:
    """`@revoked host KEY` beside `host KEY`: OpenSSH refuses this server, and so do we."""
    destination = client_setup(tmp_path, server, server.host_key)
    with open(destination.known_hosts_path, "a") as known_hosts:
        known_hosts.write(revoked_line(f"[127.0.0.1]:{server.port}", server.host_key))
    with pytest.raises(TransferError, match="unknown host: .* pins no key for"):
        SshTarget.connect(destination, timeout=30)
    server.thread.join(30)
    assert server.interface.attempts == []


def test_ssh_target_logs_in_with_the_key_only_never_a_password(tmp_path: Path,
                                                               server: InProcessServer) -> None:
    with pytest.raises(TransferError, match=r"logging in as root with .*/id: Authentication failed"):
        SshTarget.connect(client_setup(tmp_path, server, server.host_key), timeout=30)
    server.thread.join(30)
    assert server.interface.attempts == ["publickey root ssh-ed25519"]


def test_ssh_target_server_that_stops_answering_fails_at_the_timeout(tmp_path: Path,
                                                                     server: InProcessServer) -> None:
    """paramiko waits for a channel request's answer with no timeout of its own."""
    destination = client_setup(tmp_path, server, server.host_key)
    server.interface.accepted = paramiko.PKey.from_path(tmp_path / "id")
    try:
        with pytest.raises(TransferError, match=r"opening an SFTP session: no answer within 1 s$"):
            SshTarget.connect(destination, timeout=1)
    finally:
        server.interface.release.set()
