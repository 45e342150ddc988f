"""The DHCPv6 client (network/dhcp6.py) against dnsmasq, on real kernel networking in namespaces.

As in test_network_netns.py: two namespaces joined by a veth pair, `kdump6-srv-<pid>` with
the server side (fd00:177::1/64 on srv0, dnsmasq serving DHCPv6 and router advertisements)
and `kdump6-cli-<pid>` with the capture kernel's NIC cli0. The client runs in the client
namespace as a child process (`ip netns exec`), called right after cli0 comes up, while its
link-local address is still tentative, as the bring-up calls it. Both namespaces are
deleted and dnsmasq (and the TCP listener) stopped by pid whatever the outcome. Needs root,
iproute2 and dnsmasq.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.processes import terminate
from harness.vethpair import ip, server_dnsmasq, veth_pair

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                reason="needs root and iproute2 for network namespaces")

AGENT = Path(__file__).resolve().parents[2] / "agent"
SERVER = "fd00:177::1"
SERVER_DNS = "fd00:177::53"
RANGE = ("fd00:177::100", "fd00:177::1ff")
# dnsmasq answers from srv0's link-local address, or from fd00:177::1 while that is tentative.
SERVER_SOURCE = r"(fe80::[0-9a-f:]+|fd00:177::1)"
# The child gets the budget plus this before it is killed: a hang fails the test.
CHILD_GRACE_SECONDS = 30
# How late past the budget a failure may come: the last receive ends at the deadline.
DEADLINE_GRACE_SECONDS = 1.0
READY_SECONDS = 20

# Runs in the client namespace: one dhcp6_lease, its outcome and the agent's log as JSON.
IN_NAMESPACE = """
import json, logging, sys, time
from kdump_agent.errors import KdumpError
from kdump_agent.network.dhcp import Budget
from kdump_agent.network.dhcp6 import dhcp6_lease

request = json.loads(sys.argv[1])
lines = []
handler = logging.Handler()
handler.emit = lambda record: lines.append(record.getMessage())
logging.getLogger("kdump-agent").addHandler(handler)
logging.getLogger("kdump-agent").setLevel(logging.INFO)
start = time.monotonic()
try:
    lease = dhcp6_lease(request["interface"], Budget(request["budget"]), request["mac"], "crashed")
    outcome = {"addresses": lease.addresses, "gateway": lease.gateway, "dns": lease.dns}
except KdumpError as error:
    outcome = {"error": str(error)}
outcome["seconds"] = time.monotonic() - start
outcome["log"] = lines
print(json.dumps(outcome))
"""

# Runs in the server namespace: accepts one TCP connection, prints its peer's address.
LISTENER = """
import socket, sys
server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
server.bind((sys.argv[1], 0))
server.listen(1)
print(server.getsockname()[1], flush=True)
server.settimeout(60)
connection, peer = server.accept()
print(peer[0], flush=True)
"""




def wait_for(what: str, ready: Callable[[], bool], seconds: float = READY_SECONDS) -> None:
    by = time.monotonic() + seconds
    while not ready():
        assert time.monotonic() < by, f"{what}: not within {seconds} s"
        time.sleep(0.05)


@dataclass
class Namespaces:
    server: str
    client: str
    client_mac: str
    work: Path

    def lease(self, budget: float) -> dict[str, Any]:
        """Set cli0 up and at once run dhcp6_lease on it in the client namespace; its outcome,
        with whether cli0's link-local address was still tentative when the client started."""
        ip("-n", self.client, "link", "set", "cli0", "up")
        tentative = "tentative" in ip("-n", self.client, "-6", "addr", "show", "dev", "cli0", "scope", "link")
        request = {"interface": "cli0", "budget": budget, "mac": self.client_mac}
        argv = ["ip", "netns", "exec", self.client, sys.executable, "-c", IN_NAMESPACE, json.dumps(request)]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(AGENT)}
        done = subprocess.run(argv, check=False, capture_output=True, text=True, env=env,
                              timeout=budget + CHILD_GRACE_SECONDS)
        assert done.returncode == 0, done.stderr
        outcome: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
        outcome["tentative"] = tentative
        return outcome

    def client_ipv6(self) -> list[dict[str, Any]]:
        links = json.loads(ip("-n", self.client, "-j", "-6", "addr", "show", "dev", "cli0"))
        return [a for link in links for a in link["addr_info"] if a["scope"] == "global"]


@pytest.fixture
def namespaces(tmp_path: Path) -> Iterator[Namespaces]:
    """Server and client namespaces joined by veth srv0 <-> cli0; deleted afterwards."""
    with veth_pair("dhcp6", (f"{SERVER}/64",)) as pair:
        yield Namespaces(server=pair.server, client=pair.client, client_mac=pair.client_mac, work=tmp_path)


@contextlib.contextmanager
def running_dnsmasq(namespaces: Namespaces, *options: str) -> Iterator[Path]:
    """dnsmasq serving DHCPv6 and RA on srv0 with these options (DNS off); its lease file."""
    with server_dnsmasq(namespaces.server, namespaces.work, ["--enable-ra", "--log-dhcp", *options],
                        b"DHCP, sockets bound") as leases:
        yield leases


@pytest.fixture
def dnsmasq(namespaces: Namespaces) -> Iterator[Path]:
    with running_dnsmasq(namespaces, f"--dhcp-range={RANGE[0]},{RANGE[1]},64,1h",
                         f"--dhcp-option=option6:dns-server,[{SERVER_DNS}]") as leases:
        yield leases


def test_lease_in_the_range_with_the_dns_server(namespaces: Namespaces, dnsmasq: Path) -> None:
    outcome = namespaces.lease(budget=20)
    assert len(outcome.get("addresses", ())) == 1, outcome
    (cidr,) = outcome["addresses"]
    address, prefix = cidr.split("/")
    assert prefix == "128"
    low, high = (ipaddress.IPv6Address(end) for end in RANGE)
    assert low <= ipaddress.IPv6Address(address) <= high
    assert outcome["gateway"] is None and outcome["dns"] == [SERVER_DNS]
    logged = rf"network: DHCPv6 lease {address} from {SERVER_SOURCE} \(DUID [0-9a-f:]+\)"
    assert any(re.fullmatch(logged, line) for line in outcome["log"]), outcome["log"]
    # dnsmasq recorded it for our DUID-LL (00:03:00:01 and the MAC) and the host name we sent.
    lease_line = next(line for line in dnsmasq.read_text().splitlines() if f" {address} " in line)
    assert "crashed" in lease_line.split()
    assert f"00:03:00:01:{namespaces.client_mac}" in dnsmasq.read_text()
    # Called during DAD, as the bring-up calls it: the client waited for it and got on with it.
    assert outcome["tentative"]
    print(f"DHCPv6 lease took {outcome['seconds']:.2f} s (DAD and the ADVERTISE window included)")
    assert outcome["seconds"] < 10  # one exchange, not a deadline's worth of retries


def test_the_leased_address_reaches_the_server(namespaces: Namespaces, dnsmasq: Path) -> None:
    outcome = namespaces.lease(budget=20)
    assert len(outcome.get("addresses", ())) == 1, outcome
    (cidr,) = outcome["addresses"]
    address = cidr.split("/")[0]
    ip("-n", namespaces.client, "addr", "add", cidr, "dev", "cli0")
    # The on-link prefix comes from dnsmasq's router advertisement, as the capture kernel gets it.
    wait_for("the RA's on-link route and DAD on the lease", lambda: (
        "fd00:177::/64" in ip("-n", namespaces.client, "-6", "route", "show", "dev", "cli0")
        and not any(a.get("tentative") for a in namespaces.client_ipv6())))
    listener = subprocess.Popen(["ip", "netns", "exec", namespaces.server, sys.executable, "-c", LISTENER,
                                 SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None
        port = listener.stdout.readline().strip()
        connect = ("import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 10, "
                   "(sys.argv[3], 0)).close()")
        subprocess.run(["ip", "netns", "exec", namespaces.client, sys.executable, "-c", connect, SERVER, port,
                        address], check=True, timeout=30)
        assert listener.stdout.readline().strip() == address  # the server saw our leased address
    finally:
        terminate(listener, 10)


def test_without_a_server_the_budget_runs_out(namespaces: Namespaces) -> None:
    outcome = namespaces.lease(budget=4)
    error = outcome.get("error", "")
    assert re.fullmatch(r"DHCPv6 on cli0: not done within the 4 s network deadline "
                        r"\(no ADVERTISE after \d+ SOLICITs\)", error), outcome
    assert 4 - 0.5 <= outcome["seconds"] <= 4 + DEADLINE_GRACE_SECONDS


def test_a_server_without_addresses_says_so(namespaces: Namespaces) -> None:
    # A range of one address, reserved for another client's DUID: dnsmasq has none for us.
    other = "00:03:00:01:02:00:00:00:00:01"
    with running_dnsmasq(namespaces, f"--dhcp-range={RANGE[0]},{RANGE[0]},64,1h",
                         f"--dhcp-host=id:{other},[{RANGE[0]}]"):
        outcome = namespaces.lease(budget=20)
    assert re.fullmatch(rf"DHCPv6 on cli0: the server at {SERVER_SOURCE} leases no address "
                        r"\(ADVERTISE: NoAddrsAvail: 'no addresses available'\)",  # dnsmasq's own words
                        outcome.get("error", "")), outcome
    assert outcome["seconds"] < 10
