"""`propagate`: key, host key pinned after confirmation, ssh-copy-id, key-only login."""

from __future__ import annotations

import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paramiko
import pytest

from kdump_agent.config import parse
from kdump_agent.errors import KdumpError
from kdump_agent.host import propagate as prop
from kdump_agent.ssh.hostkeys import describe_key, pinned_host_keys
from kdump_agent.targets.sshdest import parse_spec


def test_known_hosts_line_is_openssh_format_and_reads_back_as_the_pin(tmp_path: Path) -> None:
    key = paramiko.ECDSAKey.generate()
    destination = parse_spec("kdump@dumps.example.com:2222")
    line = prop.known_hosts_line(destination.known_hosts_name, key)
    assert line == f"[dumps.example.com]:2222 ecdsa-sha2-nistp256 {key.get_base64()}\n"
    known_hosts = tmp_path / "ssh" / "known_hosts"
    prop.add_known_host(str(known_hosts), line)
    assert [k.asbytes() for k in pinned_host_keys(str(known_hosts), destination)] == [key.asbytes()]
    assert stat.S_IMODE(known_hosts.stat().st_mode) == 0o600
    assert stat.S_IMODE(known_hosts.parent.stat().st_mode) == 0o700


def test_a_line_is_appended_after_a_last_line_without_newline(tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("other.example.com ssh-ed25519 AAAA")
    prop.add_known_host(str(known_hosts), "dumps.example.com ssh-ed25519 BBBB\n")
    assert known_hosts.read_text().splitlines() == ["other.example.com ssh-ed25519 AAAA",
                                                    "dumps.example.com ssh-ed25519 BBBB"]


class Server:
    """The boundaries of one propagate run: ssh-keygen, the server's host key, ssh-copy-id, login."""

    def __init__(self, tmp_path: Path, mocker: Any) -> None:
        self.key_path = tmp_path / "ssh" / "kdump_id_ed25519"
        self.known_hosts = tmp_path / "ssh" / "known_hosts"
        self.config = parse(f"ssh kdump@dumps.example.com:2222\nsshkey {self.key_path}\n", "/etc/kdump.conf")
        self.host_key = paramiko.ECDSAKey.generate()
        self.run = mocker.patch("kdump_agent.system.run", side_effect=self._keygen)
        self.fetch = mocker.patch.object(prop, "fetch_host_key", return_value=self.host_key)
        self.login = mocker.patch.object(prop, "check_login")
        self.installed: list[Sequence[str]] = []
        self.questions: list[str] = []

    def _keygen(self, argv: list[str], **_: Any) -> subprocess.CompletedProcess[bytes]:
        if "-f" in argv and "-y" not in argv:
            Path(argv[-1]).write_text("PRIVATE")
            Path(argv[-1] + ".pub").write_text("ssh-ed25519 AAAA kdump-agent@host\n")
        return subprocess.CompletedProcess(argv, 0, b"ssh-ed25519 AAAA derived\n", b"")

    def propagate(self, answer: str = "yes", status: int = 0) -> Any:
        def ask(question: str) -> str:
            self.questions.append(question)
            return answer

        def install(argv: Sequence[str]) -> int:
            self.installed.append(argv)
            return status

        return prop.propagate(self.config, known_hosts=str(self.known_hosts), ask=ask, install=install)


@pytest.fixture
def server(tmp_path: Path, mocker: Any) -> Server:
    return Server(tmp_path, mocker)


def test_first_run_creates_the_key_pins_the_confirmed_host_key_installs_and_logs_in(server: Server) -> None:
    destination = server.propagate()
    keygen = server.run.call_args_list[0].args[0]
    assert keygen[:6] == ["ssh-keygen", "-q", "-t", "ed25519", "-N", ""]
    assert keygen[-1] == str(server.key_path)
    assert describe_key(server.host_key) in server.questions[0]
    assert "ssh-keygen -lf /etc/ssh/ssh_host_ecdsa_key.pub" in server.questions[0]
    line = prop.known_hosts_line("[dumps.example.com]:2222", server.host_key)
    assert server.known_hosts.read_text() == line
    assert server.installed == [["ssh-copy-id", "-i", f"{server.key_path}.pub", "-p", "2222",
                                 "-o", f"UserKnownHostsFile={server.known_hosts}",
                                 "-o", "StrictHostKeyChecking=yes", "kdump@dumps.example.com"]]
    server.login.assert_called_once_with(destination, str(server.known_hosts))


def test_declining_the_host_key_records_and_installs_nothing(server: Server) -> None:
    with pytest.raises(KdumpError, match="host key was not confirmed: nothing recorded or installed"):
        server.propagate(answer="no")
    assert not server.known_hosts.exists() and server.installed == []
    server.login.assert_not_called()


def test_a_host_key_already_recorded_is_not_asked_about_again(server: Server) -> None:
    server.propagate()
    server.questions.clear()
    server.propagate()
    assert server.questions == []
    assert len(server.known_hosts.read_text().splitlines()) == 1
    assert len(server.installed) == 2


def test_a_different_host_key_than_the_recorded_one_is_refused_before_asking(server: Server) -> None:
    server.propagate()
    server.fetch.return_value = paramiko.ECDSAKey.generate()
    server.questions.clear()
    with pytest.raises(KdumpError, match=r"HOST KEY MISMATCH: \[dumps.example.com\]:2222 offers"):
        server.propagate()
    assert server.questions == [] and len(server.installed) == 1


def test_ssh_copy_id_failing_is_reported_and_no_login_is_tried(server: Server) -> None:
    with pytest.raises(KdumpError, match="ssh-copy-id exited 1: .*kdump_id_ed25519.pub is not installed"):
        server.propagate(status=1)
    server.login.assert_not_called()


def test_a_config_without_ssh_target_has_nothing_to_propagate() -> None:
    with pytest.raises(KdumpError, match="/etc/kdump.conf: no ssh target"):
        prop.propagate(parse("nfs nas:/export\n", "/etc/kdump.conf"))
