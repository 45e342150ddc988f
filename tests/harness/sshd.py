"""A real OpenSSH server on 127.0.0.1 for the SSH target's tests.

`Sshd` runs `/usr/sbin/sshd -D -e -f <its own sshd_config>` on a free loopback port with a
throw-away host key, an authorized_keys file in its directory and its log in `sshd.log`
there. Whatever the dump directory is on the "server", it is a local path the test can
inspect. A test module takes the fixtures by name (`sshd = servers.sshd` after
`from harness import sshd as servers`): pytest finds fixtures among a module's attributes.

Stopping is by pid only: the listener and the per-connection processes it forked (found
through /proc), never by name, since other jobs may run their own sshd meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = "/run/sshd"  # sshd refuses to start without its privilege separation directory
START_TIMEOUT = 30.0  # an upper bound for the banner to appear, not an expected time


@dataclass(frozen=True)
class ClientKey:
    path: Path
    public_line: str  # "ssh-ed25519 AAAA... comment"


def keygen(path: Path, kind: str = "ed25519") -> ClientKey:
    """A key pair without passphrase, made by ssh-keygen (RSA as RHEL's default kdump_id_rsa)."""
    argv = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"kdump-agent-test-{kind}", "-f", str(path)]
    if kind == "rsa":
        argv[4:4] = ["-b", "2048"]
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
    return ClientKey(path, Path(f"{path}.pub").read_text().strip())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Sshd:
    """One sshd; start() waits for its banner, kill() ends it and its sessions at once."""

    def __init__(self, directory: Path, *, sftp: bool = True, host_key_types: tuple[str, ...] = ("ed25519",),
                 authorized: tuple[ClientKey, ...] = (), listen: tuple[str, ...] = ("127.0.0.1",),
                 prefix: tuple[str, ...] = ()) -> None:
        """`listen` are the addresses sshd binds; `prefix` runs it elsewhere, e.g. inside a
        harness.netlab namespace (`lab.prefix`, with `listen` the lab's server addresses),
        where this process cannot connect: readiness is then read from sshd's log."""
        self.directory = directory
        self.sftp = sftp
        self.listen = listen
        self.prefix = prefix
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self.host_keys = [directory / f"ssh_host_{kind}_key" for kind in host_key_types]
        for path, kind in zip(self.host_keys, host_key_types, strict=True):
            if not path.exists():
                keygen(path, kind)
        self.authorized_keys = directory / "authorized_keys"
        self.authorized_keys.write_text("".join(f"{key.public_line}\n" for key in authorized))
        self.log = directory / "sshd.log"
        self.pid_file = directory / "sshd.pid"

    def host_key_line(self, kind: str) -> str:
        """`<type> <base64>` of one of the server's host keys."""
        return " ".join((self.directory / f"ssh_host_{kind}_key.pub").read_text().split()[:2])

    def known_hosts(self, path: Path, *kinds: str, name: str | None = None) -> Path:
        """Write a known_hosts pinning the given host key types for this server."""
        name = name or f"[127.0.0.1]:{self.port}"
        path.write_text("".join(f"{name} {self.host_key_line(kind)}\n" for kind in kinds))
        return path

    def config_text(self) -> str:
        lines = [
            f"Port {self.port}",
            *(f"ListenAddress {address}" for address in self.listen),
            *(f"HostKey {path}" for path in self.host_keys),
            f"PidFile {self.pid_file}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "StrictModes no",
            "UsePAM no",
            "LogLevel VERBOSE",
            "MaxStartups 100",
        ]
        if self.sftp:
            lines.append("Subsystem sftp internal-sftp")
        return "\n".join(lines) + "\n"

    def start(self, port: int = 0) -> Sshd:
        """Listen on a free port, or on `port` (a namespace of the test's own has them all)."""
        if not os.access(SSHD, os.X_OK):
            pytest.skip(f"{SSHD} missing: apt-get install --no-install-recommends openssh-server")
        os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)
        if port:
            if self._launch(port):
                return self
            raise RuntimeError(f"sshd did not start on port {port}; its log:\n"
                               f"{self.log.read_text(errors='replace')[-3000:]}")
        for _ in range(5):  # another job may take the free port between probe and bind
            if self._launch(free_port()):
                return self
        raise RuntimeError(f"sshd did not start; its log:\n{self.log.read_text(errors='replace')[-3000:]}")

    def restart(self, down_seconds: float = 0.0) -> None:
        """Kill sshd and its sessions, stay down a while, start again on the same port: the
        connections it had are gone, a new one finds the same server."""
        self.kill()
        time.sleep(down_seconds)
        if not self._launch(self.port):
            raise RuntimeError(f"sshd did not restart on port {self.port}; its log:\n"
                               f"{self.log.read_text(errors='replace')[-3000:]}")

    def _launch(self, port: int) -> bool:
        self.port = port
        config = self.directory / "sshd_config"
        config.write_text(self.config_text())
        log_start = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([*self.prefix, SSHD, "-D", "-e", "-f", str(config)],
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        if self._wait_for_listening(log_start) if self.prefix else self._wait_for_banner():
            return True
        self.kill()
        return False

    def _wait_for_banner(self) -> bool:
        assert self.process is not None
        give_up = time.monotonic() + START_TIMEOUT
        while time.monotonic() < give_up:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as probe:
                    if probe.recv(64).startswith(b"SSH-2.0-"):
                        return True
            except OSError:
                time.sleep(0.05)
        return False

    def _wait_for_listening(self, log_start: int) -> bool:
        """sshd logs "Server listening on <address> port <port>." for each socket it bound."""
        assert self.process is not None
        wanted = [f"Server listening on {address} port {self.port}." for address in self.listen]
        give_up = time.monotonic() + START_TIMEOUT
        while time.monotonic() < give_up:
            with open(self.log, "rb") as log:
                log.seek(log_start)
                text = log.read().decode(errors="replace")
            if all(line in text for line in wanted):
                return True
            if self.process.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def pids(self) -> list[int]:
        """The listener and every process below it (the sessions and their sftp/cat)."""
        if self.process is None:
            return []
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        found = [self.process.pid]
        for pid in found:
            found.extend(child for child, parent in parents.items() if parent == pid)
        return found

    def kill(self) -> None:
        """SIGKILL the listener and its sessions: a server that dies mid-transfer."""
        if self.process is None:
            return
        for pid in reversed(self.pids()):
            with contextlib.suppress(ProcessLookupError):  # it ended by itself meanwhile
                os.kill(pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        self.kill()


@pytest.fixture(scope="module")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> ClientKey:
    """The agent's key (RSA, like RHEL's /root/.ssh/kdump_id_rsa)."""
    return keygen(tmp_path_factory.mktemp("client") / "kdump_id_rsa", "rsa")


def _server(tmp_path_factory: pytest.TempPathFactory, client_key: ClientKey, *, sftp: bool,
            host_key_types: tuple[str, ...] = ("ed25519",)) -> Iterator[Sshd]:
    server = Sshd(tmp_path_factory.mktemp("sshd"), sftp=sftp, host_key_types=host_key_types,
                  authorized=(client_key,)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory, client_key: ClientKey) -> Iterator[Sshd]:
    """sshd with internal-sftp and an ed25519 and an RSA host key, for the whole module."""
    yield from _server(tmp_path_factory, client_key, sftp=True, host_key_types=("ed25519", "rsa"))


@pytest.fixture(scope="module")
def sshd_no_sftp(tmp_path_factory: pytest.TempPathFactory, client_key: ClientKey) -> Iterator[Sshd]:
    """sshd without a Subsystem line: only exec channels."""
    yield from _server(tmp_path_factory, client_key, sftp=False)


@pytest.fixture
def sshd_to_kill(tmp_path_factory: pytest.TempPathFactory, client_key: ClientKey) -> Iterator[Sshd]:
    """A server of the test's own, which it may kill."""
    yield from _server(tmp_path_factory, client_key, sftp=True)
