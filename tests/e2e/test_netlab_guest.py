"""The network lab (harness.netlab) carries what the guest kernel builds, with no agent in
the way: a busybox guest (harness.netguest) makes the bond, VLAN or bridge itself, and
reaches the lab's servers. This proves the lab the issue-14 cases stand on: if one of those
fails and this passes, the agent is at fault, not the lab.

One boot per topology, ~15 s each under TCG: a VLAN on a balance-xor bond with DHCP through
the user-space VLAN relay; an active-backup bond keeping its way to the server when QMP's
set_link takes the active leg down; a bridge with static IPv4, SLAAC from the lab's router
advertisement and a name answered with A and AAAA. (busybox has no DHCPv6 client: the
agent's case proves DHCPv6.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.kernels import Kernel
from harness.netguest import run_script
from harness.netlab import LAB_NAME, SERVER_V4, SERVER_V6, Dns, Lab, nic_mac
from harness.qmp import qmp_args, qmp_command

pytestmark = pytest.mark.qemu

LEASE = "10.77.0.10"
SLAAC_ON_BRIDGE = "fd77::5054:ff:fe77:1"  # br0 takes eth0's MAC, nic_mac(0)
PULL_CUE = "NETGUEST: pull eth0"

BOND = """\
echo {mode} > /sys/class/net/bond0/bonding/mode
echo 100 > /sys/class/net/bond0/bonding/miimon
{extra}
echo +eth0 > /sys/class/net/bond0/bonding/slaves
echo +eth1 > /sys/class/net/bond0/bonding/slaves
ip link set bond0 up
"""


def test_vlan_on_a_balance_xor_bond_gets_a_lease_through_the_relay(
        kernel: Kernel, tmp_path: Path, console_logs: list[Path]) -> None:
    script = BOND.format(mode="balance-xor",
                         extra="echo layer2+3 > /sys/class/net/bond0/bonding/xmit_hash_policy") + f"""
ip link add link bond0 name bond0.77 type vlan id 77
ip link set bond0.77 up
udhcpc -i bond0.77 -n -q -t 10 -s /udhcpc.script
ping -c 3 -W 5 {SERVER_V4}
"""
    with Lab(tmp_path / "lab", nics=2, vlan=77) as lab:
        lab.dnsmasq(Dns(leases=((nic_mac(0), LEASE),)))
        console_logs.append(tmp_path / "console.log")
        result = run_script(kernel, script, log_path=tmp_path / "console.log",
                            extra_args=lab.qemu_nic_args(), prefix=lab.prefix)
    assert f"NETGUEST: lease {LEASE} on bond0.77" in result.console
    assert "3 packets transmitted, 3 packets received" in result.console


def test_active_backup_bond_survives_set_link_down_on_the_active_leg(
        kernel: Kernel, tmp_path: Path, console_logs: list[Path]) -> None:
    script = BOND.format(mode="active-backup", extra="") + f"""
ip addr add {LEASE}/24 dev bond0
ping -c 2 -W 5 {SERVER_V4}
grep -x eth0 /sys/class/net/bond0/bonding/active_slave
echo "{PULL_CUE}"
i=0
while [ "$(cat /sys/class/net/eth0/carrier)" != 0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
sleep 1
ping -c 3 -W 5 {SERVER_V4}
echo "NETGUEST: active $(cat /sys/class/net/bond0/bonding/active_slave)"
"""
    qmp = tmp_path / "qmp.sock"

    def on_cue(line: str) -> None:
        if line.strip() == PULL_CUE:
            qmp_command(qmp, "set_link", {"name": "nic0", "up": False})

    with Lab(tmp_path / "lab", nics=2) as lab:
        console_logs.append(tmp_path / "console.log")
        result = run_script(kernel, script, log_path=tmp_path / "console.log",
                            extra_args=[*lab.qemu_nic_args(), *qmp_args(qmp)], prefix=lab.prefix,
                            progress=on_cue)
    assert "NETGUEST: active eth1" in result.console
    after = result.console[result.console.index(PULL_CUE):]
    assert "link status definitely down" in after
    assert "3 packets transmitted, 3 packets received" in after


def test_bridge_with_static_ipv4_slaac_and_a_dual_stack_name(
        kernel: Kernel, tmp_path: Path, console_logs: list[Path]) -> None:
    script = f"""
ip link add br0 type bridge
echo 0 > /sys/class/net/br0/bridge/forward_delay
ip link set eth0 master br0
ip link set eth0 up
ip link set br0 up
ip addr add 10.77.0.5/24 dev br0
i=0
until ip -6 addr show dev br0 | grep -q "{SLAAC_ON_BRIDGE}/64"; do
    [ $i -lt 150 ] || exit 1
    sleep 0.1; i=$((i + 1))
done
ping -c 2 -W 5 {SERVER_V4}
ping6 -c 2 -W 5 {SERVER_V6}
nslookup {LAB_NAME} {SERVER_V4}
"""
    with Lab(tmp_path / "lab") as lab:
        lab.dnsmasq(Dns(dhcp4=False, ra=True, names=((LAB_NAME, (SERVER_V4, SERVER_V6)),)))
        console_logs.append(tmp_path / "console.log")
        result = run_script(kernel, script, log_path=tmp_path / "console.log",
                            extra_args=lab.qemu_nic_args(), prefix=lab.prefix)
    assert result.console.count("2 packets transmitted, 2 packets received") == 2
    assert f"Address: {SERVER_V4}" in result.console and f"Address: {SERVER_V6}" in result.console
