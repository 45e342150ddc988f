"""The SSH target's pure parts (spec, algorithm order, host key pinning, keys, SFTP replies) and
its refusal of untrusted servers, against an in-process paramiko server on 127.0.0.1."""

from __future__ import annotations

import re
import socket
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paramiko.message import Message
from paramiko.sftp import CMD_HANDLE, CMD_STATUS, CMD_WRITE, SFTP_FAILURE, SFTP_OK, SFTP_OP_UNSUPPORTED

from kdump_agent.errors import TransferError
from kdump_agent.targets import ssh
from kdump_agent.targets.ssh import (
    SshDestination,
    SshTarget,
    TransferSummary,
    check_host_key,
    cipher_preference,
    host_key_preference,
    load_client_key,
    parse_spec,
    partial_name,
    pinned_host_keys,
)

ED25519 = paramiko.Ed25519Key


def ed25519_key(path: Path) -> paramiko.PKey:
    """A fresh ed25519 key written in OpenSSH's format (what ssh-keygen makes)."""
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    path.write_bytes(pem)
    return paramiko.PKey.from_path(path)


def known_hosts_line(names: str, key: paramiko.PKey) -> str:
    return f"{names} {key.get_name()} {key.get_base64()}\n"


def destination(tmp_path: Path, port: int = 22, host: str = "192.0.2.7") -> SshDestination:
    return SshDestination("root", host, port=port, known_hosts_path=str(tmp_path / "known_hosts"),
                          key_path=str(tmp_path / "id"))


# Spec ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, user, host, port", [
    ("root@dumps.example.com", "root", "dumps.example.com", 22),
    ("kdump@192.0.2.7:2222", "kdump", "192.0.2.7", 2222),
    ("root@[2001:db8::1]", "root", "2001:db8::1", 22),
    ("root@[::1]:2222", "root", "::1", 2222),
    ("root@2001:db8::1", "root", "2001:db8::1", 22),
    ("root@[fe80::1%eth0]:22", "root", "fe80::1%eth0", 22),
])
def test_ssh_spec_parses_user_host_and_port(spec: str, user: str, host: str, port: int) -> None:
    parsed = parse_spec(spec, directory="/var/crash/x")
    assert (parsed.user, parsed.host, parsed.port, parsed.directory) == (user, host, port, "/var/crash/x")
    assert parsed.key_path == "/root/.ssh/kdump_id_rsa"


@pytest.mark.parametrize("spec, message", [
    ("dumps.example.com", "must look like user@host"),
    ("@host", "must look like user@host"),
    ("root@", "must look like user@host"),
    ("a@b@c", "must look like user@host"),
    ("root@host:", "no port after"),
    ("root@host:ssh", "port 'ssh' is not a number"),
    ("root@host:0", "port '0' is not a number from 1 to 65535"),
    ("root@host:65536", "port '65536'"),
    ("root@[::1", "an IPv6 address goes in brackets"),
    ("root@[::1]2222", "an IPv6 address goes in brackets"),
    ("root@[dumps]:22", "'dumps' is not an IPv6 address"),
    ("root@:22", "names no host"),
])
def test_ssh_spec_errors_name_the_spec_and_the_problem(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"SSH target {spec!r}.*{message}".replace("[", r"\[")):
        parse_spec(spec)


def test_ssh_destination_names_itself_and_its_known_hosts_entry_as_openssh_does() -> None:
    assert str(SshDestination("root", "dumps")) == "root@dumps"
    assert SshDestination("root", "dumps").known_hosts_name == "dumps"
    assert str(SshDestination("root", "::1", port=2222)) == "root@[::1]:2222"
    assert SshDestination("root", "::1", port=2222).known_hosts_name == "[::1]:2222"
    assert SshDestination("root", "192.0.2.7", port=2222).known_hosts_name == "[192.0.2.7]:2222"


def test_transfer_summary_names_the_file() -> None:
    summary = TransferSummary(path="/var/crash/d/vmcore", size=1, records=1, stream_bytes=1, seconds=0.1,
                              flattened=False, sha256=None)
    assert (summary.directory, summary.name) == ("/var/crash/d", "vmcore")


def test_partial_names_follow_the_local_target() -> None:
    assert partial_name("vmcore") == "vmcore-incomplete"
    assert partial_name("vmcore-dmesg.txt") == "vmcore-dmesg-incomplete.txt"
    assert partial_name("kdump-agent.json") == "kdump-agent-incomplete.json"


# Algorithms ---------------------------------------------------------------------------------

def test_ssh_cipher_preference_puts_aes_gcm_first_and_keeps_the_rest() -> None:
    available = paramiko.Transport._preferred_ciphers
    preferred = cipher_preference(available)
    assert preferred[:2] == ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
    assert sorted(preferred) == sorted(available)
    assert cipher_preference(("aes128-ctr", "aes256-ctr")) == ("aes128-ctr", "aes256-ctr")


def test_ssh_transport_options_accept_the_preferred_order() -> None:
    with socket.socket() as unconnected:
        transport = paramiko.Transport(unconnected)
        options = transport.get_security_options()
        options.ciphers = cipher_preference(options.ciphers)
        assert transport._preferred_ciphers[0] == "aes128-gcm@openssh.com"


def test_ssh_host_key_preference_offers_the_pinned_types_first(tmp_path: Path) -> None:
    available = paramiko.Transport._preferred_keys
    rsa = paramiko.RSAKey.generate(1024)
    assert host_key_preference([rsa], available)[:2] == ("rsa-sha2-512", "rsa-sha2-256")
    ecdsa = paramiko.ECDSAKey.generate()
    assert host_key_preference([ecdsa, rsa], available)[:3] == (
        "ecdsa-sha2-nistp256", "rsa-sha2-512", "rsa-sha2-256")
    assert sorted(host_key_preference([ecdsa, rsa], available)) == sorted(available)
    assert host_key_preference([], available) == tuple(available)


# Host key pinning ---------------------------------------------------------------------------

def test_ssh_pinned_host_keys_match_names_as_openssh_does(tmp_path: Path) -> None:
    keys = [paramiko.ECDSAKey.generate() for _ in range(6)]
    hashed = paramiko.HostKeys.hash_host("[192.0.2.7]:2222")
    (tmp_path / "known_hosts").write_text(
        "# pinned by kdump-agent mkinitrd\n\n"
        + known_hosts_line("[192.0.2.7]:2222", keys[0])
        + known_hosts_line("192.0.2.7", keys[1])  # port 22 only
        + known_hosts_line(hashed, keys[2])
        + known_hosts_line("[192.0.2.*]:2222,![192.0.2.9]:2222", keys[3])
        + known_hosts_line("other.example.com", keys[4])
        + "@revoked [192.0.2.7]:2222 " + " ".join(known_hosts_line("x", keys[5]).split()[1:]) + "\n"
        + "[192.0.2.7]:2222 ssh-unknown AAAA\n")
    pinned = pinned_host_keys(str(tmp_path / "known_hosts"), destination(tmp_path, port=2222))
    assert [k.asbytes() for k in pinned] == [keys[i].asbytes() for i in (0, 2, 3)]
    assert [k.asbytes() for k in pinned_host_keys(str(tmp_path / "known_hosts"), destination(tmp_path))] == [
        keys[1].asbytes()]
    negated = destination(tmp_path, port=2222, host="192.0.2.9")
    assert pinned_host_keys(str(tmp_path / "known_hosts"), negated) == []


def test_ssh_pinned_host_keys_unreadable_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TransferError, match=r"^root@192\.0\.2\.7: cannot read the pinned host keys: "):
        pinned_host_keys(str(tmp_path / "missing"), destination(tmp_path))


def revoked_line(names: str, key: paramiko.PKey, separator: str = " ") -> str:
    return separator.join(["@revoked", names, key.get_name(), key.get_base64()]) + "\n"


@pytest.mark.parametrize("revoked_for", ["[192.0.2.7]:2222", "*", "other.example.com"])
def test_ssh_a_revoked_key_is_never_pinned_whatever_names_its_line_lists(tmp_path: Path, caplog: Any,
                                                                         revoked_for: str) -> None:
    stolen, current = ed25519_key(tmp_path / "stolen"), ed25519_key(tmp_path / "current")
    (tmp_path / "known_hosts").write_text(
        known_hosts_line("[192.0.2.7]:2222", stolen) + known_hosts_line("[192.0.2.7]:2222", current)
        + revoked_line(revoked_for, stolen))
    pinned = pinned_host_keys(str(tmp_path / "known_hosts"), destination(tmp_path, port=2222))
    assert [k.asbytes() for k in pinned] == [current.asbytes()]
    assert (f"{tmp_path}/known_hosts:1: not pinning ssh-ed25519 {stolen.fingerprint} for [192.0.2.7]:2222: "
            f"it is revoked ({tmp_path}/known_hosts:3)") in caplog.messages


def test_ssh_a_revocation_with_tabs_and_before_the_key_counts_too(tmp_path: Path) -> None:
    stolen = ed25519_key(tmp_path / "stolen")
    (tmp_path / "known_hosts").write_text(revoked_line("192.0.2.7", stolen, "\t")
                                          + known_hosts_line("192.0.2.7", stolen))
    assert pinned_host_keys(str(tmp_path / "known_hosts"), destination(tmp_path)) == []


def test_ssh_cert_authority_lines_pin_nothing_and_say_why(tmp_path: Path, caplog: Any) -> None:
    authority = ed25519_key(tmp_path / "ca")
    (tmp_path / "known_hosts").write_text(f"@cert-authority *.example.com {authority.get_name()} "
                                          f"{authority.get_base64()}\n")
    dumps = destination(tmp_path, host="dumps.example.com")
    assert pinned_host_keys(str(tmp_path / "known_hosts"), dumps) == []
    assert (f"{tmp_path}/known_hosts:1: @cert-authority pins nothing for dumps.example.com: the capture "
            "kernel checks the server's own host key, not host certificates; pin that key") in caplog.messages


def test_ssh_host_key_check_accepts_a_pinned_key(tmp_path: Path) -> None:
    key = paramiko.ECDSAKey.generate()
    same = paramiko.PKey.from_type_string(key.get_name(), key.asbytes())
    check_host_key(destination(tmp_path), same, [paramiko.ECDSAKey.generate(), key])


def test_ssh_host_key_check_rejects_unknown_host_key_naming_host_and_fingerprint(tmp_path: Path) -> None:
    offered = paramiko.ECDSAKey.generate()
    with pytest.raises(TransferError) as caught:
        check_host_key(destination(tmp_path, port=2222), offered, [])
    message = str(caught.value)
    assert message.startswith("root@192.0.2.7:2222: unknown host:")
    assert "pins no key for [192.0.2.7]:2222" in message
    assert f"ecdsa-sha2-nistp256 {offered.fingerprint}" in message
    assert offered.fingerprint.startswith("SHA256:")


def test_ssh_host_key_check_rejects_changed_host_key_with_both_fingerprints(tmp_path: Path) -> None:
    pinned, offered = paramiko.RSAKey.generate(1024), paramiko.ECDSAKey.generate()
    with pytest.raises(TransferError, match="HOST KEY MISMATCH") as caught:
        check_host_key(destination(tmp_path), offered, [pinned])
    message = str(caught.value)
    assert f"the server offers ecdsa-sha2-nistp256 {offered.fingerprint}" in message
    assert f"pins ssh-rsa {pinned.fingerprint} for 192.0.2.7" in message


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


# SFTP replies: every write's status counts --------------------------------------------------

def status(code: int, text: str = "") -> Message:
    message = Message()
    message.add_int(code)
    message.add_string(text)
    message.add_string("")
    return Message(message.asbytes())


class FakeSftpClient:
    """SFTPClient's request/reply plumbing, answering from a script (possibly out of order)."""

    def __init__(self, replies: dict[int, tuple[int, Message]], order: list[int] | None = None) -> None:
        self.replies = replies  # request type -> reply, unless numbered below
        self.numbered: dict[int, tuple[int, Message]] = {}
        self.sent: list[tuple[int, tuple[Any, ...]]] = []
        self.waiting: deque[tuple[Any, int, int]] = deque()
        self.order = order
        self.sock = self

    def recv_ready(self) -> bool:
        return False

    def _async_request(self, fileobj: Any, kind: int, *args: Any) -> int:
        self.sent.append((kind, args))
        number = len(self.sent)
        self.waiting.append((fileobj, number, kind))
        return number

    def _read_response(self, waitfor: int | None = None) -> None:
        index = 0
        if self.order:  # answer the request the script names next, if it was sent
            wanted = self.order[0]
            index = next((i for i, w in enumerate(self.waiting) if w[1] == wanted), 0)
            if self.waiting[index][1] == wanted:
                self.order.pop(0)
        fileobj, number, kind = self.waiting[index]
        del self.waiting[index]
        reply = self.numbered.get(number) or self.replies.get(kind) or (CMD_STATUS, status(SFTP_OK))
        kind_out, message = reply
        fileobj._async_response(kind_out, Message(message.asbytes()), number)


def sftp(client: FakeSftpClient) -> ssh._Sftp:
    return ssh._Sftp(cast(paramiko.SFTPClient, client))


def handle_reply() -> tuple[int, Message]:
    message = Message()
    message.add_string(b"h1")
    return CMD_HANDLE, message


def test_sftp_write_failure_in_flight_is_reported_with_its_offset() -> None:
    client = FakeSftpClient({1: handle_reply()})
    client.replies[3] = handle_reply()  # CMD_OPEN is 3
    client.numbered[4] = (CMD_STATUS, status(SFTP_FAILURE, "Failure"))  # the third write (open is #1)
    remote = ssh._SftpFile(sftp(client), "/var/crash/d/vmcore-incomplete")
    remote.write_size = 4
    remote.write_at(100, b"abcdefghijkl")  # three requests, all in flight
    with pytest.raises(OSError, match=r"^write at offset 108: Failure \(a full disk looks like this\)$"):
        remote.finish()
    writes = [args for kind, args in client.sent if kind == CMD_WRITE]
    assert [(int(a[1]), a[2]) for a in writes] == [(100, b"abcd"), (104, b"efgh"), (108, b"ijkl")]


def test_sftp_replies_out_of_order_are_matched_by_request() -> None:
    client = FakeSftpClient({3: handle_reply()}, order=[1, 4, 3, 2])
    client.numbered[2] = (CMD_STATUS, status(SFTP_FAILURE, "disk on fire"))
    remote = ssh._SftpFile(sftp(client), "/d/f")
    remote.write_size = 4
    remote.write_at(0, b"abcdefghijkl")
    with pytest.raises(OSError, match="^write at offset 0: disk on fire$"):
        remote.finish()


def test_sftp_finish_fsyncs_when_it_can_and_checks_the_close(mocker: Any) -> None:
    client = FakeSftpClient({3: handle_reply()})
    remote = ssh._SftpFile(sftp(client), "/d/f")
    remote.write_at(0, b"x")
    client.numbered[3] = (CMD_STATUS, status(SFTP_OP_UNSUPPORTED, ""))  # fsync@openssh.com
    client.numbered[4] = (CMD_STATUS, status(SFTP_FAILURE, "Input/output error"))  # close
    with pytest.raises(OSError, match="^close: Input/output error$"):
        remote.finish()
    assert [args[0] for _, args in client.sent[2:3]] == ["fsync@openssh.com"]


def written(client: FakeSftpClient) -> list[tuple[int, bytes]]:
    return [(int(args[1]), args[2]) for kind, args in client.sent if kind == CMD_WRITE]


def test_sftp_adjacent_records_of_two_regions_leave_as_few_large_writes() -> None:
    client = FakeSftpClient({3: handle_reply()})
    remote = ssh._SftpFile(sftp(client), "/d/f")
    remote.write_size = 8
    for page in range(4):  # descriptors at 0.., data at 1000.., in turns, as makedumpfile writes
        remote.write_at(page * 2, b"d%d" % page)
        remote.write_at(1000 + page * 3, b"P%d!" % page)
    assert written(client) == [(1000, b"P0!P1!P2"), (0, b"d0d1d2d3")]  # full writes leave at once
    remote.finish()
    assert sorted(written(client)) == [(0, b"d0d1d2d3"), (1000, b"P0!P1!P2"), (1008, b"!P3!")]


def test_sftp_a_record_overlapping_pending_data_is_sent_after_it() -> None:
    client = FakeSftpClient({3: handle_reply()})
    remote = ssh._SftpFile(sftp(client), "/d/f")
    remote.write_size = 64
    remote.write_at(0, b"old header")
    remote.write_at(0, b"NEW")  # makedumpfile rewrites the header at the end: the later one wins
    remote.finish()
    assert written(client) == [(0, b"old header"), (0, b"NEW")]


def test_sftp_write_size_fills_whole_channel_packets() -> None:
    assert ssh.write_size(None, 32768, b"1234") == 32768 - 64 - 25 - 4  # one packet, no tiny second
    big = ssh.write_size(261120, 32768, b"1234")  # OpenSSH's limit: 7 full packets
    assert big <= 261120 and (big + 25 + 4) % (32768 - 64) == 0


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
