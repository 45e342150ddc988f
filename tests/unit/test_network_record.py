"""The host's network record against a fake netlink: the walk from the route's link down
through bonds, VLANs and bridges to the NICs, the IPv6 guesses, and network.json's checks.

The fake answers what record_host_route asks of pyroute2's IPRoute (get_links, route get
and dump, get_addr) from a list of link messages shaped as the kernel sends them:
IFLA_LINKINFO/IFLA_INFO_KIND and IFLA_INFO_DATA, IFLA_MASTER, IFLA_LINK. The one-NIC IPv4
record is tested in test_network.py.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from kdump_agent.errors import KdumpError
from kdump_agent.network import rtnetlink
from kdump_agent.network.plan import VirtualLink
from kdump_agent.network.record import (
    IFA_F_DEPRECATED,
    IFA_F_MANAGETEMPADDR,
    IFA_F_TEMPORARY,
    IFAPROT_KERNEL_RA,
    HostRecord,
    record_host_route,
)

BOND_MAC = "52:54:00:00:00:b0"
NIC_MACS = {"ens3": "52:54:00:00:00:03", "ens4": "52:54:00:00:00:04"}
TARGET = "192.0.2.7"


class Msg(dict[str, Any]):
    """Stands in for a pyroute2 message: fields and attributes both answer .get()."""


def link(index: int, name: str, mac: str, *, kind: str | None = None, data: dict[str, Any] | None = None,
         master: int | None = None, parent: int | None = None, ifi_type: int = rtnetlink.ARPHRD_ETHER,
         **extra: Any) -> Msg:
    message = Msg(index=index, ifi_type=ifi_type, flags=0x1003, IFLA_IFNAME=name, IFLA_ADDRESS=mac,
                  IFLA_MTU=1500, **extra)
    if kind is not None:
        message["IFLA_LINKINFO"] = Msg(IFLA_INFO_KIND=kind, IFLA_INFO_DATA=Msg(data or {}))
    if master is not None:
        message["IFLA_MASTER"] = master
    if parent is not None:
        message["IFLA_LINK"] = parent
    return message


def slaves(master: int) -> list[Msg]:
    """ens3 (index 3) and ens4 (index 4) enslaved to master: they carry the bond's MAC, their
    own is IFLA_PERM_ADDRESS."""
    return [link(index, name, BOND_MAC, master=master, IFLA_PERM_ADDRESS=mac.upper())
            for index, (name, mac) in zip((3, 4), NIC_MACS.items(), strict=True)]


def bond(index: int, name: str = "bond0", *, master: int | None = None, **data: Any) -> Msg:
    options = {"IFLA_BOND_MODE": 1, "IFLA_BOND_MIIMON": 100, **data}
    return link(index, name, BOND_MAC, kind="bond", data=options, master=master)


def address(cidr: str, *, flags: int = rtnetlink.IFA_F_PERMANENT, scope: int = 0, proto: int | None = None,
            index: int = 0) -> Msg:
    ip, prefix = cidr.split("/")
    message = Msg(IFA_LOCAL=ip if ":" not in ip else None, IFA_ADDRESS=ip, prefixlen=int(prefix),
                  flags=flags & 0xFF, IFA_FLAGS=flags, scope=scope, index=index)
    if proto is not None:
        message["IFA_PROTO"] = proto
    return message


class FakeHost:
    """A host's links, addresses and routes behind the calls record_host_route makes.

    The route to any target leaves through link `oif` via `gateway` from `source`;
    addresses belong to `oif` unless they say otherwise.
    """

    def __init__(self, links: list[Msg], *, oif: int, gateway: str | None = None, source: str | None = None,
                 addresses: tuple[Msg, ...] = (), routes: tuple[Msg, ...] = ()) -> None:
        self.links = links
        self.oif = oif
        self.gateway = gateway
        self.source = source
        self.addresses = [Msg({**a, "index": a["index"] or oif}) for a in addresses]
        self.routes = list(routes)

    @contextmanager
    def open(self) -> Iterator[FakeHost]:
        yield self

    def get_links(self) -> list[Msg]:
        return list(self.links)

    def route(self, command: str, **spec: Any) -> list[Msg]:
        if command == "get":
            return [Msg(RTA_OIF=self.oif, RTA_GATEWAY=self.gateway, RTA_PREFSRC=self.source, proto=0)]
        assert command == "dump"
        v6 = spec["family"] == socket.AF_INET6
        return [r for r in self.routes if (":" in str(r.get("RTA_GATEWAY"))) == v6]

    def get_addr(self, *, index: int, family: int) -> list[Msg]:
        v6 = family == socket.AF_INET6
        return [a for a in self.addresses if a["index"] == index and (":" in a["IFA_ADDRESS"]) == v6]


def default_route(gateway: str, oif: int) -> Msg:
    return Msg(RTA_OIF=oif, RTA_GATEWAY=gateway, dst_len=0, proto=4)


@pytest.fixture
def resolv_conf(tmp_path: Path) -> str:
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 127.0.0.53\nnameserver 10.0.0.53\nnameserver ::1\nnameserver fe80::53\n"
                    "nameserver fd00::53\n")
    return str(path)


def recorded(fake: FakeHost, resolv_conf: str, target: str = TARGET, **options: Any) -> HostRecord:
    return record_host_route("dumps.example", target, resolv_conf=resolv_conf, rtnetlink=fake.open, **options)


V4 = (address("10.0.0.5/24"),)


# --- bonds --------------------------------------------------------------------------------


def test_active_backup_bond_keeps_its_primary_and_finds_the_nics_by_their_own_macs(resolv_conf: str) -> None:
    top = bond(2, IFLA_BOND_PRIMARY=4, IFLA_BOND_UPDELAY=200, IFLA_BOND_FAIL_OVER_MAC=1,
               IFLA_BOND_XMIT_HASH_POLICY=1, IFLA_BOND_AD_LACP_RATE=1, IFLA_BOND_USE_CARRIER=1)
    record = recorded(FakeHost([top, *slaves(2)], oif=2, gateway="10.0.0.1", addresses=V4), resolv_conf)
    # miimon 100 and use_carrier 1 are the kernel's defaults; xmit_hash_policy and lacp_rate
    # do not apply to active-backup.
    assert record.links == (VirtualLink(kind="bond", name="bond0", members=("ens3", "ens4"), options=(
        ("mode", "active-backup"), ("updelay", "200"), ("primary", "ens4"), ("fail_over_mac", "active")),
        mac=BOND_MAC, mtu=1500),)
    plan = record.plan()
    assert plan.nic_macs == tuple(NIC_MACS.items())
    assert (plan.interface, plan.mac, plan.nics()) == ("bond0", None, ("ens3", "ens4"))
    assert plan.modules() == ("bonding",)
    assert plan.addresses == ("10.0.0.5/24",) and plan.gateway == "10.0.0.1"


def test_802_3ad_bond_keeps_lacp_rate_and_the_hash_policy_drops_what_does_not_apply(resolv_conf: str) -> None:
    top = bond(2, IFLA_BOND_MODE=4, IFLA_BOND_MIIMON=50, IFLA_BOND_AD_LACP_RATE=1,
               IFLA_BOND_XMIT_HASH_POLICY=1, IFLA_BOND_PRIMARY=3, IFLA_BOND_AD_SELECT=0,
               IFLA_BOND_MIN_LINKS=1)
    (link_,) = recorded(FakeHost([top, *slaves(2)], oif=2, addresses=V4), resolv_conf).links
    assert link_.options == (("mode", "802.3ad"), ("miimon", "50"), ("xmit_hash_policy", "layer3+4"),
                             ("min_links", "1"), ("lacp_rate", "fast"))


def test_a_bond_mode_or_value_the_agent_does_not_know_is_refused(resolv_conf: str) -> None:
    with pytest.raises(KdumpError, match="bond bond0 is in mode 9"):
        recorded(FakeHost([bond(2, IFLA_BOND_MODE=9), *slaves(2)], oif=2, addresses=V4), resolv_conf)
    with pytest.raises(KdumpError, match="bond bond0: lacp_rate 7 is a value"):
        recorded(FakeHost([bond(2, IFLA_BOND_MODE=4, IFLA_BOND_AD_LACP_RATE=7), *slaves(2)], oif=2,
                          addresses=V4), resolv_conf)


def test_a_bond_without_slaves_is_refused(resolv_conf: str) -> None:
    with pytest.raises(KdumpError, match="bond bond0 .*has no slaves"):
        recorded(FakeHost([bond(2)], oif=2, addresses=V4), resolv_conf)


# --- VLANs and bridges ---------------------------------------------------------------------


def vlan(index: int, parent: int, vlan_id: int, name: str, *, protocol: int = 0x8100,
         master: int | None = None) -> Msg:
    return link(index, name, BOND_MAC, kind="vlan", parent=parent, master=master,
                data={"IFLA_VLAN_ID": vlan_id, "IFLA_VLAN_PROTOCOL": protocol})


def test_vlan_on_a_bond_is_built_bond_first(resolv_conf: str) -> None:
    fake = FakeHost([bond(2), *slaves(2), vlan(5, 2, 10, "bond0.10")], oif=5, addresses=V4)
    record = recorded(fake, resolv_conf)
    assert [(each.kind, each.name, each.members) for each in record.links] == [
        ("bond", "bond0", ("ens3", "ens4")), ("vlan", "bond0.10", ("bond0",))]
    assert record.links[1].options == (("id", "10"),) and record.links[1].vlan_id == 10
    assert record.plan().modules() == ("bonding", "8021q")
    assert record.described() == "bond0.10 (VLAN 10 on bond0 (active-backup: ens3, ens4))"


def test_vlan_on_a_nic_records_the_nic_mac(resolv_conf: str) -> None:
    nic = link(3, "ens3", NIC_MACS["ens3"])
    record = recorded(FakeHost([nic, vlan(5, 3, 4094, "ens3.4094")], oif=5, addresses=V4), resolv_conf)
    assert record.nic_macs == (("ens3", NIC_MACS["ens3"]),)
    assert record.plan().nics() == ("ens3",)


def test_an_802_1ad_vlan_is_refused(resolv_conf: str) -> None:
    fake = FakeHost([link(3, "ens3", NIC_MACS["ens3"]), vlan(5, 3, 100, "qinq0", protocol=0x88A8)], oif=5,
                    addresses=V4)
    with pytest.raises(KdumpError, match=r"goes through qinq0, an 802.1ad \(QinQ\) VLAN"):
        recorded(fake, resolv_conf)


def bridge(index: int, name: str = "br0", **data: Any) -> Msg:
    return link(index, name, "52:54:00:00:00:b1", kind="bridge",
                data={"IFLA_BR_STP_STATE": 0, "IFLA_BR_FORWARD_DELAY": 1500, **data})


def test_bridge_over_a_bond_over_two_nics_leaves_a_guest_tap_out(resolv_conf: str, caplog: Any) -> None:
    tap = link(7, "vnet0", "fe:54:00:00:00:77", kind="tun", master=6)
    fake = FakeHost([bond(2, master=6), *slaves(2), bridge(6, IFLA_BR_STP_STATE=1), tap], oif=6, addresses=V4)
    with caplog.at_level(logging.INFO, logger="kdump-agent"):
        record = recorded(fake, resolv_conf)
    assert [(each.kind, each.name, each.members) for each in record.links] == [
        ("bond", "bond0", ("ens3", "ens4")), ("bridge", "br0", ("bond0",))]
    assert record.links[1].options == (("stp_state", "1"), ("forward_delay", "1500"))
    assert record.links[1].mac == "52:54:00:00:00:b1"
    assert "leaving out br0's port vnet0 (tun)" in caplog.text
    assert record.described() == "br0 (bridge: bond0 (active-backup: ens3, ens4))"
    assert record.plan().modules() == ("bonding", "bridge")


def test_bridge_over_a_vlan_over_a_nic(resolv_conf: str) -> None:
    fake = FakeHost([link(3, "ens3", NIC_MACS["ens3"]), vlan(5, 3, 20, "ens3.20", master=6), bridge(6)],
                    oif=6, addresses=V4)
    assert [each.name for each in recorded(fake, resolv_conf).links] == ["ens3.20", "br0"]


def test_bridge_with_only_guest_ports_is_refused(resolv_conf: str) -> None:
    tap = link(7, "vnet0", "fe:54:00:00:00:77", kind="tun", master=6)
    veth = link(8, "veth1", "fe:54:00:00:00:78", kind="veth", master=6)
    with pytest.raises(KdumpError, match="bridge br0 .*has no port kdump-agent can build"):
        recorded(FakeHost([bridge(6), tap, veth], oif=6, addresses=V4), resolv_conf)


def test_a_stand_in_nic_counts_as_a_nic_by_name_only(resolv_conf: str) -> None:
    uplink = link(8, "veth0", "02:00:00:00:00:08", kind="veth", master=6)
    guest = link(9, "veth1", "02:00:00:00:00:09", kind="veth", master=6)
    record = recorded(FakeHost([bridge(6), uplink, guest], oif=6, addresses=V4), resolv_conf,
                      stand_in_nics=("veth0",))
    assert record.links[0].members == ("veth0",)
    assert record.nic_macs == (("veth0", "02:00:00:00:00:08"),)


def test_a_bridge_filtering_vlans_is_refused(resolv_conf: str) -> None:
    fake = FakeHost([bridge(6, IFLA_BR_VLAN_FILTERING=1), link(3, "ens3", NIC_MACS["ens3"], master=6)], oif=6,
                    addresses=V4)
    with pytest.raises(KdumpError, match="bridge br0, which filters VLANs"):
        recorded(fake, resolv_conf)


@pytest.mark.parametrize("kind, said", [
    ("team", "team0, a team device: kdump-agent builds bonds, VLANs and bridges; a bond does"),
    ("macvlan", "team0, a macvlan device: kdump-agent builds bonds, VLANs and bridges"),
    ("vxlan", "team0, a vxlan device"),
    ("tun", "team0, a tun/tap device"),
    ("ipvlan", "team0, a ipvlan device"),
    ("wireguard", "team0, a WireGuard tunnel"),
])
def test_links_we_do_not_build_are_refused_naming_device_and_kind(kind: str, said: str,
                                                                   resolv_conf: str) -> None:
    fake = FakeHost([link(2, "team0", BOND_MAC, kind=kind), *slaves(2)], oif=2, addresses=V4)
    with pytest.raises(KdumpError) as error:
        recorded(fake, resolv_conf)
    assert f"the route to {TARGET} goes through {said}" in str(error.value)


def test_an_infiniband_nic_under_a_vlan_is_refused(resolv_conf: str) -> None:
    ib = link(3, "ib0", "80:00:00:00:fe:80:00:00:00:00:00:00:00:00:00:00:00:00:00:01", ifi_type=32)
    with pytest.raises(KdumpError, match="goes through ib0, an InfiniBand NIC"):
        recorded(FakeHost([ib, vlan(5, 3, 10, "ib0.10")], oif=5, addresses=V4), resolv_conf)


# --- IPv6 ---------------------------------------------------------------------------------

NIC = [link(2, "ens3", NIC_MACS["ens3"])]
FINITE = 0  # no IFA_F_PERMANENT: the address has a lifetime


@pytest.mark.parametrize("addresses, method", [
    ([address("fd00::5/64")], "static"),
    ([address("fd00::5/64", flags=FINITE, proto=IFAPROT_KERNEL_RA)], "auto6"),
    ([address("fd00::5/64", flags=FINITE)], "auto6"),  # before Linux 5.18: no IFA_PROTO
    ([address("fd00::5/128", flags=IFA_F_MANAGETEMPADDR)], "auto6"),  # NetworkManager's own SLAAC
    ([address("fd00::5/128", flags=FINITE)], "dhcp6"),
    ([address("fd00::5/64", flags=FINITE), address("fd00::77/128", flags=FINITE)], "dhcp6"),
    ([address("fd00::5/64"), address("fd00::6/64", flags=FINITE)], "auto6"),
    ([address("fd00::9/64", flags=FINITE | IFA_F_TEMPORARY), address("fd00::8/64", flags=IFA_F_DEPRECATED),
      address("fe80::5/64", scope=253)], None),  # privacy, deprecated and link-local: none counts
], ids=str)
def test_ipv6_method_is_guessed_from_flags_protocol_and_prefix(
        addresses: list[Msg], method: str | None, resolv_conf: str) -> None:
    record = recorded(FakeHost(NIC, oif=2, addresses=(*V4, *addresses)), resolv_conf)
    assert record.ipv6 == method
    plan = record.plan()
    static = tuple(f"{a['IFA_ADDRESS']}/{a['prefixlen']}" for a in addresses)
    assert plan.ipv6_addresses == (static if method == "static" else ())


def test_ipv6_only_host_records_the_link_local_gateway_and_ipv6_dns(resolv_conf: str) -> None:
    fake = FakeHost(NIC, oif=2, gateway="fe80::1", source="fd00::5",
                    addresses=(address("fd00::9/64"), address("fd00::5/64")))
    record = recorded(fake, resolv_conf, "fd00:99::1")
    assert (record.target, record.ipv6) == ("fd00:99::1", "static")
    assert (record.gateway6, record.gateway) == ("fe80::1", None)
    assert record.addresses == ("fd00::5/64", "fd00::9/64")  # the route's source first
    assert record.dns == ("10.0.0.53", "fd00::53")  # neither loopback nor link-local
    assert HostRecord.from_json(record.as_json()) == record
    plan = record.plan()
    assert (plan.has_ipv4, plan.ipv6, plan.gateway6, plan.ipv6_addresses) == (
        False, "static", "fe80::1", ("fd00::5/64", "fd00::9/64"))


def test_dual_stack_records_the_other_family_too(resolv_conf: str) -> None:
    fake = FakeHost(NIC, oif=2, gateway="fe80::1", addresses=(address("10.0.0.5/24", flags=FINITE),
                                                              address("fd00::5/64", flags=FINITE)),
                    routes=(default_route("10.0.0.1", 2), default_route("fe80::2", 3)))
    record = recorded(fake, resolv_conf, "fd00:99::1")
    assert (record.dhcp, record.gateway) == (True, "10.0.0.1")
    assert (record.ipv6, record.gateway6) == ("auto6", "fe80::1")
    plan = record.plan()
    assert plan.addresses == () and plan.gateway6 is None  # both families from the network


def test_ipv4_target_records_the_ipv6_default_route_of_the_same_link(resolv_conf: str) -> None:
    fake = FakeHost(NIC, oif=2, gateway="10.0.0.1", addresses=(*V4, address("fd00::5/64")),
                    routes=(default_route("fe80::2", 3), default_route("fe80::1", 2)))
    assert recorded(fake, resolv_conf).gateway6 == "fe80::1"


def test_ipv6_target_without_a_global_ipv6_address_is_refused(resolv_conf: str) -> None:
    fake = FakeHost(NIC, oif=2, addresses=(*V4, address("fe80::5/64", scope=253)))
    with pytest.raises(KdumpError, match="ens3 routes to fd00::1 but has no global IPv6 address"):
        recorded(fake, resolv_conf, "fd00::1")


def test_an_ipv4_only_record_leaves_ipv6_name_servers_out(resolv_conf: str) -> None:
    assert recorded(FakeHost(NIC, oif=2, addresses=V4), resolv_conf).dns == ("10.0.0.53",)


# --- network.json ------------------------------------------------------------------------


def stacked(resolv_conf: str) -> HostRecord:
    fake = FakeHost([bond(2, IFLA_BOND_PRIMARY=3), *slaves(2), vlan(5, 2, 10, "bond0.10")], oif=5,
                    gateway="fe80::1", addresses=(*V4, address("fd00::5/64")))
    return recorded(fake, resolv_conf, "fd00::1")


def test_json_round_trip_of_a_stacked_dual_stack_record(resolv_conf: str) -> None:
    record = stacked(resolv_conf)
    text = record.as_json()
    data = json.loads(text)
    assert data["links"][0] == {"kind": "bond", "name": "bond0", "members": ["ens3", "ens4"],
                                "options": {"mode": "active-backup", "primary": "ens3"}, "mac": BOND_MAC,
                                "mtu": 1500}
    assert data["nic_macs"] == NIC_MACS and (data["ipv6"], data["gateway6"]) == ("static", "fe80::1")
    assert HostRecord.from_json(text) == record
    assert HostRecord.from_json(text).plan() == record.plan()


def damaged(resolv_conf: str, change: Any) -> str:
    data = json.loads(stacked(resolv_conf).as_json())
    change(data)
    return json.dumps(data)


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def change(data: Any) -> None:
        for key in path[:-1]:
            data = data[key]
        data[path[-1]] = value
    return change


@pytest.mark.parametrize("change, reason", [
    (_set(("links", 0, "kind"), "team"), "link 'bond0': kind 'team' is not one of bond, vlan, bridge"),
    (_set(("nic_macs", "ens3"), "52:54:00"), "nic_macs: ens3's MAC '52:54:00' is not a MAC address"),
    (_set(("nic_macs", "ens3"), 7), "nic_macs: ens3's MAC should be str"),
    (_set(("links", 0, "mac"), "bond-mac"), "link 'bond0': mac 'bond-mac' is not a MAC address"),
    (_set(("links", 1, "options", "id"), "0"), "a VLAN needs one parent and an id 1-4094, not '0'"),
    (_set(("links", 1, "options", "id"), "4095"), "an id 1-4094, not '4095'"),
    (_set(("links", 1, "options"), {}), "an id 1-4094, not ''"),
    (_set(("links", 1, "members"), ["ens5"]), "member 'ens5' is neither an earlier link nor a NIC"),
    (_set(("links", 0, "members"), ["bond0.10"]), "member 'bond0.10' is neither an earlier link"),
    (_set(("links", 0, "members"), []), "members should be a non-empty list"),
    (_set(("links", 0, "options", "miimon"), 100), "option values should be strings"),
    (_set(("links", 0), "bond0"), "links: entry 1 should be dict"),
    (_set(("links",), {}), "links should be list"),
    (_set(("interface",), "eth9"), "interface 'eth9' is none of the record's links or NICs"),
    (_set(("ipv6",), "slaac"), "ipv6 'slaac' is not one of static, auto6, dhcp6"),
    (_set(("addresses",), ["10.0.0.5/24"]), "ipv6 static, but no IPv6 addresses"),
    (_set(("addresses",), ["fd00::5"]), "has no prefix length"),
    (_set(("gateway6",), "10.0.0.1"), "gateway6: 10.0.0.1 is not an IPv6 address"),
    (_set(("gateway",), "fe80::1"), "gateway: fe80::1 is not an IPv4 address"),
    (_set(("target",), "filer"), "target: 'filer' is not an IP address"),
], ids=lambda value: value if isinstance(value, str) else "")
def test_from_json_refuses_a_damaged_record_saying_what(change: Any, reason: str, resolv_conf: str) -> None:
    with pytest.raises(KdumpError) as error:
        HostRecord.from_json(damaged(resolv_conf, change))
    assert str(error.value).startswith("network record: ")
    assert reason in str(error.value)
