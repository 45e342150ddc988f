"""bring_up of bonds, VLANs, bridges and IPv6 against a fake kernel: the order of its netlink
requests and sysfs writes, the IPv6 waits (DAD, SLAAC, DHCPv6) and their overruns.

This host's kernel has no bonding and no 8021q, so the real-kernel proof of those is the
QEMU cases; these tests pin down what the bring-up asks the kernel, in which order.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from kdump_agent.errors import KdumpError
from kdump_agent.network import bringup, dhcp, ipv6, poll, rtnetlink
from kdump_agent.network.bringup import bring_up
from kdump_agent.network.cmdline import parse_cmdline
from kdump_agent.network.plan import NetworkPlan, VirtualLink

MAC3, MAC4 = "52:54:00:00:00:03", "52:54:00:00:00:04"
TARGET = "192.168.177.1"
TARGET6 = "fd00::1"


class Msg(dict[str, Any]):
    """Stands in for a pyroute2 message: fields and attributes both answer .get()."""


class FakeKernel:
    """Links, addresses and routes behind a MagicMock IPRoute (`ipr.mock_calls` keeps the order).

    Virtual links are created by link("add"), with their sysfs and /proc/sys directories
    under `root`. A link is UP once set up, when it has members only if one of them is
    (bond and bridge carrier follow their members'). IPv6 addresses added are tentative for
    `dad_polls` polls; after the top is up it has a link-local address at once and, when
    `slaac` is set, that global address after `ra_polls` polls.
    """

    def __init__(self, mocker: Any, root: Path, *, nics: tuple[tuple[str, str], ...] = (("eth0", MAC3),
                                                                                       ("eth1", MAC4)),
                 dad_polls: int = 2, slaac: str | None = None, ra_polls: int = 3, dad_failed: bool = False,
                 carrier: bool = True) -> None:
        self.root = root
        self.links: dict[int, dict[str, Any]] = {}
        self.addresses: dict[int, list[dict[str, Any]]] = {}
        self.dad_polls, self.slaac, self.ra_polls, self.dad_failed = dad_polls, slaac, ra_polls, dad_failed
        self.carrier = carrier
        self.fail_add: dict[str, NetlinkError] = {}
        for name, mac in nics:
            self._new(name, mac, kind=None)
        self.ipr = mocker.MagicMock(name="ipr")
        self.ipr.link.side_effect = self.link
        self.ipr.link_lookup.side_effect = self.link_lookup
        self.ipr.get_links.side_effect = lambda: [Msg(self._message(i)) for i in self.links]
        self.ipr.addr.side_effect = self.addr
        self.ipr.get_addr.side_effect = self.get_addr
        self.ipr.route.side_effect = self.route

    @contextmanager
    def open(self) -> Iterator[Any]:
        yield self.ipr

    def _new(self, name: str, mac: str, kind: str | None, **extra: Any) -> int:
        index = len(self.links) + 2
        self.links[index] = {"name": name, "mac": mac, "kind": kind, "up": False, "master": None, **extra}
        self.addresses[index] = []
        (self.root / "proc/sys/net/ipv6/conf" / name).mkdir(parents=True)
        if kind == "bond":
            (self.root / "sys/class/net" / name / "bonding").mkdir(parents=True, exist_ok=True)
        return index

    def index(self, name: str) -> int:
        return next(i for i, link in self.links.items() if link["name"] == name)

    def _has_carrier(self, index: int) -> bool:
        link = self.links[index]
        if not link["up"]:
            return False
        members = [i for i, other in self.links.items() if other["master"] == index or
                   link["kind"] == "vlan" and i == link["parent"]]
        if not members:
            return self.carrier
        return any(self._has_carrier(member) for member in members)

    def _message(self, index: int) -> dict[str, Any]:
        link = self.links[index]
        up = self._has_carrier(index)
        return {"index": index, "ifi_type": rtnetlink.ARPHRD_ETHER, "flags": 0x11043 if up else 0x1002,
                "IFLA_IFNAME": link["name"], "IFLA_ADDRESS": link["mac"],
                **({"IFLA_LINKINFO": Msg(IFLA_INFO_KIND=link["kind"])} if link["kind"] else {}),
                "IFLA_OPERSTATE": "UP" if up else "DOWN"}

    def link(self, command: str, **spec: Any) -> Any:
        if command == "get":
            return (Msg(self._message(spec["index"])),)
        if command == "add":
            if spec["kind"] in self.fail_add:
                raise self.fail_add[spec["kind"]]
            self._new(spec["ifname"], "52:54:00:ff:00:%02x" % (len(self.links) + 2), spec["kind"],
                      parent=spec.get("link"))
            return ()
        assert command == "set"
        link = self.links[spec["index"]]
        if "state" in spec:
            link["up"] = spec["state"] == "up"
            if link["up"]:
                self.addresses[spec["index"]].append({"address": f"fe80::{spec['index']}", "prefixlen": 64,
                                                      "scope": ipv6.RT_SCOPE_LINK, "polls": 0, "dad": 0})
        if "master" in spec:
            assert not link["up"] or self.links[spec["master"]]["kind"] == "bridge", "enslaved while up"
            link["master"] = spec["master"]
        if "address" in spec:
            link["mac"] = spec["address"]
        return ()

    def link_lookup(self, **spec: Any) -> list[int]:
        ((key, value),) = spec.items()
        field = {"address": "mac", "ifname": "name"}[key]
        return [i for i, link in self.links.items() if link[field].lower() == value.lower()]

    def addr(self, command: str, **spec: Any) -> Any:
        assert command == "replace"
        if ":" in spec["address"]:
            self.addresses[spec["index"]].append({"address": spec["address"], "prefixlen": spec["prefixlen"],
                                                  "scope": 0, "polls": 0, "dad": self.dad_polls})
        return ()

    def get_addr(self, *, index: int, family: int) -> list[Msg]:
        assert family == socket.AF_INET6
        found = []
        if self.slaac and self.links[index]["up"]:
            self.ra_polls -= 1
            if self.ra_polls < 0 and not any(a["address"] == self.slaac for a in self.addresses[index]):
                self.addresses[index].append({"address": self.slaac, "prefixlen": 64, "scope": 0, "polls": 0,
                                              "dad": self.dad_polls})
        for entry in self.addresses[index]:
            entry["polls"] += 1
            flags = rtnetlink.IFA_F_PERMANENT
            if entry["polls"] <= entry["dad"]:
                flags |= ipv6.IFA_F_TENTATIVE
            elif self.dad_failed and entry["scope"] == 0:
                flags |= ipv6.IFA_F_DADFAILED
            found.append(Msg(IFA_ADDRESS=entry["address"], prefixlen=entry["prefixlen"], flags=flags & 0xff,
                             IFA_FLAGS=flags, scope=entry["scope"]))
        return found

    def route(self, command: str, **spec: Any) -> Any:
        if command == "get":
            top = max(i for i, link in self.links.items() if link["up"])
            return (Msg(RTA_OIF=top, RTA_GATEWAY=None),)
        return ()

    def requests(self) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
        """The requests that change something, in order (reads and polls left out)."""
        return [(name, args, kwargs) for name, args, kwargs in self.ipr.mock_calls
                if name in ("link", "addr", "route") and args[0] not in ("get", "dump")]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(mocker: Any) -> Clock:
    fake = Clock()
    for module in (bringup, poll, dhcp):
        mocker.patch.object(module, "time", SimpleNamespace(monotonic=fake.monotonic, sleep=fake.sleep))
    return fake


def from_cmdline(cmdline: str) -> NetworkPlan:
    found = parse_cmdline(cmdline)
    assert found is not None
    return found


def run(kernel: FakeKernel, plan: NetworkPlan, target: str | None = TARGET, *, deadline: float = 30,
        **kwargs: Any) -> str:
    return bring_up(plan, target, link_delay=0, deadline=deadline, rtnetlink=kernel.open,
                    sysfs=kernel.root / "sys", procfs=kernel.root / "proc", **kwargs)


def leased(*addresses: str, dns: tuple[str, ...] = ()) -> Any:
    return lambda *args: dhcp.Addressing(addresses=addresses, gateway=None, dns=dns)


# --- bonds --------------------------------------------------------------------------------


def test_bond_options_are_written_mode_first_and_before_any_slave(
        mocker: Any, clock: Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    kernel = FakeKernel(mocker, tmp_path, nics=(("ens3", MAC3), ("ens4", MAC4)))
    plan = from_cmdline("bond=bond0:eth0,eth1:miimon=100,primary=eth1,fail_over_mac=active,mode=1,"
                        f"arp_ip_target=10.0.0.1;10.0.0.2 ip=bond0:dhcp ifname=eth0:{MAC3} "
                        f"ifname=eth1:{MAC4}")
    caplog.set_level(logging.INFO, logger="kdump-agent")
    note = run(kernel, plan, lease=leased("10.0.0.5/24"))
    steps = [record.getMessage().removeprefix("network: ") for record in caplog.records]
    writes = [step for step in steps if step.startswith("bond0: ")]
    assert writes == ["bond0: mode = active-backup", "bond0: miimon = 100", "bond0: primary = ens4",
                      "bond0: fail_over_mac = active", "bond0: arp_ip_target = +10.0.0.1",
                      "bond0: arp_ip_target = +10.0.0.2"]
    assert steps.index(writes[-1]) < steps.index("enslaving ens3 to bond0")
    bonding = tmp_path / "sys/class/net/bond0/bonding"
    assert (bonding / "primary").read_text() == "ens4\n"  # the capture kernel's name for eth1
    bond = kernel.index("bond0")
    assert kernel.requests() == [
        ("link", ("add",), {"ifname": "bond0", "kind": "bond"}),
        ("link", ("set",), {"index": 2, "state": "down"}),
        ("link", ("set",), {"index": 2, "master": bond}),
        ("link", ("set",), {"index": 3, "state": "down"}),
        ("link", ("set",), {"index": 3, "master": bond}),
        ("link", ("set",), {"index": 2, "state": "up"}),
        ("link", ("set",), {"index": 3, "state": "up"}),
        ("link", ("set",), {"index": bond, "state": "up"}),
        ("addr", ("replace",), {"index": bond, "address": "10.0.0.5", "prefixlen": 24,
                                "broadcast": "10.0.0.255"}),
    ]
    assert note.startswith("bond0 (active-backup: ens3, ens4), up in ")
    assert note.endswith(f" 10.0.0.5/24 via DHCP, route to {TARGET} dev bond0")


def test_bond_takes_the_recorded_mac_before_its_slaves(mocker: Any, clock: Clock, tmp_path: Path) -> None:
    kernel = FakeKernel(mocker, tmp_path)
    bond = VirtualLink(kind="bond", name="bond0", members=("eth0", "eth1"), options=(("mode", "802.3ad"),),
                       mac="52:54:00:aa:bb:cc", mtu=9000)
    plan = from_cmdline("ip=bond0:dhcp bond=bond0:eth0,eth1")
    run(kernel, NetworkPlan(**{**plan.__dict__, "links": (bond,)}), lease=leased("10.0.0.5/24"))
    names = [(args, tuple(kwargs)) for _, args, kwargs in kernel.requests()]
    assert names[1:3] == [(("set",), ("index", "address")), (("set",), ("index", "state"))]
    assert ("link", ("set",), {"index": kernel.index("bond0"), "mtu": 9000}) in kernel.requests()
    assert kernel.links[kernel.index("bond0")]["mac"] == "52:54:00:aa:bb:cc"


def test_a_bond0_the_driver_made_at_boot_is_used(mocker: Any, clock: Clock, tmp_path: Path) -> None:
    kernel = FakeKernel(mocker, tmp_path)
    kernel._new("bond0", "00:00:00:00:00:00", kind="bond")
    kernel.fail_add["bond"] = NetlinkError(errno.EEXIST, "File exists")
    note = run(kernel, from_cmdline("bond=bond0:eth0,eth1:mode=1 ip=bond0:dhcp"), lease=leased("10.0.0.5/24"))
    assert note.startswith("bond0 (active-backup: eth0, eth1)")


def test_a_missing_bonding_module_is_named(mocker: Any, clock: Clock, tmp_path: Path) -> None:
    kernel = FakeKernel(mocker, tmp_path)
    kernel.fail_add["bond"] = NetlinkError(errno.EOPNOTSUPP, "Operation not supported")
    with pytest.raises(KdumpError, match="^creating bond bond0: Operation not supported: the bonding module "
                                         "is not in the image"):
        run(kernel, from_cmdline("bond ip=bond0:dhcp"))


def test_a_bond_option_the_kernel_refuses_is_named(mocker: Any, clock: Clock, tmp_path: Path) -> None:
    kernel = FakeKernel(mocker, tmp_path)
    # lacp_rate a directory: the write fails as the kernel's refusal would
    refused = tmp_path / "sys/class/net/bond0/bonding"
    kernel.ipr.link.side_effect = lambda command, **spec: (
        (refused / "lacp_rate").mkdir(parents=True) if command == "add" else None,
        kernel.link(command, **spec))[1]
    with pytest.raises(KdumpError, match="^bond bond0: setting lacp_rate to fast .*the kernel log says why$"):
        run(kernel, from_cmdline("bond=bond0:eth0,eth1:mode=4,lacp_rate=fast ip=bond0:dhcp"))


def test_bond_without_carrier_names_its_members_states(mocker: Any, clock: Clock, tmp_path: Path) -> None:
    kernel = FakeKernel(mocker, tmp_path, carrier=False)
    start = clock.now
    with pytest.raises(KdumpError) as error:
        run(kernel, from_cmdline("bond=bond0:eth0,eth1:mode=1 ip=bond0:dhcp"), deadline=8)
    assert str(error.value) == ("carrier on bond0: not done within the 8 s network deadline (operstate DOWN, "
                                "no carrier; eth0 operstate DOWN, no carrier; eth1 operstate DOWN, "
                                "no carrier)")
    assert clock.now - start == pytest.approx(8)


# --- VLANs and bridges --------------------------------------------------------------------


def test_a_vlan_on_a_bond_is_created_on_the_bond_after_it(mocker: Any, clock: Clock, tmp_path: Path) -> None:
    kernel = FakeKernel(mocker, tmp_path)
    note = run(kernel, from_cmdline("bond=bond0:eth0,eth1:mode=1 vlan=bond0.10:bond0 ip=bond0.10:dhcp"),
               lease=leased("10.0.0.5/24"))
    bond, vlan = kernel.index("bond0"), kernel.index("bond0.10")
    made = [(args, kwargs) for name, args, kwargs in kernel.requests() if name == "link"]
    assert made.index((("add",), {"ifname": "bond0.10", "kind": "vlan", "link": bond, "vlan_id": 10})) > \
        made.index((("set",), {"index": 3, "master": bond}))
    assert made[-2:] == [(("set",), {"index": bond, "state": "up"}), (("set",), {"index": vlan,
                                                                                 "state": "up"})]
    assert note.startswith("bond0 (active-backup: eth0, eth1) > bond0.10 (VLAN 10), up in ")


def test_a_bridge_comes_up_with_stp_off_and_says_the_host_had_it_on(
        mocker: Any, clock: Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    kernel = FakeKernel(mocker, tmp_path)
    bridge = VirtualLink(kind="bridge", name="br0", members=("eth0",),
                         options=(("stp_state", "1"), ("forward_delay", "1500")))
    plan = NetworkPlan(interface="br0", mac=None, dhcp=False, addresses=("10.0.0.5/24",), gateway=None,
                       dns=(),
                       hostname=None, links=(bridge,))
    note = run(kernel, plan)
    assert kernel.requests()[:2] == [
        ("link", ("add",), {"ifname": "br0", "kind": "bridge", "br_stp_state": 0, "br_forward_delay": 0}),
        ("link", ("set",), {"index": 2, "master": kernel.index("br0")}),
    ]
    assert note.startswith("br0 (bridge: eth0; STP off, the host had it on), up in ")
    assert "STP is off on br0 in the capture kernel (the host had it on)" in caplog.text


def test_the_link_delay_still_follows_carrier_on_a_bridge(mocker: Any, clock: Clock, tmp_path: Path) -> None:
    kernel = FakeKernel(mocker, tmp_path)
    plan = from_cmdline("bridge=br0:eth0 ip=10.0.0.5:::24::br0:none")
    with pytest.raises(KdumpError, match="link_delay 40 s does not fit"):
        bring_up(plan, TARGET, link_delay=40, deadline=30, rtnetlink=kernel.open, sysfs=tmp_path / "sys",
                 procfs=tmp_path / "proc")


# --- IPv6 ---------------------------------------------------------------------------------


def test_static_ipv6_waits_for_dad_then_routes_via_the_gateway(mocker: Any, clock: Clock,
                                                               tmp_path: Path) -> None:
    kernel = FakeKernel(mocker, tmp_path, dad_polls=5)
    start = clock.now
    note = run(kernel, from_cmdline("ip=[fd00::5]::[fe80::1]:64::eth0:none"), TARGET6)
    assert kernel.requests()[-2:] == [
        ("addr", ("replace",), {"index": 2, "address": "fd00::5", "prefixlen": 64}),
        ("route", ("replace",), {"dst": "::/0", "gateway": "fe80::1", "oif": 2, "family": socket.AF_INET6}),
    ]
    assert clock.now - start == pytest.approx(5 * poll.POLL_SECONDS)  # the address was tentative
    assert note == f"eth0 ({MAC3}) fd00::5/64 static, route to {TARGET6} dev eth0"
    assert (tmp_path / "proc/sys/net/ipv6/conf/eth0/disable_ipv6").read_text() == "0\n"


def test_a_duplicate_ipv6_address_is_named(mocker: Any, clock: Clock, tmp_path: Path) -> None:
    kernel = FakeKernel(mocker, tmp_path, dad_failed=True)
    with pytest.raises(KdumpError, match="^fd00::5 on eth0: duplicate address detection failed"):
        run(kernel, from_cmdline("ip=[fd00::5]::[fd00::1]:64::eth0:none"), TARGET6)


def test_dad_that_never_ends_overruns_naming_the_address(mocker: Any, clock: Clock, tmp_path: Path) -> None:
    kernel = FakeKernel(mocker, tmp_path, dad_polls=10**6)
    with pytest.raises(KdumpError) as error:
        run(kernel, from_cmdline("ip=[fd00::5]::[fd00::1]:64::eth0:none"), TARGET6, deadline=3)
    assert str(error.value) == "DAD for fd00::5 on eth0: not done within the 3 s network deadline (tentative)"


def test_slaac_turns_on_router_advertisements_before_the_link_is_up(
        mocker: Any, clock: Clock, tmp_path: Path) -> None:
    kernel = FakeKernel(mocker, tmp_path, slaac="fd00::5054:ff:fe00:3")
    conf = tmp_path / "proc/sys/net/ipv6/conf/eth0"
    kernel.ipr.link.side_effect = lambda command, **spec: (
        assert_switched(conf) if spec.get("state") == "up" else None, kernel.link(command, **spec))[1]
    note = run(kernel, from_cmdline("ip=eth0:auto6"), TARGET6)
    assert note == f"eth0 ({MAC3}) fd00::5054:ff:fe00:3/64 SLAAC, route to {TARGET6} dev eth0"


def assert_switched(conf: Path) -> None:
    assert {name: (conf / name).read_text() for name in ("accept_ra", "autoconf", "forwarding")} == {
        "accept_ra": "1\n", "autoconf": "1\n", "forwarding": "0\n"}


def test_slaac_without_a_router_overruns_saying_so(mocker: Any, clock: Clock, tmp_path: Path) -> None:
    kernel = FakeKernel(mocker, tmp_path)
    with pytest.raises(KdumpError) as error:
        run(kernel, from_cmdline("ip=eth0:auto6"), TARGET6, deadline=4)
    assert str(error.value) == ("a SLAAC address on eth0 (router advertisement): not done within the 4 s "
                                "network deadline (no router advertisement with an autonomous prefix yet)")


def test_ipv6_off_in_the_kernel_is_said(mocker: Any, clock: Clock, tmp_path: Path) -> None:
    kernel = FakeKernel(mocker, tmp_path)
    with pytest.raises(KdumpError, match=r"without IPv6 \(ipv6.disable=1"):
        bring_up(from_cmdline("ip=eth0:auto6"), TARGET6, link_delay=0, deadline=5, rtnetlink=kernel.open,
                 sysfs=tmp_path / "sys", procfs=tmp_path / "elsewhere")


def test_dhcp6_starts_after_link_local_dad_and_adds_the_lease(
        mocker: Any, clock: Clock, tmp_path: Path) -> None:
    kernel = FakeKernel(mocker, tmp_path)
    seen: list[Any] = []

    def lease6(interface: str, budget: dhcp.Budget, mac: str, hostname: str | None) -> dhcp.Addressing:
        seen.append((interface, mac, hostname, kernel.get_addr(index=2,
                                                               family=socket.AF_INET6)[0]["IFA_FLAGS"]))
        return dhcp.Addressing(addresses=("fd00::1:57/128",), gateway=None, dns=("fd00::53",))

    resolv = tmp_path / "resolv.conf"
    note = run(kernel, from_cmdline("ip=::::crashed:eth0:dhcp6"), TARGET6, lease6=lease6,
               resolv_conf=str(resolv))
    assert seen == [("eth0", MAC3, "crashed", rtnetlink.IFA_F_PERMANENT)]  # link-local no longer tentative
    assert ("addr", ("replace",), {"index": 2, "address": "fd00::1:57",
                                   "prefixlen": 128}) in kernel.requests()
    assert note == f"eth0 ({MAC3}) fd00::1:57/128 via DHCPv6, route to {TARGET6} dev eth0"
    assert resolv.read_text().splitlines()[1:] == ["nameserver fd00::53"]
    assert (tmp_path / "proc/sys/net/ipv6/conf/eth0/accept_ra").read_text() == "1\n"


def test_dual_stack_configures_both_and_keeps_v4_dns_first(mocker: Any, clock: Clock, tmp_path: Path) -> None:
    kernel = FakeKernel(mocker, tmp_path, slaac="fd00::5")
    resolv = tmp_path / "resolv.conf"
    note = run(kernel, from_cmdline("bridge=br0:eth0 ip=br0:dhcp ip=br0:auto6 nameserver=fd00::53"),
               lease=leased("10.0.0.5/24", dns=("10.0.0.53",)), resolv_conf=str(resolv))
    assert note.endswith(f" 10.0.0.5/24 via DHCP, fd00::5/64 SLAAC, route to {TARGET} dev br0")
    assert resolv.read_text().splitlines()[1:] == ["nameserver 10.0.0.53"]


def test_a_v4_only_plan_touches_nothing_of_ipv6(mocker: Any, clock: Clock, tmp_path: Path) -> None:
    kernel = FakeKernel(mocker, tmp_path)
    run(kernel, from_cmdline("ip=eth0:dhcp"), lease=leased("10.0.0.5/24"))
    assert not kernel.ipr.get_addr.called
    assert list((tmp_path / "proc/sys/net/ipv6/conf/eth0").iterdir()) == []


def test_the_route_wait_takes_an_ipv6_target(mocker: Any, clock: Clock, tmp_path: Path) -> None:
    kernel = FakeKernel(mocker, tmp_path)
    kernel.links[2]["up"] = True
    assert bringup.wait_for_route("FD00:0::1", 5, rtnetlink=kernel.open) == ", route to fd00::1 dev eth0"
    assert kernel.ipr.route.call_args == mocker.call("get", dst="fd00::1")
