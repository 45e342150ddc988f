"""Capture-kernel networking without a network: dracut's ip= forms, the host's record, the
choice between them, and bring_up's netlink conversation against a fake IPRoute.

The fake IPRoute goes in where the real one would, as the `rtnetlink` argument; the DHCP
client as the `lease` argument. The clock is fake too (`clock` fixture): waits cost no
time and deadlines are exact.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from kdump_agent.errors import KdumpError
from kdump_agent.network import bringup, dhcp, poll, rtnetlink
from kdump_agent.network.bringup import bring_up
from kdump_agent.network.cmdline import choose_plan, parse_cmdline
from kdump_agent.network.plan import NetworkPlan
from kdump_agent.network.record import HostRecord, record_host_route

AGENT = Path(__file__).resolve().parents[2] / "agent"
MAC = "52:54:00:12:34:56"
TARGET = "192.168.177.1"


def plan(**fields: Any) -> NetworkPlan:
    defaults: dict[str, Any] = {"interface": None, "mac": None, "dhcp": False, "addresses": (),
                                "gateway": None, "dns": (), "hostname": None, "mtu": None}
    return NetworkPlan(**{**defaults, **fields})


# --- dracut's ip= / ifname= / nameserver= -------------------------------------------------


@pytest.mark.parametrize("cmdline, expected", [
    ("ip=dhcp", plan(dhcp=True)),
    ("ip=on", plan(dhcp=True)),
    ("ip=eth0:dhcp", plan(interface="eth0", dhcp=True)),
    ("ip=eth0:any:9000", plan(interface="eth0", dhcp=True, mtu=9000)),
    ("ip=192.168.1.10::192.168.1.1:255.255.255.0:crashed:eth0:none",
     plan(interface="eth0", addresses=("192.168.1.10/24",), gateway="192.168.1.1", hostname="crashed")),
    ("ip=10.0.0.5:::16::ens3:off", plan(interface="ens3", addresses=("10.0.0.5/16",))),
    ("ip=10.0.0.5/8::::eth1:none", None),  # needs 7 fields: mask given in client, one short
    ("ip=10.0.0.5/8:::::eth1:none", plan(interface="eth1", addresses=("10.0.0.5/8",))),
    ("ip=10.0.0.5::10.0.0.1:24:h:eth0:none:10.0.0.53:10.0.0.54",
     plan(interface="eth0", addresses=("10.0.0.5/24",), gateway="10.0.0.1", hostname="h",
          dns=("10.0.0.53", "10.0.0.54"))),
    ("ip=10.0.0.5::10.0.0.1:24:h:eth0:none:1400", plan(interface="eth0", addresses=("10.0.0.5/24",),
                                                       gateway="10.0.0.1", hostname="h", mtu=1400)),
    ("ip=::::crashed:eth2:dhcp", plan(interface="eth2", dhcp=True, hostname="crashed")),
], ids=lambda value: value if isinstance(value, str) else "")
def test_parse_cmdline_reads_dracut_ip_forms(cmdline: str, expected: NetworkPlan | None) -> None:
    if expected is None:
        with pytest.raises(KdumpError, match="ip="):
            parse_cmdline(cmdline)
    else:
        assert parse_cmdline(f"console=ttyS0 {cmdline} irqpoll") == expected


def test_parse_cmdline_without_ip_is_no_plan() -> None:
    assert parse_cmdline("console=ttyS0 irqpoll ifname=net0:52:54:00:12:34:56 reset_devices") is None


def test_parse_cmdline_takes_the_mac_of_the_named_interface_from_ifname() -> None:
    found = parse_cmdline("ifname=other:52:54:00:00:00:01 ip=net0:dhcp ifname=net0:52:54:00:AB:CD:EF")
    assert found == plan(interface="net0", mac="52:54:00:ab:cd:ef", dhcp=True)


def test_parse_cmdline_ip_dhcp_with_one_ifname_uses_that_nic() -> None:
    assert parse_cmdline(f"ip=dhcp ifname=net0:{MAC}") == plan(interface="net0", mac=MAC, dhcp=True)


def test_parse_cmdline_ip_dhcp_with_several_ifnames_names_no_nic() -> None:
    found = parse_cmdline("ip=dhcp ifname=a:52:54:00:00:00:01 ifname=b:52:54:00:00:00:02")
    assert found == plan(dhcp=True)


def test_parse_cmdline_adds_nameserver_parameters_once() -> None:
    found = parse_cmdline("ip=10.0.0.5::10.0.0.1:24::eth0:none:10.0.0.53 nameserver=10.0.0.54 "
                          "nameserver=10.0.0.53")
    assert found is not None and found.dns == ("10.0.0.53", "10.0.0.54")


def test_parse_cmdline_accepts_kernel_quotes() -> None:
    assert parse_cmdline('"ip=eth0:dhcp"') == plan(interface="eth0", dhcp=True)


@pytest.mark.parametrize("cmdline, named, reason", [
    ("ip=either6", "ip=either6", "auto6 or dhcp6"),
    ("ip=eth0:link6", "ip=eth0:link6", "only a link-local address"),
    ("ip=eth0:link-local", "ip=eth0:link-local", "only a link-local address"),
    ("ip=off", "ip=off", "brings no interface up"),
    ("ip=eth0:none", "ip=eth0:none", "brings no interface up"),
    ("ip=10.0.0.5", "ip=10.0.0.5", "anaconda"),
    ("ip=eth0:bogus", "ip=eth0:bogus", "expected"),
    ("ip=", "ip=", "unknown method"),
    ("ip=a:b:c", "ip=a:b:c", "expected"),
    ("ip=10.0.0.5::10.0.0.1:24:h:eth0:bogus", "ip=10.0.0.5::10.0.0.1:24:h:eth0:bogus", "unknown method"),
    ("ip=::10.0.0.1:24:h:eth0:none", "ip=::10.0.0.1:24:h:eth0:none", "needs <client>"),
    ("ip=10.0.0.5::::h:eth0:none", "ip=10.0.0.5::::h:eth0:none", "needs <mask>"),
    ("ip=10.0.0.5:::255.0.255.0:h:eth0:none", "ip=10.0.0.5:::255.0.255.0:h:eth0:none", "not a netmask"),
    ("ip=10.0.0.5:::33:h:eth0:none", "ip=10.0.0.5:::33:h:eth0:none", "not a netmask"),
    ("ip=10.0.0.256:::24:h:eth0:none", "ip=10.0.0.256:::24:h:eth0:none", "not an IP address"),
    ("ip=10.0.0.5::gw:24:h:eth0:none", "ip=10.0.0.5::gw:24:h:eth0:none", "not an IP address"),
    ("ip=10.0.0.5:10.0.0.9::24:h:eth0:none", "ip=10.0.0.5:10.0.0.9::24:h:eth0:none", "point-to-point"),
    ("ip=[fd00::5]::10.0.0.1:64:h:eth0:none", "ip=[fd00::5]", "not of the address's family"),
    ("ip=[fd00::5]:::255.255.0.0:h:eth0:none", "ip=[fd00::5]", "not a netmask"),
    ("ip=[fd00::5", "ip=[fd00::5", "unbalanced"),
    ("ip=[fd00::5]x:dhcp", "ip=[fd00::5]x:dhcp", "':' expected"),
    ("ip=eth0:dhcp:0", "ip=eth0:dhcp:0", "MTU"),
    ("ip=eth0:dhcp:jumbo", "ip=eth0:dhcp:jumbo", "MTU"),
    ("ip=eth0:dhcp:1500:52:54:00:12:34:56", "ip=eth0:dhcp:1500", "MAC address"),
    ("ip=10.0.0.5:::24:h:eth0:none:1.1.1.1:2.2.2.2:3.3.3.3", "ip=10.0.0.5", "at most two DNS"),
    ("ip=dhcp ip=eth1:dhcp", "ip=dhcp, ip=eth1:dhcp", "one interface"),
    ("ip=dhcp ifname=net0", "ifname=net0", "ifname=<interface>:<mac>"),
    ("ip=dhcp ifname=net0:52:54:00:12:34", "ifname=net0:52:54:00:12:34", "six hex pairs"),
    ("ip=dhcp ifname=:52:54:00:12:34:56", "ifname=:52:54:00:12:34:56", "ifname=<interface>:<mac>"),
    ("ip=dhcp ifname=a:52:54:00:12:34:56 ifname=a:52:54:00:12:34:57", "ifname=a:", "already has MAC"),
    ("ip=dhcp nameserver=dns.example", "nameserver=dns.example", "not an IP address"),
])
def test_parse_cmdline_rejects_bad_forms_naming_the_parameter(cmdline: str, named: str, reason: str) -> None:
    with pytest.raises(KdumpError) as error:
        parse_cmdline(cmdline)
    assert named in str(error.value)
    assert reason in str(error.value)


# --- a fake rtnetlink -------------------------------------------------------------------


class Msg(dict[str, Any]):
    """Stands in for a pyroute2 message: fields and attributes both answer .get()."""


class FakeNetlink:
    """One NIC behind a MagicMock IPRoute, so `ipr.mock_calls` keeps the order of requests.

    `open` stands in for rtnetlink.open_rtnetlink. The NIC turns UP `up_after` polls after
    it is set up; the route to the target exists `route_after` polls after the first request
    for it (None: never).
    """

    def __init__(self, mocker: Any, *, up_after: int | None = 1, route_after: int | None = 0,
                 links: list[Msg] | None = None) -> None:
        self.up_after = up_after
        self.route_after = route_after
        self.links = links if links is not None else [ether(3, "eth0", MAC)]
        self.set_up = False
        self.up_index = 0
        self.polls_up = 0
        self.polls_route = 0
        self.addresses: list[Msg] = []
        self.routes: list[Msg] = []
        self.ipr = mocker.MagicMock(name="ipr")
        self.ipr.link.side_effect = self.link
        self.ipr.link_lookup.side_effect = self.link_lookup
        self.ipr.get_links.side_effect = lambda: list(self.links)
        self.ipr.route.side_effect = self.route
        self.ipr.get_addr.side_effect = lambda **_: list(self.addresses)
        self.opened = 0

    @contextmanager
    def open(self) -> Iterator[Any]:
        self.opened += 1
        yield self.ipr

    def link(self, command: str, **spec: Any) -> Any:
        if command == "set":
            if spec.get("state") == "up":
                self.set_up, self.up_index = True, spec["index"]
            return ()
        assert command == "get"
        found = next(dict(link) for link in self.links if link["index"] == spec["index"])
        if self.set_up:
            self.polls_up += 1
        up = self.set_up and self.up_after is not None and self.polls_up > self.up_after
        found["IFLA_OPERSTATE"] = "UP" if up else "DOWN"
        return (Msg(found),)

    def link_lookup(self, **spec: Any) -> list[int]:
        key, value = next(iter(spec.items()))
        attribute = {"address": "IFLA_ADDRESS", "ifname": "IFLA_IFNAME"}[key]
        return [link["index"] for link in self.links if str(link[attribute]).lower() == value.lower()]

    def route(self, command: str, **spec: Any) -> Any:
        if command == "get":
            self.polls_route += 1
            if self.route_after is None or self.polls_route <= self.route_after:
                raise NetlinkError(101, "Network is unreachable")
            return self.routes or (Msg(RTA_OIF=self.up_index, RTA_GATEWAY=None, proto=0),)
        if command == "dump":
            return [r for r in self.routes if "RTA_DST" in r]
        return ()

    def requests(self) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
        """The requests made that find or change something, in order (reads and polls left out)."""
        wanted = []
        for name, args, kwargs in self.ipr.mock_calls:
            if name == "get_links" or args and args[0] in ("get", "dump"):
                continue
            wanted.append((name, args, kwargs))
        return wanted


def ether(index: int, name: str, mac: str) -> Msg:
    return Msg(index=index, ifi_type=rtnetlink.ARPHRD_ETHER, flags=0x1003, IFLA_IFNAME=name,
               IFLA_ADDRESS=mac, IFLA_MTU=1500)


class Clock:
    """time.monotonic and time.sleep for the module under test: sleeping advances it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(mocker: Any) -> Clock:
    fake = Clock()
    for module in (bringup, poll, dhcp):  # the bring-up's waits, and the Budget they share
        mocker.patch.object(module, "time", SimpleNamespace(monotonic=fake.monotonic, sleep=fake.sleep))
    return fake


STATIC = plan(interface="eth0", addresses=("192.168.177.10/24",), gateway="192.168.177.254")


# --- bring_up -----------------------------------------------------------------------------


def test_bring_up_static_makes_its_requests_in_order(mocker: Any, clock: Clock) -> None:
    fake = FakeNetlink(mocker)
    note = bring_up(STATIC, TARGET, link_delay=0, deadline=30, rtnetlink=fake.open)
    assert fake.requests() == [
        ("link_lookup", (), {"ifname": "eth0"}),
        ("link", ("set",), {"index": 3, "state": "up"}),
        ("addr", ("replace",), {"index": 3, "address": "192.168.177.10", "prefixlen": 24,
                                "broadcast": "192.168.177.255"}),
        ("route", ("replace",), {"dst": "0.0.0.0/0", "gateway": "192.168.177.254", "oif": 3}),
    ]
    assert fake.ipr.route.call_args_list[-1] == mocker.call("get", dst=TARGET)
    assert note == f"eth0 ({MAC}) 192.168.177.10/24 static, route to {TARGET} dev eth0"
    assert fake.opened == 1


def test_bring_up_sets_the_mtu_before_the_link_goes_up(mocker: Any, clock: Clock) -> None:
    fake = FakeNetlink(mocker)
    bring_up(replace(STATIC, mtu=9000), TARGET, link_delay=0, deadline=30, rtnetlink=fake.open)
    assert fake.requests()[1:3] == [("link", ("set",), {"index": 3, "mtu": 9000}),
                                    ("link", ("set",), {"index": 3, "state": "up"})]


def test_bring_up_finds_the_nic_by_mac_whatever_its_name(mocker: Any, clock: Clock) -> None:
    fake = FakeNetlink(mocker, links=[ether(2, "eth0", "52:54:00:00:00:01"), ether(5, "ens9", MAC)])
    note = bring_up(replace(STATIC, mac=MAC), TARGET, link_delay=0, deadline=30, rtnetlink=fake.open)
    assert fake.requests()[0] == ("link_lookup", (), {"address": MAC})
    assert ("link", ("set",), {"index": 5, "state": "up"}) in fake.requests()
    assert note.startswith(f"ens9 ({MAC})")


def test_bring_up_waits_for_a_nic_whose_driver_is_still_loading(mocker: Any, clock: Clock) -> None:
    fake = FakeNetlink(mocker, links=[])
    appear = iter([[], [], [3]])
    fake.ipr.link_lookup.side_effect = lambda **_: next(appear)
    fake.links.append(ether(3, "eth0", MAC))
    bring_up(replace(STATIC, mac=MAC), TARGET, link_delay=0, deadline=30, rtnetlink=fake.open)
    assert fake.ipr.link_lookup.call_count == 3


def test_bring_up_without_a_named_nic_uses_the_only_ethernet_one(mocker: Any, clock: Clock) -> None:
    loopback = Msg(index=1, ifi_type=772, flags=0x49, IFLA_IFNAME="lo", IFLA_ADDRESS="00:00:00:00:00:00")
    fake = FakeNetlink(mocker, links=[loopback, ether(2, "eth0", MAC)])
    note = bring_up(plan(addresses=("10.0.0.5/24",)), TARGET, link_delay=0, deadline=30, rtnetlink=fake.open)
    assert note.startswith(f"eth0 ({MAC}) 10.0.0.5/24")


def test_bring_up_without_a_named_nic_passes_over_the_bond_that_loading_bonding_makes(
        mocker: Any, clock: Clock) -> None:
    bond0 = Msg(ether(2, "bond0", "8a:3b:ed:47:ca:6a"), IFLA_LINKINFO=Msg(IFLA_INFO_KIND="bond"))
    fake = FakeNetlink(mocker, links=[bond0, ether(3, "eth0", MAC)])
    note = bring_up(plan(addresses=("10.0.0.5/24",)), TARGET, link_delay=0, deadline=30, rtnetlink=fake.open)
    assert note.startswith(f"eth0 ({MAC}) 10.0.0.5/24")


def test_bring_up_without_a_named_nic_refuses_to_guess_among_several(mocker: Any, clock: Clock) -> None:
    fake = FakeNetlink(mocker, links=[ether(2, "eth0", MAC), ether(3, "eth1", "52:54:00:00:00:02")])
    with pytest.raises(KdumpError, match=r"several \(eth0, eth1\)"):
        bring_up(plan(dhcp=True), TARGET, link_delay=0, deadline=30, rtnetlink=fake.open)
    assert [name for name, _, _ in fake.requests()] == []


def test_bring_up_sleeps_link_delay_after_the_link_is_up(mocker: Any, clock: Clock) -> None:
    fake = FakeNetlink(mocker, up_after=3)
    bring_up(STATIC, TARGET, link_delay=7, deadline=30, rtnetlink=fake.open)
    assert clock.slept == [poll.POLL_SECONDS] * 3 + [7]


def test_bring_up_fails_when_link_delay_does_not_fit_in_the_deadline(mocker: Any, clock: Clock) -> None:
    fake = FakeNetlink(mocker)
    with pytest.raises(KdumpError, match="link_delay 60 s does not fit"):
        bring_up(STATIC, TARGET, link_delay=60, deadline=30, rtnetlink=fake.open)
    assert 60 not in clock.slept
    assert all(name != "addr" for name, _, _ in fake.requests())


def test_bring_up_without_carrier_fails_at_the_deadline(mocker: Any, clock: Clock) -> None:
    fake = FakeNetlink(mocker, up_after=None)
    start = clock.now
    with pytest.raises(KdumpError) as error:
        bring_up(STATIC, TARGET, link_delay=0, deadline=5, rtnetlink=fake.open)
    assert str(error.value) == ("carrier on eth0: not done within the 5 s network deadline "
                                "(operstate DOWN, no carrier)")
    assert clock.now - start == pytest.approx(5)


def test_bring_up_without_a_route_fails_at_the_deadline(mocker: Any, clock: Clock) -> None:
    fake = FakeNetlink(mocker, route_after=None)
    start = clock.now
    with pytest.raises(KdumpError) as error:
        bring_up(STATIC, TARGET, link_delay=2, deadline=10, rtnetlink=fake.open)
    assert str(error.value) == (f"a route to {TARGET}: not done within the 10 s network deadline "
                                "(Network is unreachable)")
    assert clock.now - start == pytest.approx(10)


def test_bring_up_waits_for_the_route_to_appear(mocker: Any, clock: Clock) -> None:
    fake = FakeNetlink(mocker, route_after=4)
    bring_up(STATIC, TARGET, link_delay=0, deadline=10, rtnetlink=fake.open)
    assert fake.polls_route == 5


def test_bring_up_names_the_step_the_kernel_refused(mocker: Any, clock: Clock) -> None:
    fake = FakeNetlink(mocker)
    fake.ipr.addr.side_effect = NetlinkError(13, "Permission denied")
    with pytest.raises(KdumpError, match="^adding 192.168.177.10/24 to eth0: Permission denied$"):
        bring_up(STATIC, TARGET, link_delay=0, deadline=10, rtnetlink=fake.open)


def test_bring_up_dhcp_configures_the_lease(mocker: Any, clock: Clock, tmp_path: Path) -> None:
    fake = FakeNetlink(mocker)
    obtain = mocker.Mock(return_value=dhcp.Addressing(addresses=("192.168.177.57/24",),
                                                         gateway="192.168.177.1", dns=("192.168.177.53",)))
    resolv = tmp_path / "resolv.conf"
    note = bring_up(plan(interface="eth0", dhcp=True, hostname="crashed"), TARGET, link_delay=0,
                    deadline=30, resolv_conf=str(resolv), rtnetlink=fake.open, lease=obtain)
    assert obtain.call_args.args[0] == "eth0" and obtain.call_args.args[2] == "crashed"
    assert ("addr", ("replace",), {"index": 3, "address": "192.168.177.57", "prefixlen": 24,
                                   "broadcast": "192.168.177.255"}) in fake.requests()
    assert note == f"eth0 ({MAC}) 192.168.177.57/24 via DHCP, route to {TARGET} dev eth0"
    assert resolv.read_text() == "# written by kdump-agent\nnameserver 192.168.177.53\n"


def test_bring_up_dhcp_keeps_the_plan_dns_when_the_lease_has_none(
        mocker: Any, clock: Clock, tmp_path: Path) -> None:
    fake = FakeNetlink(mocker)
    leased = dhcp.Addressing(addresses=("192.168.177.57/24",), gateway=None, dns=())
    obtain = mocker.Mock(return_value=leased)
    resolv = tmp_path / "resolv.conf"
    bring_up(plan(interface="eth0", dhcp=True, dns=("10.0.0.53",)), TARGET, link_delay=0, deadline=30,
             resolv_conf=str(resolv), rtnetlink=fake.open, lease=obtain)
    assert resolv.read_text().splitlines()[1:] == ["nameserver 10.0.0.53"]


def test_bring_up_leaves_resolv_conf_alone_unless_asked(mocker: Any, clock: Clock, tmp_path: Path) -> None:
    fake = FakeNetlink(mocker)
    writes = mocker.patch.object(bringup, "write_resolv_conf")
    bring_up(replace(STATIC, dns=("10.0.0.53",)), TARGET, link_delay=0, deadline=10, rtnetlink=fake.open)
    writes.assert_not_called()


def test_bring_up_names_the_gateway_the_route_goes_through(mocker: Any, clock: Clock) -> None:
    fake = FakeNetlink(mocker)
    fake.routes.append(Msg(RTA_OIF=3, RTA_GATEWAY="192.168.177.254", proto=0))
    note = bring_up(STATIC, "10.9.9.9", link_delay=0, deadline=10, rtnetlink=fake.open)
    assert note.endswith("route to 10.9.9.9 via 192.168.177.254 dev eth0")


def test_bring_up_wants_an_address_not_a_name(mocker: Any, clock: Clock) -> None:
    fake = FakeNetlink(mocker)
    with pytest.raises(KdumpError, match="target address: 'dumps.example' is not an IP address"):
        bring_up(STATIC, "dumps.example", link_delay=0, deadline=10, rtnetlink=fake.open)


def test_wait_for_route_polls_until_the_kernel_routes_the_target(mocker: Any, clock: Clock) -> None:
    fake = FakeNetlink(mocker, route_after=2)
    fake.up_index = 3
    note = bringup.wait_for_route(TARGET, 10, rtnetlink=fake.open)
    assert (note, fake.polls_route) == (f", route to {TARGET} dev eth0", 3)


def test_pyroute2_is_not_imported_until_a_socket_is_opened() -> None:
    """A fresh interpreter: local captures and the host commands must not pay for pyroute2."""
    probe = ("import sys, kdump_agent.cli, kdump_agent.capture, kdump_agent.host.netpack, "
             "kdump_agent.network.bringup, kdump_agent.network.record; print('pyroute2' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": str(AGENT)})
    assert result.stdout.strip() == "False"


def test_only_the_parts_of_pyroute2_we_use_are_imported_and_they_work() -> None:
    """A fresh interpreter: its package __init__ (the whole library: NDB, sqlite3, IPDB,
    nl80211...) is not run, and what the bring-up uses still talks to the kernel."""
    probe = ("import sys\n"
             "from kdump_agent.network import rtnetlink\n"
             "rtnetlink.import_pyroute2()\n"
             "from pyroute2.dhcp.client import AsyncDHCPClient\n"
             "with rtnetlink.open_rtnetlink() as ipr:\n"
             "    names = [link.get_attr('IFLA_IFNAME') for link in ipr.get_links()]\n"
             "print('lo' in names, ' '.join(sorted(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": str(AGENT)})
    found_lo, *loaded = result.stdout.split()
    assert found_lo == "True"
    assert "pyroute2.iproute" in loaded and "pyroute2.dhcp.client" in loaded
    unused = ("pyroute2.ndb", "pyroute2.ipdb", "pyroute2.nl80211", "pyroute2.conntrack", "sqlite3")
    assert not [name for name in loaded if name.startswith(unused)]


# --- the host's record --------------------------------------------------------------------


def address(cidr: str, *, permanent: bool = True, scope: int = 0) -> Msg:
    ip, prefix = cidr.split("/")
    flags = rtnetlink.IFA_F_PERMANENT if permanent else 0
    return Msg(IFA_LOCAL=ip, IFA_ADDRESS=ip, prefixlen=int(prefix), flags=flags, IFA_FLAGS=flags, scope=scope)


@pytest.fixture
def resolv_conf(tmp_path: Path) -> str:
    path = tmp_path / "resolv.conf"
    path.write_text("search example\nnameserver 127.0.0.53\nnameserver 10.0.0.53\nnameserver fd00::53\n"
                    "nameserver 10.0.0.54\n")
    return str(path)


def host(mocker: Any, *, permanent: bool = True, proto: int = 4) -> FakeNetlink:
    fake = FakeNetlink(mocker, links=[ether(2, "ens3", "52:54:00:AA:BB:CC")])
    fake.addresses += [address("10.0.0.9/24", permanent=permanent),
                       address("10.0.0.5/24", permanent=permanent), address("127.1.1.1/8", scope=254)]
    fake.routes += [Msg(RTA_OIF=2, RTA_GATEWAY="10.0.0.1", RTA_PREFSRC="10.0.0.5", proto=0),
                    Msg(RTA_OIF=2, RTA_DST=None, RTA_GATEWAY="10.0.0.1", proto=proto)]
    return fake


def recorded(fake: FakeNetlink, resolv_conf: str, target: str = "192.0.2.7") -> HostRecord:
    return record_host_route("dumps.example", target, resolv_conf=resolv_conf, rtnetlink=fake.open)


def test_record_round_trip_gives_the_host_interface_plan(mocker: Any, resolv_conf: str) -> None:
    record = recorded(host(mocker), resolv_conf)
    assert (record.host, record.target) == ("dumps.example", "192.0.2.7")
    assert record.addresses == ("10.0.0.5/24", "10.0.0.9/24")  # the route's source first
    assert HostRecord.from_json(record.as_json()) == record
    assert record.plan() == NetworkPlan(interface="ens3", mac="52:54:00:aa:bb:cc", dhcp=False,
                                        addresses=("10.0.0.5/24", "10.0.0.9/24"), gateway="10.0.0.1",
                                        dns=("10.0.0.53", "10.0.0.54"), hostname=record.hostname, mtu=1500)


def test_record_guesses_dhcp_from_an_address_with_a_lifetime(mocker: Any, resolv_conf: str) -> None:
    found = recorded(host(mocker, permanent=False), resolv_conf).plan()
    assert found.dhcp and found.addresses == ()  # the server hands out the address


def test_record_refuses_a_static_nic_without_an_address(mocker: Any, resolv_conf: str) -> None:
    fake = host(mocker)
    fake.addresses.clear()
    with pytest.raises(KdumpError, match="ens3 routes to 192.0.2.7 but has no IPv4 address"):
        recorded(fake, resolv_conf)


def test_record_guesses_dhcp_from_a_route_of_protocol_dhcp(mocker: Any, resolv_conf: str) -> None:
    assert recorded(host(mocker, proto=rtnetlink.RTPROT_DHCP), resolv_conf).dhcp


def test_record_refuses_a_target_on_this_host(mocker: Any, resolv_conf: str) -> None:
    loopback = Msg(index=1, ifi_type=772, IFLA_IFNAME="lo", IFLA_ADDRESS="00:00:00:00:00:00")
    fake = FakeNetlink(mocker, links=[loopback])
    fake.routes.append(Msg(RTA_OIF=1, proto=0))
    with pytest.raises(KdumpError, match="leaves through lo, which is not an Ethernet NIC"):
        recorded(fake, resolv_conf, "127.0.0.1")


def test_record_without_a_route_says_so(mocker: Any, resolv_conf: str) -> None:
    fake = FakeNetlink(mocker, route_after=None)
    with pytest.raises(KdumpError, match="this host has no route to 192.0.2.7: Network is unreachable"):
        recorded(fake, resolv_conf)


def test_record_without_resolv_conf_has_no_dns(mocker: Any, tmp_path: Path) -> None:
    assert recorded(host(mocker), str(tmp_path / "missing")).dns == ()


# network.json exactly as mkinitrd wrote it before HostRecord existed: images built then are read.
EARLIER_NETWORK_JSON = """{
  "target": "192.0.2.9",
  "interface": "ens3",
  "mac": "52:54:00:aa:bb:cc",
  "mtu": 1500,
  "addresses": [
    "10.0.0.5/24"
  ],
  "gateway": "10.0.0.1",
  "dns": [
    "10.0.0.53"
  ],
  "dhcp": false,
  "hostname": "crashed",
  "host": "filer.example"
}
"""


def test_record_reads_and_writes_network_json_as_earlier_versions_did() -> None:
    record = HostRecord.from_json(EARLIER_NETWORK_JSON)
    assert record == HostRecord(host="filer.example", target="192.0.2.9", interface="ens3",
                                mac="52:54:00:aa:bb:cc", mtu=1500, addresses=("10.0.0.5/24",),
                                gateway="10.0.0.1", dns=("10.0.0.53",), dhcp=False, hostname="crashed")
    assert record.as_json() == EARLIER_NETWORK_JSON


def test_record_lends_its_address_only_for_its_own_server() -> None:
    record = HostRecord.from_json(EARLIER_NETWORK_JSON)
    assert record.address_for("filer.example") == "192.0.2.9"
    assert record.address_for("other.example") is None


GOOD_RECORD = {"host": "filer.example", "target": "192.0.2.9", "interface": "ens3",
               "mac": "52:54:00:aa:bb:cc", "dhcp": False, "addresses": ["10.0.0.5/24"], "gateway": "10.0.0.1",
               "dns": [], "hostname": None, "mtu": None}


@pytest.mark.parametrize("change, reason", [
    ({"mac": "52:54:00"}, "not a MAC address"),
    ({"interface": None}, "interface should be str"),
    ({"dhcp": "yes"}, "dhcp should be bool"),
    ({"addresses": ["10.0.0.5"] * 0}, "static, but no addresses"),
    ({"addresses": ["fd00::5/64"]}, "is IPv6, but the record has no ipv6 method"),
    ({"addresses": ["10.0.0.5/33"]}, "not an IPv4 or IPv6 CIDR"),
    ({"gateway": "router"}, "not an IP address"),
    ({"mtu": True}, "mtu should be int"),
    ({"host": 7}, "host should be str"),
    ({"target": "filer.example"}, "target: 'filer.example' is not an IP address"),
], ids=str)
def test_record_from_json_rejects_a_damaged_record(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(KdumpError, match=f"^network record: .*{reason}"):
        HostRecord.from_json(json.dumps({**GOOD_RECORD, **change}))


def test_record_from_json_rejects_missing_fields_and_non_json() -> None:
    for key in ("mac", "host", "target"):
        with pytest.raises(KdumpError, match=f"network record: {key} is missing"):
            HostRecord.from_json(json.dumps({k: v for k, v in GOOD_RECORD.items() if k != key}))
    with pytest.raises(KdumpError, match="network record: not JSON"):
        HostRecord.from_json("{")
    with pytest.raises(KdumpError, match="network record: expected a JSON object"):
        HostRecord.from_json("[]")


# --- choose_plan ------------------------------------------------------------------------


RECORDED = HostRecord.from_json(json.dumps({**GOOD_RECORD, "dhcp": True, "addresses": []})).plan()


def test_choose_plan_prefers_the_command_line() -> None:
    chosen = choose_plan(parse_cmdline("ip=10.1.1.5::10.1.1.1:24::eth5:none"), RECORDED)
    assert chosen == plan(interface="eth5", addresses=("10.1.1.5/24",), gateway="10.1.1.1")


def test_choose_plan_falls_back_to_the_record() -> None:
    assert choose_plan(parse_cmdline("console=ttyS0 irqpoll"), RECORDED) == RECORDED


def test_choose_plan_without_either_has_no_plan() -> None:
    assert choose_plan(parse_cmdline("console=ttyS0"), None) is None


def test_choose_plan_lends_the_recorded_nic_to_ip_dhcp() -> None:
    chosen = choose_plan(parse_cmdline("ip=dhcp"), RECORDED)
    assert chosen == plan(interface="ens3", mac="52:54:00:aa:bb:cc", dhcp=True)


def test_choose_plan_lends_the_mac_when_both_name_the_same_interface() -> None:
    chosen = choose_plan(parse_cmdline("ip=ens3:dhcp"), RECORDED)
    assert chosen == plan(interface="ens3", mac="52:54:00:aa:bb:cc", dhcp=True)


def test_choose_plan_lends_nothing_to_another_interface() -> None:
    assert choose_plan(parse_cmdline("ip=eth1:dhcp"), RECORDED) == plan(interface="eth1", dhcp=True)


def test_choose_plan_keeps_the_command_line_mac() -> None:
    chosen = choose_plan(parse_cmdline(f"ip=dhcp ifname=net0:{MAC}"), RECORDED)
    assert chosen == plan(interface="net0", mac=MAC, dhcp=True)
