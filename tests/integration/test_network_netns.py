"""bring_up and record_host_route against real kernel networking, inside network namespaces.

Each test gets two namespaces joined by a veth pair (harness.vethpair): the server's holds
192.168.177.1/24 (and dnsmasq for the DHCP cases), the client's the capture kernel's NIC.
The agent's code runs in the client namespace as a child process (`ip netns exec`), since
a namespace belongs to a process; nothing outside the two namespaces is touched or
contacted. Both are deleted, and dnsmasq stopped by its pid,
whatever the test's outcome. Needs root, iproute2 and (for DHCP) dnsmasq.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.vethpair import CLIENT_LINK, ip, server_dnsmasq, veth_pair
from kdump_agent.network.cmdline import parse_cmdline
from kdump_agent.network.plan import NetworkPlan

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                reason="needs root and iproute2 for network namespaces")

AGENT = Path(__file__).resolve().parents[2] / "agent"
SERVER = "192.168.177.1"
SERVER_DNS = "192.168.177.53"
SERVER6 = "fd00:177::1"
PREFIX6 = "fd00:177::"
DHCP_RANGE = ("192.168.177.50", "192.168.177.60")
UNREACHABLE = "10.99.0.1"  # no route to it anywhere in the namespaces
# The child gets the bring-up deadline plus this before it is killed: a hang fails the test.
CHILD_GRACE_SECONDS = 60

# Runs in the client namespace: one call into kdump_agent, the outcome as JSON on stdout.
IN_NAMESPACE = """
import json, sys, time
from kdump_agent.errors import KdumpError
from kdump_agent.network import bringup, plan, record

request = json.loads(sys.argv[1])
start = time.monotonic()
try:
    if request["call"] == "bring_up":
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in request["plan"].items()}
        fields["links"] = tuple(plan.VirtualLink(**{k: tuple(map(tuple, v)) if k == "options" else
                                                    tuple(v) if isinstance(v, list) else v
                                                    for k, v in link.items()}) for link in fields["links"])
        fields["nic_macs"] = tuple(map(tuple, fields["nic_macs"]))
        result = bringup.bring_up(plan.NetworkPlan(**fields), request["target"],
                                  link_delay=request["link_delay"], deadline=request["deadline"],
                                  resolv_conf=request["resolv_conf"])
    else:
        result = record.record_host_route(request["host"], request["target"],
                                          resolv_conf=request["resolv_conf"],
                                          stand_in_nics=request["stand_in_nics"]).as_json()
    outcome = {"result": result}
except KdumpError as error:
    outcome = {"error": str(error)}
outcome["seconds"] = time.monotonic() - start
print(json.dumps(outcome))
"""


# One ICMP echo over a raw socket, answered within 3 s or exit status 1.
PING = """
import socket, struct, sys
address = sys.argv[1]
v6 = ":" in address
family, proto, kind = (socket.AF_INET6, socket.IPPROTO_ICMPV6, 128) if v6 else (socket.AF_INET, 1, 8)
header = struct.pack("!BBHHH", kind, 0, 0, 7, 1) + b"kdump"
if not v6:  # the kernel fills in ICMPv6's checksum, not ICMP's
    padded = header + b"\\0" * (len(header) % 2)
    words = sum(struct.unpack("!%dH" % (len(padded) // 2), padded))
    words = (words >> 16) + (words & 0xFFFF)
    header = header[:2] + struct.pack("!H", ~(words + (words >> 16)) & 0xFFFF) + header[4:]
with socket.socket(family, socket.SOCK_RAW, proto) as probe:
    probe.settimeout(3)
    probe.sendto(header, (address, 0))
    while True:
        reply = probe.recv(2048)
        body = reply if v6 else reply[(reply[0] & 15) * 4:]
        if body[0] == (129 if v6 else 0) and body[4:8] == header[4:8]:
            break
"""




@dataclass
class Namespaces:
    server: str
    client: str
    client_link: str
    client_mac: str
    work: Path

    def run(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Run IN_NAMESPACE in the client namespace; its JSON outcome."""
        argv = ["ip", "netns", "exec", self.client, sys.executable, "-c", IN_NAMESPACE, json.dumps(request)]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(AGENT)}
        done = subprocess.run(argv, check=False, capture_output=True, text=True, env=env, timeout=timeout)
        assert done.returncode == 0, done.stderr
        outcome: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
        return outcome

    def bring_up(self, plan: NetworkPlan, target: str, *, deadline: float,
                 link_delay: float = 0) -> dict[str, Any]:
        request = {"call": "bring_up", "plan": asdict(plan), "target": target, "deadline": deadline,
                   "link_delay": link_delay, "resolv_conf": str(self.work / "resolv.conf")}
        return self.run(request, deadline + link_delay + CHILD_GRACE_SECONDS)

    def client_addresses(self) -> list[str]:
        links = json.loads(ip("-n", self.client, "-j", "-4", "addr", "show"))
        return [f"{a['local']}/{a['prefixlen']}" for link in links for a in link["addr_info"]]

    def client_addresses6(self, scope: str = "global") -> list[dict[str, Any]]:
        links = json.loads(ip("-n", self.client, "-j", "-6", "addr", "show", "scope", scope))
        return [dict(a, dev=link["ifname"]) for link in links for a in link["addr_info"] if "local" in a]

    def ping(self, address: str) -> bool:
        """Whether address answers an ICMP echo from the client namespace (no ping(8) needed)."""
        argv = ["ip", "netns", "exec", self.client, sys.executable, "-c", PING, address]
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30)
        return done.returncode == 0

    def client_route(self, target: str) -> dict[str, Any]:
        route: dict[str, Any] = json.loads(ip("-n", self.client, "-j", "route", "get", target))[0]
        return route


@pytest.fixture
def namespaces(tmp_path: Path) -> Iterator[Namespaces]:
    """Server and client namespaces joined by veth srv0 <-> cli0; deleted afterwards."""
    with veth_pair("net", (f"{SERVER}/24", f"{SERVER6}/64")) as pair:
        yield Namespaces(server=pair.server, client=pair.client, client_link=CLIENT_LINK,
                         client_mac=pair.client_mac, work=tmp_path)


@pytest.fixture
def dnsmasq(namespaces: Namespaces) -> Iterator[Path]:
    """dnsmasq serving DHCP on srv0 (DNS off); its lease file. Stopped by its pid."""
    yield from _dnsmasq(namespaces, [f"--dhcp-range={DHCP_RANGE[0]},{DHCP_RANGE[1]},1h",
                                     f"--dhcp-option=option:dns-server,{SERVER_DNS}"])


@pytest.fixture
def router_advertisements(namespaces: Namespaces) -> Iterator[Path]:
    """dnsmasq sending router advertisements for PREFIX6/64 on srv0 (SLAAC only, no DHCPv6)."""
    yield from _dnsmasq(namespaces, ["--enable-ra", f"--dhcp-range={PREFIX6},ra-only,64,1h"])


def _dnsmasq(namespaces: Namespaces, options: list[str]) -> Iterator[Path]:
    """dnsmasq with options on srv0, once its log says it is ready; stopped by its pid."""
    ready = b"router advertisement enabled" if "--enable-ra" in options else b"DHCP, sockets bound"
    with server_dnsmasq(namespaces.server, namespaces.work, options, ready) as leases:
        yield leases


def test_static_plan_gets_its_address_and_a_route_to_the_server(namespaces: Namespaces) -> None:
    plan = NetworkPlan(interface="cli0", mac=None, dhcp=False, addresses=("192.168.177.10/24",),
                       gateway=None, dns=(SERVER_DNS,), hostname=None)
    outcome = namespaces.bring_up(plan, SERVER, deadline=20)
    assert outcome.get("result") == (f"cli0 ({namespaces.client_mac}) 192.168.177.10/24 static, "
                                      f"route to {SERVER} dev cli0"), outcome
    assert namespaces.client_addresses() == ["192.168.177.10/24"]
    assert namespaces.client_route(SERVER)["dev"] == "cli0"
    assert (namespaces.work / "resolv.conf").read_text().splitlines()[1:] == [f"nameserver {SERVER_DNS}"]


def test_static_plan_routes_a_remote_target_through_the_gateway(namespaces: Namespaces) -> None:
    plan = NetworkPlan(interface=None, mac=namespaces.client_mac, dhcp=False,
                       addresses=("192.168.177.10/24",), gateway=SERVER, dns=(), hostname=None)
    outcome = namespaces.bring_up(plan, UNREACHABLE, deadline=20)
    assert outcome.get("result", "").endswith(f"route to {UNREACHABLE} via {SERVER} dev cli0"), outcome
    route = namespaces.client_route(UNREACHABLE)
    assert (route["dev"], route["gateway"]) == ("cli0", SERVER)


def test_dhcp_plan_finds_the_renamed_nic_by_mac_and_gets_a_lease(
        namespaces: Namespaces, dnsmasq: Path, record_property: Any) -> None:
    ip("-n", namespaces.client, "link", "set", "cli0", "name", "capture0")
    plan = NetworkPlan(interface="eth7", mac=namespaces.client_mac.upper(), dhcp=True, addresses=(),
                       gateway=None, dns=(), hostname="crashed")
    outcome = namespaces.bring_up(plan, SERVER, deadline=30)
    record_property("dhcp_bring_up_seconds", round(outcome["seconds"], 2))
    print(f"DHCP bring-up took {outcome['seconds']:.2f} s")
    note = outcome.get("result", "")
    assert note.startswith(f"capture0 ({namespaces.client_mac}) 192.168.177."), outcome
    assert note.endswith(f"/24 via DHCP, route to {SERVER} dev capture0")
    (address,) = namespaces.client_addresses()
    assert DHCP_RANGE[0] <= address.split("/")[0] <= DHCP_RANGE[1]
    assert namespaces.client_route(UNREACHABLE)["gateway"] == SERVER  # the lease's router
    assert (namespaces.work / "resolv.conf").read_text().splitlines()[1:] == [f"nameserver {SERVER_DNS}"]
    assert namespaces.client_mac in dnsmasq.read_text()


def test_dhcp_without_a_server_fails_at_the_deadline(namespaces: Namespaces) -> None:
    plan = NetworkPlan(interface="cli0", mac=None, dhcp=True, addresses=(), gateway=None, dns=(),
                       hostname=None)
    outcome = namespaces.bring_up(plan, SERVER, deadline=4)
    assert outcome.get("error") == ("DHCP on cli0: not done within the 4 s network deadline "
                                    "(no lease; client state SELECTING)"), outcome
    assert namespaces.client_addresses() == []


def test_route_wait_fails_clearly_when_the_target_is_unreachable(namespaces: Namespaces) -> None:
    plan = NetworkPlan(interface="cli0", mac=None, dhcp=False, addresses=("192.168.177.10/24",),
                       gateway=None, dns=(), hostname=None)
    outcome = namespaces.bring_up(plan, UNREACHABLE, deadline=3)
    assert outcome.get("error") == (f"a route to {UNREACHABLE}: not done within the 3 s network deadline "
                                    "(Network is unreachable)"), outcome


def test_link_without_carrier_fails_at_the_deadline(namespaces: Namespaces) -> None:
    ip("-n", namespaces.server, "link", "set", "srv0", "down")
    plan = NetworkPlan(interface="cli0", mac=None, dhcp=True, addresses=(), gateway=None, dns=(),
                       hostname=None)
    outcome = namespaces.bring_up(plan, SERVER, deadline=3)
    error = outcome.get("error", "")
    assert error.startswith("carrier on cli0: not done within the 3 s network deadline (operstate "), outcome
    assert error.endswith(", no carrier)")  # DOWN or LOWERLAYERDOWN, as the kernel sees it


def test_record_host_route_describes_the_nic_that_reaches_the_target(namespaces: Namespaces) -> None:
    client = namespaces.client
    ip("-n", client, "link", "set", "cli0", "up")
    ip("-n", client, "addr", "add", "192.168.177.20/24", "dev", "cli0", "valid_lft", "600",
       "preferred_lft", "600")  # a lifetime, as DHCP clients add leases
    resolv_conf = namespaces.work / "host-resolv.conf"
    resolv_conf.write_text(f"nameserver 127.0.0.53\nnameserver {SERVER_DNS}\n")
    outcome = namespaces.run({"call": "record", "host": "dumps.example", "target": SERVER,
                              "resolv_conf": str(resolv_conf), "stand_in_nics": ["cli0"]},  # a veth
                             CHILD_GRACE_SECONDS)
    record = json.loads(outcome["result"])
    assert {k: v for k, v in record.items() if k != "hostname"} == {
        "host": "dumps.example", "target": SERVER, "interface": "cli0", "mac": namespaces.client_mac,
        "mtu": 1500, "addresses": ["192.168.177.20/24"], "gateway": None, "dns": [SERVER_DNS], "dhcp": True,
    }


def test_bridge_over_the_nic_dual_stack_static(namespaces: Namespaces) -> None:
    plan = parse_cmdline(f"bridge=brcap0:cli0 ip=192.168.177.10:::24::brcap0:none "
                         f"ip=[fd00:177::10]::[{SERVER6}]:64::brcap0:none nameserver={SERVER6}")
    assert plan is not None
    outcome = namespaces.bring_up(plan, SERVER6, deadline=20)
    note = outcome.get("result", "")
    assert note.startswith("brcap0 (bridge: cli0), up in "), outcome
    assert note.endswith(f" 192.168.177.10/24 static, fd00:177::10/64 static, route to {SERVER6} dev brcap0")
    bridge = json.loads(ip("-n", namespaces.client, "-j", "-d", "link", "show", "brcap0"))[0]
    assert bridge["linkinfo"]["info_data"]["stp_state"] == 0
    assert bridge["linkinfo"]["info_data"]["forward_delay"] == 0
    (address,) = namespaces.client_addresses6()
    assert (address["local"], address["dev"], address.get("tentative", False)) == ("fd00:177::10", "brcap0",
                                                                                   False)
    assert namespaces.ping(SERVER6) and namespaces.ping(SERVER)  # the port forwards at once, both families
    assert (namespaces.work / "resolv.conf").read_text().splitlines()[1:] == [f"nameserver {SERVER6}"]


def test_slaac_from_router_advertisements(namespaces: Namespaces, router_advertisements: Path) -> None:
    plan = parse_cmdline("ip=cli0:auto6")
    assert plan is not None
    outcome = namespaces.bring_up(plan, SERVER6, deadline=30)
    (address,) = namespaces.client_addresses6()
    assert address["local"].startswith(PREFIX6) and address["prefixlen"] == 64
    assert outcome.get("result") == (f"cli0 ({namespaces.client_mac}) {address['local']}/64 SLAAC, "
                                      f"route to {SERVER6} dev cli0"), outcome
    assert namespaces.ping(SERVER6)


def test_a_duplicate_static_ipv6_address_is_refused(namespaces: Namespaces) -> None:
    ip("-n", namespaces.server, "addr", "add", "fd00:177::10/64", "dev", "srv0", "nodad")
    plan = parse_cmdline("ip=[fd00:177::10]::[fd00:177::1]:64::cli0:none")
    assert plan is not None
    outcome = namespaces.bring_up(plan, SERVER6, deadline=20)
    assert outcome.get("error", "").startswith("fd00:177::10 on cli0: duplicate address detection failed"), \
        outcome
