"""dracut's bond=, vlan=, bridge= and IPv6 ip= forms as a NetworkPlan, the checks that the links
form one stack under the interface, and how the record lends MACs to such a plan."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from kdump_agent.errors import KdumpError
from kdump_agent.network import bringup
from kdump_agent.network.cmdline import choose_plan, parse_cmdline
from kdump_agent.network.plan import NetworkPlan, VirtualLink


def plan(**fields: Any) -> NetworkPlan:
    defaults: dict[str, Any] = {"interface": None, "mac": None, "dhcp": False, "addresses": (),
                                "gateway": None, "dns": (), "hostname": None, "mtu": None}
    return NetworkPlan(**{**defaults, **fields})


def parsed(cmdline: str) -> NetworkPlan:
    found = parse_cmdline(f"console=ttyS0 {cmdline} irqpoll")
    assert found is not None
    return found


def bond(name: str = "bond0", members: tuple[str, ...] = ("eth0", "eth1"), *options: tuple[str, str],
         mtu: int | None = None) -> VirtualLink:
    return VirtualLink(kind="bond", name=name, members=members, options=options or (("mode", "balance-rr"),),
                       mtu=mtu)


# --- bond= --------------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("bond", bond()),
    ("bond=bond0", bond()),
    ("bond=bond1:ens3,ens4", bond("bond1", ("ens3", "ens4"))),
    ("bond=bond0:ens3,ens4:mode=active-backup,miimon=100,primary=ens4",
     bond("bond0", ("ens3", "ens4"), ("mode", "active-backup"), ("miimon", "100"), ("primary", "ens4"))),
    ("bond=bond0:ens3,ens4:miimon=100,mode=4,lacp_rate=fast,xmit_hash_policy=layer3+4:9000",
     bond("bond0", ("ens3", "ens4"), ("mode", "802.3ad"), ("miimon", "100"), ("lacp_rate", "fast"),
          ("xmit_hash_policy", "layer3+4"), mtu=9000)),
    (("bond=bond0:ens3,ens4:mode=active-backup,arp_interval=200,arp_ip_target=10.0.0.1;10.0.0.2,"
     "fail_over_mac=active"),
     bond("bond0", ("ens3", "ens4"), ("mode", "active-backup"), ("arp_interval", "200"),
          ("arp_ip_target", "10.0.0.1 10.0.0.2"), ("fail_over_mac", "active"))),
], ids=lambda value: value if isinstance(value, str) else "")
def test_bond_forms_become_a_bond_link_with_mode_first(value: str, expected: VirtualLink) -> None:
    found = parsed(f"{value} ip={expected.name}:dhcp")
    assert found.links == (expected,)
    assert (found.interface, found.mac, found.nics()) == (expected.name, None, expected.members)


@pytest.mark.parametrize("cmdline, reason", [
    ("bond=bond0:eth0,eth1:mode=active-backup,miimon=fast", "miimon=fast is not a number"),
    ("bond=bond0:eth0,eth1:mode=roundrobin", "mode roundrobin is not a bonding mode"),
    ("bond=bond0:eth0,eth1:mode=7", "mode 7 is not a bonding mode"),
    ("bond=bond0:eth0,eth1:mode=active-backup,mii_mon=100", "mii_mon is not a bonding option"),
    ("bond=bond0:eth0,eth1:miimon", "'miimon' is not <option>=<value>"),
    ("bond=bond0:eth0,eth1:miimon=1,miimon=2", "option miimon is given twice"),
    ("bond=bond0:eth0,eth1:arp_ip_target=gw", "arp_ip_target 'gw' is not an IPv4 address"),
    ("bond=bond0:eth0,eth0", "a member is named twice"),
    ("bond=bond0:eth0,eth1::jumbo", "'jumbo' is not an MTU"),
    ("bond=bond0:eth0:mode=1:1500:extra", "expected bond=<name>"),
])
def test_bond_errors_name_the_parameter_and_the_option(cmdline: str, reason: str) -> None:
    with pytest.raises(KdumpError) as error:
        parsed(f"{cmdline} ip=bond0:dhcp")
    assert str(error.value).startswith(f"{cmdline}: ")
    assert reason in str(error.value)


# --- vlan= and bridge= ---------------------------------------------------------------------


@pytest.mark.parametrize("name, parent, vid", [
    ("vlan0005", "eth0", 5), ("vlan5", "eth0", 5), ("eth0.0005", "eth0", 5), ("eth0.5", "eth0", 5),
    ("vlan4094", "ens3", 4094),
])
def test_vlan_id_comes_from_the_name_as_dracut_reads_it(name: str, parent: str, vid: int) -> None:
    found = parsed(f"vlan={name}:{parent} ip={name}:dhcp")
    assert found.links == (VirtualLink(kind="vlan", name=name, members=(parent,), options=(("id",
                                                                                            str(vid)),)),)
    assert found.links[0].vlan_id == vid


@pytest.mark.parametrize("cmdline, reason", [
    ("vlan=vlan0:eth0", "VLAN id 0 is not in 1-4094"),
    ("vlan=vlan4095:eth0", "VLAN id 4095 is not in 1-4094"),
    ("vlan=internal:eth0", "the VLAN id comes from the name"),
    ("vlan=vlan5", "expected vlan=<name>:<parent>"),
    ("bridge=br0", "expected bridge=<name>:<port>"),
])
def test_vlan_and_bridge_errors_name_the_parameter(cmdline: str, reason: str) -> None:
    with pytest.raises(KdumpError) as error:
        parsed(f"{cmdline} ip=dhcp")
    assert str(error.value).startswith(f"{cmdline}: ") and reason in str(error.value)


def test_bridge_alone_is_br0_over_eth0() -> None:
    assert parsed("bridge ip=br0:dhcp").links == (VirtualLink(kind="bridge", name="br0", members=("eth0",)),)


def test_a_vlan_on_a_bond_under_a_bridge_is_ordered_bottom_first() -> None:
    found = parsed("bridge=br0:bond0.10 vlan=bond0.10:bond0 bond=bond0:ens3,ens4:mode=1 "
                   "ip=br0:dhcp ifname=ens3:52:54:00:00:00:03 ifname=ens4:52:54:00:00:00:04")
    assert [link.name for link in found.links] == ["bond0", "bond0.10", "br0"]
    assert found.nic_macs == (("ens3", "52:54:00:00:00:03"), ("ens4", "52:54:00:00:00:04"))
    assert found.mac is None and found.modules() == ("bonding", "8021q", "bridge")


def test_ip_without_an_interface_goes_on_the_top_link() -> None:
    found = parsed("vlan=vlan10:bond0 bond=bond0:ens3,ens4 ip=dhcp")
    assert found.interface == "vlan10" and [link.name for link in found.links] == ["bond0", "vlan10"]


def test_ifname_gives_the_mac_of_the_interface_when_it_is_a_nic() -> None:
    found = parsed("ip=ens3:dhcp ifname=ens3:52:54:00:00:00:03")
    assert (found.mac, found.nic_macs) == ("52:54:00:00:00:03", ())


@pytest.mark.parametrize("cmdline, reason", [
    ("vlan=vlan10:bond0 ip=vlan10:dhcp", "vlan=vlan10: member bond0 is not declared"),
    ("ip=br0:dhcp", "the interface br0 is not declared"),
    ("bond=bond0:eth0,eth1 bond=bond1:eth1,eth2 bridge=br0:bond0,bond1 ip=br0:dhcp",
     "eth1 is a member of both bond=bond0 and bond=bond1"),
    ("bridge=br0:bond0 bond=bond0:eth0,bond1 bond=bond1:eth1,bond0 ip=br0:dhcp",
     "the links form a loop (br0 > bond0 > bond1 > bond0)"),
    ("bond=bond0:eth0,eth1 ip=eth0:dhcp", "the interface eth0 is a member of bond=bond0: put ip= on bond0"),
    ("bond=bond0:eth0,eth1 bond=bond0:eth2,eth3 ip=bond0:dhcp", "bond0 is declared twice"),
    ("bond=bond0:eth0,eth1 bridge=br0:eth2 ip=dhcp", "builds several (bond0, br0)"),
    ("bond=bond0:eth0,eth1 vlan=vlan5:eth0 ip=vlan5:dhcp", None),
])
def test_links_must_form_one_stack_under_the_interface(cmdline: str, reason: str | None) -> None:
    if reason is None:  # a VLAN on a NIC another link enslaves, outside the path: not built
        assert [link.name for link in parsed(cmdline).links] == ["vlan5"]
        return
    with pytest.raises(KdumpError) as error:
        parsed(cmdline)
    assert reason in str(error.value)


# --- IPv6 ip= forms and dual stack --------------------------------------------------------


@pytest.mark.parametrize("cmdline, expected", [
    ("ip=[2001:db8::2]::[2001:db8::1]:64::eth0:none",
     plan(interface="eth0", ipv6="static", addresses=("2001:db8::2/64",), gateway6="2001:db8::1")),
    ("ip=[2001:db8:0:0::2/64]::[fe80::1]::h:eth0:none:[2001:db8::53]",
     plan(interface="eth0", ipv6="static", addresses=("2001:db8::2/64",), gateway6="fe80::1", hostname="h",
          dns=("2001:db8::53",))),
    ("ip=eth0:auto6", plan(interface="eth0", ipv6="auto6")),
    ("ip=eth0:dhcp6:9000", plan(interface="eth0", ipv6="dhcp6", mtu=9000)),
    ("ip=auto6", plan(ipv6="auto6")),
    ("ip=dhcp6", plan(ipv6="dhcp6")),
    ("ip=::::crashed:eth0:auto6", plan(interface="eth0", ipv6="auto6", hostname="crashed")),
    ("ip=10.0.0.5::10.0.0.1:24::br0:none ip=[fd00::5]::[fd00::1]:64::br0:none bridge=br0:eth0",
     plan(interface="br0", addresses=("10.0.0.5/24", "fd00::5/64"), gateway="10.0.0.1", ipv6="static",
          gateway6="fd00::1", links=(VirtualLink(kind="bridge", name="br0", members=("eth0",)),))),
    ("ip=eth0:dhcp ip=eth0:auto6", plan(interface="eth0", dhcp=True, ipv6="auto6")),
    ("ip=dhcp ip=dhcp6 nameserver=[fd00::53] nameserver=10.0.0.53",
     plan(dhcp=True, ipv6="dhcp6", dns=("fd00::53", "10.0.0.53"))),
], ids=lambda value: value if isinstance(value, str) else "")
def test_ipv6_and_dual_stack_forms(cmdline: str, expected: NetworkPlan) -> None:
    assert parsed(cmdline) == expected


@pytest.mark.parametrize("cmdline, named, reason", [
    ("ip=eth0:dhcp ip=eth0:dhcp", "ip=eth0:dhcp, ip=eth0:dhcp", "two IPv4 methods"),
    ("ip=eth0:auto6 ip=eth0:dhcp6", "ip=eth0:auto6, ip=eth0:dhcp6", "two IPv6 methods"),
    ("ip=eth0:dhcp ip=eth1:auto6", "ip=eth0:dhcp, ip=eth1:auto6", "one interface"),
    ("ip=eth0:dhcp:1500 ip=eth0:auto6:9000", "ip=eth0:dhcp:1500, ip=eth0:auto6:9000",
     "different host names or MTUs"),
    ("ip=[fd00::5]::[fd00::1]:129::eth0:none", "ip=[fd00::5]", "not a netmask"),
    ("ip=[fd00::5]::[fd00::1]:::eth0:none", "ip=[fd00::5]", "needs <mask>"),
    ("ip=[fd00::zz]::[fd00::1]:64::eth0:none", "ip=[fd00::zz]", "not an IP address"),
    ("ip=dhcp6 nameserver=[fd00::zz]", "nameserver=[fd00::zz]", "not an IP address"),
])
def test_ipv6_errors_name_the_parameters(cmdline: str, named: str, reason: str) -> None:
    with pytest.raises(KdumpError) as error:
        parsed(cmdline)
    assert named in str(error.value) and reason in str(error.value)


# --- choose_plan with links ---------------------------------------------------------------


RECORDED_BOND = plan(interface="bond0", dhcp=True, links=(bond("bond0", ("ens3", "ens4"), ("mode",
                                                                                           "active-backup")),),
                     nic_macs=(("ens3", "52:54:00:00:00:03"), ("ens4", "52:54:00:00:00:04")))


def test_choose_plan_lends_the_record_macs_of_nics_with_the_same_names() -> None:
    chosen = choose_plan(parsed("bond=bond0:ens3,ens5:mode=1 ip=bond0:auto6"), RECORDED_BOND)
    assert chosen is not None
    assert chosen.nic_macs == (("ens3", "52:54:00:00:00:03"),)
    assert chosen.ipv6 == "auto6" and chosen.links[0].members == ("ens3", "ens5")


def test_choose_plan_keeps_the_command_line_macs() -> None:
    chosen = choose_plan(parsed("bond=bond0:ens3,ens4 ip=bond0:dhcp ifname=ens3:52:54:00:00:00:99"),
                         RECORDED_BOND)
    assert chosen is not None and dict(chosen.nic_macs) == {"ens3": "52:54:00:00:00:99",
                                                            "ens4": "52:54:00:00:00:04"}


def test_choose_plan_gives_bare_ip_the_recorded_path() -> None:
    chosen = choose_plan(parsed("ip=dhcp6"), RECORDED_BOND)
    assert chosen == plan(interface="bond0", ipv6="dhcp6", links=RECORDED_BOND.links,
                          nic_macs=RECORDED_BOND.nic_macs)


# --- resolve and the families of a plan ---------------------------------------------------


def answers(*addresses: str) -> list[Any]:
    return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
             (a, 0, 0, 0) if ":" in a else (a, 0)) for a in addresses]


def test_resolve_returns_the_first_answer_of_either_family(mocker: Any) -> None:
    lookup = mocker.patch("socket.getaddrinfo", return_value=answers("fd00::5", "10.0.0.5"))
    assert bringup.resolve("dumps.example") == "fd00::5"
    assert lookup.call_args.args[2] == socket.AF_UNSPEC


def test_resolve_restricted_to_ipv6_skips_a_records(mocker: Any) -> None:
    mocker.patch("socket.getaddrinfo", return_value=answers("10.0.0.5", "fd00:0:0::5"))
    v6_only = bringup.address_families(plan(ipv6="auto6"))
    assert bringup.resolve("dumps.example", v6_only) == "fd00::5"


def test_resolve_without_an_answer_of_the_family_says_so(mocker: Any) -> None:
    mocker.patch("socket.getaddrinfo", return_value=answers("10.0.0.5"))
    with pytest.raises(KdumpError, match="^cannot resolve dumps.example: no IPv6 address$"):
        bringup.resolve("dumps.example", (socket.AF_INET6,))


def test_resolve_returns_an_ipv6_literal_compressed() -> None:
    assert bringup.resolve("FD00:0000::0005") == "fd00::5"


def test_address_families_of_plans() -> None:
    assert bringup.address_families(plan(dhcp=True)) == (socket.AF_INET,)
    assert bringup.address_families(plan(dhcp=True, ipv6="dhcp6")) == (socket.AF_INET, socket.AF_INET6)
