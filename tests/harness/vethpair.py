"""Two network namespaces joined by a veth pair: the integration tests' stand-in for a server
and the capture kernel's NIC on the real kernel of this host.

`kdump-srv-<tag>-<pid>` holds `srv0` with the server's addresses; `kdump-cli-<tag>-<pid>`
holds `cli0`, the NIC the agent's code configures (run there as a child process with
`ip netns exec`: a namespace belongs to a process). Both are deleted on the way out,
whatever happened inside.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from .processes import terminate

SERVER_LINK = "srv0"
CLIENT_LINK = "cli0"


def ip(*args: str) -> str:
    """iproute2's `ip`, its output; a failure fails the test with ip's own words."""
    done = subprocess.run(["ip", *args], check=False, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr.strip()}"
    return done.stdout


@dataclass(frozen=True)
class VethPair:
    server: str  # the server's namespace
    client: str  # the client's namespace
    client_mac: str  # cli0's MAC


@contextmanager
def veth_pair(tag: str, server_addresses: Sequence[str]) -> Iterator[VethPair]:
    """The two namespaces, srv0 up with server_addresses (CIDR; IPv6 ones without DAD, so
    they answer at once), cli0 down for the test to bring up."""
    server, client = f"kdump-srv-{tag}-{os.getpid()}", f"kdump-cli-{tag}-{os.getpid()}"
    created: list[str] = []
    try:
        for name in (server, client):
            ip("netns", "add", name)
            created.append(name)
        ip("-n", server, "link", "add", SERVER_LINK, "type", "veth", "peer", "name", CLIENT_LINK,
           "netns", client)
        for cidr in server_addresses:
            ip("-n", server, "addr", "add", cidr, "dev", SERVER_LINK, *(("nodad",) if ":" in cidr else ()))
        ip("-n", server, "link", "set", SERVER_LINK, "up")
        mac = json.loads(ip("-n", client, "-j", "link", "show", CLIENT_LINK))[0]["address"]
        yield VethPair(server=server, client=client, client_mac=mac)
    finally:
        for name in reversed(created):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True, timeout=30)


DNSMASQ_READY_SECONDS = 20


@contextmanager
def server_dnsmasq(server: str, work: Path, options: Sequence[str], ready: bytes) -> Iterator[Path]:
    """dnsmasq on srv0 of the `server` namespace with these options (DNS off), once its log
    says `ready`; its lease file. Stopped by its pid whatever the test does; skipped without
    dnsmasq."""
    if not shutil.which("dnsmasq"):
        pytest.skip("dnsmasq is not installed (Debian: dnsmasq-base)")
    leases, log_path = work / "dnsmasq.leases", work / "dnsmasq.log"
    argv = ["ip", "netns", "exec", server, "dnsmasq", "--no-daemon", "--conf-file=/dev/null",
            f"--interface={SERVER_LINK}", "--bind-interfaces", "--port=0",
            f"--pid-file={work / 'dnsmasq.pid'}", f"--dhcp-leasefile={leases}", *options]
    with open(log_path, "wb") as log:
        # `ip netns exec` execs dnsmasq: this pid is dnsmasq's own.
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        ready_by = time.monotonic() + DNSMASQ_READY_SECONDS
        while ready not in log_path.read_bytes():
            assert process.poll() is None, f"dnsmasq exited: {log_path.read_text()}"
            assert time.monotonic() < ready_by, f"dnsmasq not ready: {log_path.read_text()}"
            time.sleep(0.05)
        yield leases
    finally:
        terminate(process, 10)
