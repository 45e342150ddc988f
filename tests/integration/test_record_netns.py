"""record_host_route against the real kernel's links, inside a network namespace the test makes.

What mkinitrd records of a virtualisation host: a bridge `kbr0` over an uplink and a guest's
port, with static IPv4 and IPv6 addresses and an IPv6 default route through a link-local
router. The uplink is a veth standing in for a physical NIC (named in `stand_in_nics`,
which production never passes); the guest's port is another veth, which the record must
leave out, as it leaves out a VM's tap. A tap on the route itself is refused.

Bonds and VLANs are not tried here: this host's kernel has no bonding or 8021q module, so
they are covered by the unit tests' fake netlink and by the QEMU cases, whose guest kernel
has both. The agent's code runs in the namespace as a child process (`ip netns exec`);
nothing outside it is touched, and it is deleted whatever the test's outcome. Needs root
and iproute2.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                reason="needs root and iproute2 for network namespaces")

AGENT = Path(__file__).resolve().parents[2] / "agent"
CHILD_SECONDS = 60
BRIDGE_MAC = "02:00:00:00:0b:01"
UPLINK_MAC = "02:00:00:00:0b:02"

IN_NAMESPACE = """
import json, sys
from kdump_agent.errors import KdumpError
from kdump_agent.network import record

request = json.loads(sys.argv[1])
try:
    found = record.record_host_route("dumps.example", request["target"],
                                     resolv_conf=request["resolv_conf"],
                                     stand_in_nics=request["stand_in_nics"])
    print(json.dumps({"result": json.loads(found.as_json()), "described": found.described()}))
except KdumpError as error:
    print(json.dumps({"error": str(error)}))
"""


def ip(namespace: str, *args: str) -> None:
    done = subprocess.run(["ip", "-n", namespace, *args], check=False, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr.strip()}"


class Host:
    """The namespace standing in for the host mkinitrd runs on."""

    def __init__(self, name: str, work: Path) -> None:
        self.name = name
        self.resolv_conf = work / "resolv.conf"
        self.resolv_conf.write_text("nameserver 127.0.0.53\nnameserver 192.168.178.53\n"
                                    "nameserver fd00:178::53\n")

    def record(self, target: str, stand_in_nics: tuple[str, ...] = ()) -> dict[str, Any]:
        request = {"target": target, "resolv_conf": str(self.resolv_conf),
                   "stand_in_nics": list(stand_in_nics)}
        argv = ["ip", "netns", "exec", self.name, sys.executable, "-c", IN_NAMESPACE, json.dumps(request)]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(AGENT)}
        done = subprocess.run(argv, check=False, capture_output=True, text=True, env=env,
                              timeout=CHILD_SECONDS)
        assert done.returncode == 0, done.stderr
        outcome: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
        return outcome


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    name = f"kdump-rec-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
    try:
        ip(name, "link", "set", "lo", "up")
        yield Host(name, tmp_path)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True, timeout=30)


def build_bridge(namespace: str) -> None:
    """kbr0 over uplink0 (its veth peer uplink1 plays the switch) and guest0 (a guest's port)."""
    ip(namespace, "link", "add", "kbr0", "address", BRIDGE_MAC, "type", "bridge", "stp_state", "0",
       "forward_delay", "400")
    ip(namespace, "link", "add", "uplink0", "address", UPLINK_MAC, "type", "veth", "peer", "name", "uplink1")
    ip(namespace, "link", "add", "guest0", "type", "veth", "peer", "name", "guest1")
    for port in ("uplink0", "guest0"):
        ip(namespace, "link", "set", port, "master", "kbr0")
    for each in ("uplink1", "guest1", "uplink0", "guest0", "kbr0"):
        ip(namespace, "link", "set", each, "up")
    ip(namespace, "addr", "add", "192.168.178.10/24", "dev", "kbr0")
    ip(namespace, "-6", "addr", "add", "fd00:178::10/64", "dev", "kbr0", "nodad")
    ip(namespace, "route", "add", "default", "via", "192.168.178.1", "dev", "kbr0")
    ip(namespace, "-6", "route", "add", "default", "via", "fe80::1", "dev", "kbr0")


def test_bridge_over_a_nic_records_links_macs_both_families_and_the_ipv6_gateway(host: Host) -> None:
    build_bridge(host.name)
    outcome = host.record("fd00:99::1", stand_in_nics=("uplink0",))
    assert "result" in outcome, outcome
    record = outcome["result"]
    assert record["links"] == [{"kind": "bridge", "name": "kbr0", "members": ["uplink0"],
                                "options": {"stp_state": "0", "forward_delay": "400"}, "mac": BRIDGE_MAC,
                                "mtu": 1500}]  # guest0 left out
    assert record["nic_macs"] == {"uplink0": UPLINK_MAC}
    assert (record["interface"], record["mac"], record["target"]) == ("kbr0", BRIDGE_MAC, "fd00:99::1")
    assert record["addresses"] == ["192.168.178.10/24", "fd00:178::10/64"]
    assert (record["dhcp"], record["ipv6"]) == (False, "static")
    assert (record["gateway"], record["gateway6"]) == ("192.168.178.1", "fe80::1")
    assert record["dns"] == ["192.168.178.53", "fd00:178::53"]
    assert outcome["described"] == "kbr0 (bridge: uplink0)"


def test_ipv4_target_over_the_bridge_finds_the_same_stack(host: Host) -> None:
    build_bridge(host.name)
    record = host.record("10.99.0.1", stand_in_nics=("uplink0",))["result"]
    assert record["interface"] == "kbr0"
    assert (record["gateway"], record["gateway6"]) == ("192.168.178.1", "fe80::1")
    assert [link["members"] for link in record["links"]] == [["uplink0"]]


def test_without_a_stand_in_the_bridge_has_no_nic_and_is_refused(host: Host) -> None:
    build_bridge(host.name)
    error = host.record("fd00:99::1").get("error", "")
    assert error == ("bridge kbr0 (on the way to fd00:99::1) has no port kdump-agent can build "
                     "(a NIC, a bond or a VLAN)")


def test_a_tap_on_the_route_is_refused_naming_it(host: Host) -> None:
    ip(host.name, "tuntap", "add", "dev", "ktap0", "mode", "tap")
    ip(host.name, "link", "set", "ktap0", "up")
    ip(host.name, "addr", "add", "192.168.179.10/24", "dev", "ktap0")
    error = host.record("192.168.179.1").get("error", "")
    assert error.startswith("the route to 192.168.179.1 goes through ktap0, a tun/tap device"), error
