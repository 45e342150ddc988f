"""The stack of links under the host's route to the server, read from netlink, for the record.

`walk` starts at the link the route leaves through and goes down: a bond to its slaves
(the links whose IFLA_MASTER is the bond), a VLAN to its parent (IFLA_LINK), a bridge to
its ports, until it reaches physical NICs: ARPHRD_ETHER links with no link kind. The
result is what the capture kernel is to build (network.plan's VirtualLinks, bottom first)
and the NICs' permanent MACs, by which the capture kernel finds them whatever it calls them.

Anything else on the way (team, macvlan, vxlan, tun, ipvlan, wireguard, InfiniBand, an
802.1ad VLAN, a bridge filtering VLANs) is refused here, at mkinitrd, with the device and
its kind named, not discovered after a crash. A bridge's ports that are none of NIC, bond
or VLAN (a virtualisation host's tap/vnet ports, veth) are left out with a log line: they
lead to guests, not to the server; a bridge left with no port is refused.

`stand_in_nics` names links to count as physical NICs whatever their kind. Production
passes none; a test on a host without spare NICs lets a veth stand in for one, by name,
so that other veths in the same test are still treated as the non-NICs they are.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from ..errors import KdumpError
from .bondopts import bond_options
from .plan import VirtualLink
from .rtnetlink import ARPHRD_ETHER, link_info

log = logging.getLogger("kdump-agent")

ARPHRD_INFINIBAND = 32  # linux/if_arp.h
ETH_P_8021AD = 0x88A8  # linux/if_ether.h: an 802.1ad (QinQ) VLAN's protocol
_BUILT = "kdump-agent builds bonds, VLANs and bridges"
_INSTEAD = ("describe the capture kernel's network on its command line (ip=, bond=, vlan=, bridge=) "
            "or reach the server another way")
# Why a kind is refused, where a word more than "a <kind> device" helps.
_REFUSED = {
    "team": f"a team device: {_BUILT}; a bond does what team does (the same modes), or {_INSTEAD}",
    "tun": f"a tun/tap device (a user-space program's end): {_BUILT}; {_INSTEAD}",
    "wireguard": f"a WireGuard tunnel: {_BUILT}; {_INSTEAD}",
}


@dataclass(frozen=True)
class HostLinks:
    """The links under the route: `top` gets the addresses; `links` bottom first; `nic_macs`
    the physical NICs' permanent MACs (empty when `top` is itself the NIC)."""

    top: str
    mac: str
    mtu: int | None
    links: tuple[VirtualLink, ...]
    nic_macs: tuple[tuple[str, str], ...]


def describe(name: str, links: tuple[VirtualLink, ...]) -> str:
    """The stack under link `name` in words: "bond0.10 (VLAN 10 on bond0 (active-backup: ens3, ens4))"."""
    link = next((each for each in links if each.name == name), None)
    if link is None:
        return name
    members = ", ".join(describe(member, links) for member in link.members)
    if link.kind == "vlan":
        return f"{name} (VLAN {link.vlan_id} on {members})"
    if link.kind == "bond":
        return f"{name} ({link.option('mode')}: {members})"
    return f"{name} (bridge: {members})"


def walk(ipr: Any, index: int, target: str, *, stand_in_nics: Collection[str] = ()) -> HostLinks:
    """The stack under link `index`, through which the route to target leaves."""
    walker = _Walker({int(link["index"]): link for link in ipr.get_links()}, target, stand_in_nics)
    top = walker.visit(index)
    message = walker.by_index[index]
    return HostLinks(top=top, mac=_mac(message), mtu=message.get("IFLA_MTU"), links=tuple(walker.links),
                     nic_macs=tuple(walker.nic_macs.items()) if walker.links else ())


class _Walker:
    def __init__(self, by_index: dict[int, Any], target: str, stand_in_nics: Collection[str]) -> None:
        self.by_index = by_index
        self.target = target
        self.stand_in_nics = stand_in_nics
        self.links: list[VirtualLink] = []
        self.nic_macs: dict[str, str] = {}

    def visit(self, index: int) -> str:
        """Record the link at index and everything under it (members before the link); its name."""
        message = self.by_index.get(index)
        if message is None:
            raise KdumpError(f"the route to {self.target} goes through link {index}, which the kernel does "
                             f"not list (in another network namespace?)")
        name = str(message.get("IFLA_IFNAME"))
        kind, data = link_info(message)
        if self._is_nic(name, kind, message):
            self.nic_macs[name] = _permanent_mac(message)
            return name
        if name in {link.name for link in self.links}:
            return name
        if kind == "bond":
            link = self._bond(name, index, data)
        elif kind == "vlan":
            link = self._vlan(name, message, data)
        elif kind == "bridge":
            link = self._bridge(name, index, data)
        else:
            raise self._refusal(name, kind, message)
        self.links.append(VirtualLink(kind=link.kind, name=name, members=link.members, options=link.options,
                                      mac=_mac(message), mtu=message.get("IFLA_MTU")))
        return name

    def _is_nic(self, name: str, kind: str | None, message: Any) -> bool:
        return name in self.stand_in_nics or (kind is None and message["ifi_type"] == ARPHRD_ETHER)

    def _refusal(self, name: str, kind: str | None, message: Any) -> KdumpError:
        if kind is None and message["ifi_type"] == ARPHRD_INFINIBAND:
            what = f"an InfiniBand NIC: {_BUILT} over Ethernet NICs; {_INSTEAD}"
        elif kind is None:
            return KdumpError(f"the route to {self.target} leaves through {name}, which is not an Ethernet "
                              f"NIC (link type {message['ifi_type']})")
        else:
            what = _REFUSED.get(kind, f"a {kind} device: {_BUILT}; {_INSTEAD}")
        return KdumpError(f"the route to {self.target} goes through {name}, {what}")

    def _slaves(self, index: int) -> list[int]:
        return sorted(i for i, link in self.by_index.items() if link.get("IFLA_MASTER") == index)

    def _bond(self, name: str, index: int, data: Any) -> VirtualLink:
        slaves = [self.visit(slave) for slave in self._slaves(index)]
        if not slaves:
            raise KdumpError(f"bond {name} (on the way to {self.target}) has no slaves")
        options = bond_options(name, data, lambda i: str(self.by_index[i].get("IFLA_IFNAME"))
                               if i in self.by_index else str(i))
        return VirtualLink(kind="bond", name=name, members=tuple(slaves), options=options)

    def _vlan(self, name: str, message: Any, data: Any) -> VirtualLink:
        protocol = data.get("IFLA_VLAN_PROTOCOL") if data is not None else None
        if protocol is not None and int(protocol) == ETH_P_8021AD:
            raise KdumpError(f"the route to {self.target} goes through {name}, an 802.1ad (QinQ) VLAN: "
                             f"kdump-agent builds 802.1Q VLANs only; {_INSTEAD}")
        vlan_id = data.get("IFLA_VLAN_ID") if data is not None else None
        parent = message.get("IFLA_LINK")
        if vlan_id is None or not parent:
            raise KdumpError(f"VLAN {name}: the kernel reports no VLAN id or parent link")
        return VirtualLink(kind="vlan", name=name, members=(self.visit(int(parent)),),
                           options=(("id", str(int(vlan_id))),))

    def _bridge(self, name: str, index: int, data: Any) -> VirtualLink:
        """A bridge and the ports that lead somewhere we build. STP state and forward delay
        (centiseconds, the unit of the sysfs file and of the kernel's clock_t) are recorded so
        the capture kernel builds the bridge as the host had it."""
        if data is not None and data.get("IFLA_BR_VLAN_FILTERING"):
            raise KdumpError(f"the route to {self.target} goes through bridge {name}, which filters VLANs "
                             f"(vlan_filtering 1): kdump-agent does not record per-port VLANs; {_INSTEAD}")
        ports = []
        for port in self._slaves(index):
            message = self.by_index[port]
            port_name = str(message.get("IFLA_IFNAME"))
            kind, _ = link_info(message)
            if self._is_nic(port_name, kind, message) or kind in ("bond", "vlan"):
                ports.append(self.visit(port))
            else:
                log.info("network record: leaving out %s's port %s (%s): it leads to no server",
                         name, port_name, kind or f"link type {message['ifi_type']}")
        if not ports:
            raise KdumpError(f"bridge {name} (on the way to {self.target}) has no port kdump-agent can build "
                             f"(a NIC, a bond or a VLAN)")
        options = []
        if data is not None:
            for attribute, option in (("IFLA_BR_STP_STATE", "stp_state"),
                                      ("IFLA_BR_FORWARD_DELAY", "forward_delay")):
                if data.get(attribute) is not None:
                    options.append((option, str(int(data.get(attribute)))))
        return VirtualLink(kind="bridge", name=name, members=tuple(ports), options=tuple(options))


def _mac(message: Any) -> str:
    return str(message.get("IFLA_ADDRESS")).lower()


def _permanent_mac(message: Any) -> str:
    """The NIC's own MAC: a bond's slaves take the bond's address, so IFLA_ADDRESS of a
    slave is the bond's; IFLA_PERM_ADDRESS (Linux 5.6) or the bond's record of the slave's
    permanent address say what the NIC is called by in the capture kernel."""
    permanent = message.get("IFLA_PERM_ADDRESS")
    if not permanent:
        info = message.get("IFLA_LINKINFO")
        slave = info.get("IFLA_INFO_SLAVE_DATA") if info is not None else None
        permanent = slave.get("IFLA_BOND_SLAVE_PERM_HWADDR") if slave is not None else None
    return str(permanent).lower() if permanent else _mac(message)
