"""harness.netlab without QEMU: the namespace, its bridges and taps, dnsmasq answering DHCPv4,
router advertisements and DNS, and the user-space VLAN relay passing tagged frames only.

A "client" stands in for the guest: a second namespace joined to the servers' bridge by a
veth pair (for DHCP, RA, DNS), or a process that opens the guest's tap as QEMU would (for
the VLAN relay: 802.1Q frames written and read through a tap fd carry their tag inline).
DHCPv6 has no client on this host (busybox has no udhcpc6); the QEMU case proves it.
Needs root, iproute2, dnsmasq and busybox; every namespace is deleted afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.netlab import (
    LAB_NAME,
    SERVER_BRIDGE,
    SERVER_V4,
    SERVER_V6,
    Dns,
    Lab,
    LabError,
    nic_mac,
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("ip", "dnsmasq", "busybox")),
    reason="needs root, iproute2, dnsmasq and busybox")

TESTS = Path(__file__).resolve().parents[1]
CLIENT_MAC = "52:54:00:77:00:99"
FIXED_LEASE = "10.77.0.42"
SLAAC_ADDRESS = "fd77::5054:ff:fe77:99"  # EUI-64 of CLIENT_MAC
SLAAC_WAIT = 15.0

# Run in the lab's namespace, as QEMU would be: open the guest's tap, send one ARP request
# for the server (tagged with each VID given, "none" for untagged) and say, as JSON, which
# VID the reply came back with (None: no reply within a second).
ARP_THROUGH_TAP = """
import json, os, select, socket, struct, sys, time
from harness.vlan_relay import TPID, open_tap, tag
tap, mac, server = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", "")), socket.inet_aton(sys.argv[3])
fd = open_tap(tap)
time.sleep(0.3)  # the port's carrier comes up with the open fd
answers = {}
for n, vid in enumerate(sys.argv[4:]):
    me = socket.inet_aton(f"10.77.0.{200 + n}")
    frame = (b"\\xff" * 6 + mac + b"\\x08\\x06" + struct.pack(">HHBBH", 1, 0x0800, 6, 4, 1)
             + mac + me + b"\\0" * 6 + server).ljust(60, b"\\0")
    os.write(fd, frame if vid == "none" else tag(frame, int(vid)))
    answers[vid] = None
    give_up = time.monotonic() + 1.0
    while time.monotonic() < give_up:
        if not select.select([fd], [], [], 0.1)[0]:
            continue
        got = os.read(fd, 65536)
        if got[12:14] == TPID:
            seen, inner = struct.unpack(">H", got[14:16])[0] & 0xFFF, got[:12] + got[16:]
        else:
            seen, inner = "untagged", got
        if inner[12:14] == b"\\x08\\x06" and inner[20:22] == b"\\0\\x02" and inner[38:42] == me:
            answers[vid] = seen
print(json.dumps(answers))
"""


def run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[str]:
    """A namespace of its own for the stand-in guest; deleted afterwards."""
    name = f"kdump-labcli-{os.getpid()}"
    assert run(["ip", "netns", "add", name]).returncode == 0
    try:
        yield name
    finally:
        run(["ip", "netns", "del", name])


def plug(lab: Lab, client: str) -> None:
    """A veth from the lab's servers' bridge to `cli0` (CLIENT_MAC) in the client namespace."""
    lab.ip("link", "add", "labveth0", "type", "veth", "peer", "name", "cli0", "netns", client)
    lab.ip("link", "set", "labveth0", "master", SERVER_BRIDGE)
    lab.ip("link", "set", "labveth0", "up")
    for args in (["address", CLIENT_MAC], ["up"]):
        assert run(["ip", "-n", client, "link", "set", "cli0", *args]).returncode == 0


def test_lab_builds_its_namespace_and_removes_it_with_its_processes(tmp_path: Path) -> None:
    with Lab(tmp_path, nics=2, vlan=77) as lab:
        links = {link["ifname"]: link for link in json.loads(lab.ip("-j", "-d", "link", "show"))}
        for tap in ("labtap0", "labtap1", "labtrunk0"):
            assert links[tap]["master"] == "labtrk0", links[tap]
        assert links["labaccess0"]["master"] == SERVER_BRIDGE
        addresses = json.loads(lab.ip("-j", "addr", "show", SERVER_BRIDGE))[0]["addr_info"]
        assert {a["local"] for a in addresses} >= {SERVER_V4, SERVER_V6}
        assert lab.qemu_nic_args()[:4] == [
            "-netdev", "tap,id=net0,ifname=labtap0,script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=net0,id=nic0,mac={nic_mac(0)}"]
        (relay,) = lab.pids()
        assert "vlan_relay.py" in Path(f"/proc/{relay}/cmdline").read_text()
        namespace = lab.namespace
    assert not Path(f"/proc/{relay}").exists()  # stopped by its pid and reaped
    assert namespace not in run(["ip", "netns", "list"]).stdout


def test_a_daemon_that_dies_at_start_is_reported_with_its_log(tmp_path: Path) -> None:
    with Lab(tmp_path) as lab:
        process = lab.popen(["sh", "-c", "echo cannot bind; exit 3"], tmp_path / "d.log", name="d")
        with pytest.raises(LabError, match="exited with status 3:\ncannot bind"):
            lab.wait_for_line(process, tmp_path / "d.log", "ready")


def test_dnsmasq_leases_ipv4_and_answers_a_and_aaaa(tmp_path: Path, client: str) -> None:
    with Lab(tmp_path) as lab:
        plug(lab, client)
        log = lab.dnsmasq(Dns(leases=((CLIENT_MAC, FIXED_LEASE),),
                              names=((LAB_NAME, (SERVER_V4, SERVER_V6)),)))
        dhcp = run(["ip", "netns", "exec", client, "busybox", "udhcpc", "-i", "cli0", "-n", "-q",
                    "-f", "-t", "5", "-s", "/bin/true"])
        assert f"lease of {FIXED_LEASE} obtained" in dhcp.stdout + dhcp.stderr, dhcp
        run(["ip", "-n", client, "addr", "add", f"{FIXED_LEASE}/24", "dev", "cli0"])
        answer = run(["ip", "netns", "exec", client, "busybox", "nslookup", LAB_NAME, SERVER_V4])
        assert f"Address: {SERVER_V4}" in answer.stdout and f"Address: {SERVER_V6}" in answer.stdout, answer
        assert f"DHCPACK(labsrv0) {FIXED_LEASE} {CLIENT_MAC}" in log.read_text()


def test_router_advertisement_gives_the_client_its_slaac_address(tmp_path: Path, client: str) -> None:
    run(["ip", "netns", "exec", client, "sysctl", "-q", "-w", "net.ipv6.conf.all.accept_ra=1"])
    with Lab(tmp_path) as lab:
        lab.dnsmasq(Dns(dhcp4=False, ra=True))
        plug(lab, client)
        give_up = time.monotonic() + SLAAC_WAIT
        while SLAAC_ADDRESS not in (shown := run(["ip", "-n", client, "-6", "addr", "show", "cli0"]).stdout):
            assert time.monotonic() < give_up, shown
            time.sleep(0.2)
        ping = run(["ip", "netns", "exec", client, "busybox", "ping", "-6", "-c", "1", "-W", "5", SERVER_V6])
        assert ping.returncode == 0, ping


def test_vlan_relay_passes_its_vid_only_and_tags_the_answer(tmp_path: Path) -> None:
    with Lab(tmp_path, nics=1, vlan=77) as lab:
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin"), "PYTHONPATH": str(TESTS)}
        done = subprocess.run([*lab.prefix, sys.executable, "-c", ARP_THROUGH_TAP, "labtap0",
                               nic_mac(0), SERVER_V4, "77", "78", "none"],
                              check=False, capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        answers = json.loads(done.stdout)
    # Tagged 77: the server answered, and the answer came back tagged 77. Anything else
    # never reached the server's side.
    assert answers == {"77": 77, "78": None, "none": None}
