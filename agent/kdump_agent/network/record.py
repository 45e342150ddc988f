"""The host's network record (network.json): written by mkinitrd, read in the capture kernel.

It says how this host reached the dump server when the image was built, for a capture
kernel whose command line has no `ip=`: the links under the route (bonds, VLANs, bridges,
see hostlinks.py), the physical NICs' MACs, the IPv4 and IPv6 addresses, gateways and DNS;
and the server's name with the address it resolved to here, the fallback when DNS fails
in the capture kernel. The JSON keys are those of every image built so far, plus `links`,
`nic_macs`, `ipv6` and `gateway6`, written only when set (a record of one NIC with IPv4
only reads exactly as before); `HostRecord.from_json` is the one place that checks them.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import KdumpError
from .cmdline import MAC
from .hostlinks import describe, walk
from .plan import IPV6_METHODS, LINK_KINDS, NetworkPlan, VirtualLink
from .rtnetlink import (
    IFA_F_PERMANENT,
    RT_SCOPE_UNIVERSE,
    RTPROT_DHCP,
    OpenRtnetlink,
    open_rtnetlink,
    route_to,
)

log = logging.getLogger("kdump-agent")

DEFAULT_RESOLV_CONF = "/etc/resolv.conf"
RECORD_NAME = "network record"

# linux/if_addr.h: IPv6 address flags, and IFA_PROTO's "made by the kernel from an RA".
IFA_F_TEMPORARY = 0x01
IFA_F_DADFAILED = 0x08
IFA_F_DEPRECATED = 0x20
IFA_F_MANAGETEMPADDR = 0x100
IFAPROT_KERNEL_RA = 2
INFINITE_LIFETIME = 0xFFFFFFFF

T = TypeVar("T")

@dataclass(frozen=True)
class HostRecord:
    """How the host reached the server `host` (resolved to `target`) when mkinitrd ran.

    `interface` is the link that holds the addresses (the top of `links`, or the NIC
    itself), `mac` its MAC. `addresses` are its addresses then, IPv4 and IPv6, the route's
    source first; with `dhcp` the capture kernel asks a DHCPv4 server instead of reusing the
    IPv4 ones, and with `ipv6` "auto6" or "dhcp6" it gets its IPv6 ones from the network.
    """

    host: str
    target: str
    interface: str
    mac: str
    mtu: int | None
    addresses: tuple[str, ...]  # CIDR
    gateway: str | None
    dns: tuple[str, ...]
    dhcp: bool
    hostname: str | None
    links: tuple[VirtualLink, ...] = ()
    nic_macs: tuple[tuple[str, str], ...] = ()
    ipv6: str | None = None
    gateway6: str | None = None

    def as_json(self) -> str:
        """network.json's text: the keys in the order every earlier version wrote them, then
        the newer ones, each only when set."""
        data: dict[str, Any] = {
            "target": self.target, "interface": self.interface, "mac": self.mac, "mtu": self.mtu,
            "addresses": list(self.addresses), "gateway": self.gateway, "dns": list(self.dns),
            "dhcp": self.dhcp, "hostname": self.hostname, "host": self.host,
        }
        if self.links:
            data["links"] = [{"kind": link.kind, "name": link.name, "members": list(link.members),
                              "options": dict(link.options), "mac": link.mac, "mtu": link.mtu}
                             for link in self.links]
            data["nic_macs"] = dict(self.nic_macs)
        if self.ipv6:
            data["ipv6"] = self.ipv6
        if self.gateway6:
            data["gateway6"] = self.gateway6
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> HostRecord:
        """The record in network.json's text; a damaged one raises KdumpError saying what is wrong."""
        try:
            data = json.loads(text)
        except ValueError as error:
            raise KdumpError(f"{RECORD_NAME}: not JSON: {error}") from None
        if not isinstance(data, dict):
            raise KdumpError(f"{RECORD_NAME}: expected a JSON object")
        try:
            host = _field(data, "host", str)
            target = _field(data, "target", str)
            interface = _field(data, "interface", str)
            mac = _field(data, "mac", str).lower()
            dhcp = _field(data, "dhcp", bool)
            addresses = _field(data, "addresses", list)
            gateway = _field(data, "gateway", str, optional=True)
            dns = _field(data, "dns", list)
            hostname = _field(data, "hostname", str, optional=True)
            mtu = _field(data, "mtu", int, optional=True)
            nic_macs = _nic_macs(_field(data, "nic_macs", dict, optional=True) or {})
            links = _links(_field(data, "links", list, optional=True) or [], nic_macs)
            ipv6 = _field(data, "ipv6", str, optional=True)
            gateway6 = _field(data, "gateway6", str, optional=True)
        except (KeyError, TypeError) as error:
            raise KdumpError(f"{RECORD_NAME}: {error.args[0]}") from None
        _check_mac(mac, "mac")
        if links and interface not in {link.name for link in links} | set(nic_macs):
            raise KdumpError(f"{RECORD_NAME}: interface {interface!r} is none of the record's links or NICs")
        if ipv6 is not None and ipv6 not in IPV6_METHODS:
            raise KdumpError(f"{RECORD_NAME}: ipv6 {ipv6!r} is not one of {', '.join(IPV6_METHODS)}")
        cidrs = tuple(_cidr_of(cidr, ipv6) for cidr in addresses)
        if not dhcp and not ipv6 and not cidrs:
            raise KdumpError(f"{RECORD_NAME}: static, but no addresses")
        if ipv6 == "static" and not any(":" in cidr for cidr in cidrs):
            raise KdumpError(f"{RECORD_NAME}: ipv6 static, but no IPv6 addresses")
        return cls(
            host=host, target=_address(target, f"{RECORD_NAME}: target"), interface=interface, mac=mac,
            mtu=mtu, addresses=cidrs,
            gateway=_address(gateway, f"{RECORD_NAME}: gateway", 4) if gateway else None,
            dns=tuple(_address(str(server), f"{RECORD_NAME}: dns") for server in dns), dhcp=dhcp,
            hostname=hostname, links=links, nic_macs=nic_macs, ipv6=ipv6,
            gateway6=_address(gateway6, f"{RECORD_NAME}: gateway6", 6) if gateway6 else None,
        )

    def plan(self) -> NetworkPlan:
        """The capture kernel's plan: these links and NICs, the interface's addresses (those
        the network hands out again left out), its gateways and DNS."""
        static = tuple(cidr for cidr in self.addresses
                       if (":" in cidr and self.ipv6 == "static") or (":" not in cidr and not self.dhcp))
        return NetworkPlan(
            interface=self.interface, mac=None if self.links else self.mac, dhcp=self.dhcp,
            addresses=static, gateway=self.gateway, dns=self.dns, hostname=self.hostname, mtu=self.mtu,
            ipv6=self.ipv6, gateway6=self.gateway6 if self.ipv6 == "static" else None,
            links=self.links, nic_macs=self.nic_macs,
        )

    def described(self) -> str:
        """The links in words, for the log: "bond0.10 (VLAN 10 on bond0 (active-backup: ens3, ens4))"."""
        return describe(self.interface, self.links)

    def address_for(self, host: str) -> str | None:
        """host's address as mkinitrd resolved it; None if this record is about another server."""
        return self.target if host == self.host else None


def _field(data: dict[str, Any], key: str, kind: type[T], *, optional: bool = False) -> Any:
    if key not in data or (optional and data[key] is None):
        if optional:
            return None
        raise KeyError(f"{key} is missing")
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{key} should be {kind.__name__}, not {type(value).__name__}")
    return value


def _address(text: str, name: str, version: int | None = None) -> str:
    """text as a normalised IP address (of `version` when given), else KdumpError naming `name`."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise KdumpError(f"{name}: {text!r} is not an IP address") from None
    if version is not None and address.version != version:
        raise KdumpError(f"{name}: {text} is not an IPv{version} address")
    return str(address)


def _cidr_of(cidr: Any, ipv6: str | None) -> str:
    try:
        interface = ipaddress.ip_interface(cidr)
    except (ValueError, TypeError):
        raise KdumpError(f"{RECORD_NAME}: address {cidr!r} is not an IPv4 or IPv6 CIDR") from None
    if "/" not in str(cidr):
        raise KdumpError(f"{RECORD_NAME}: address {cidr!r} has no prefix length")
    if interface.version == 6 and ipv6 is None:
        raise KdumpError(f"{RECORD_NAME}: address {cidr} is IPv6, but the record has no ipv6 method")
    return str(cidr)


def _check_mac(mac: str, what: str) -> None:
    if not MAC.match(mac):
        raise KdumpError(f"{RECORD_NAME}: {what} {mac!r} is not a MAC address")


def _nic_macs(data: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for name, mac in data.items():
        if not isinstance(mac, str):
            raise TypeError(f"nic_macs: {name}'s MAC should be str, not {type(mac).__name__}")
        _check_mac(mac.lower(), f"nic_macs: {name}'s MAC")
        pairs.append((name, mac.lower()))
    return tuple(pairs)


def _links(data: list[Any], nic_macs: tuple[tuple[str, str], ...]) -> tuple[VirtualLink, ...]:
    """The links, bottom first: each member is an earlier link or one of the NICs."""
    known = {name for name, _ in nic_macs}
    links: list[VirtualLink] = []
    for number, entry in enumerate(data, 1):
        if not isinstance(entry, dict):
            raise TypeError(f"links: entry {number} should be dict, not {type(entry).__name__}")
        kind = _field(entry, "kind", str)
        name = _field(entry, "name", str)
        members = _field(entry, "members", list)
        options = _field(entry, "options", dict, optional=True) or {}
        mac = _field(entry, "mac", str, optional=True)
        mtu = _field(entry, "mtu", int, optional=True)
        what = f"{RECORD_NAME}: link {name!r}"
        if kind not in LINK_KINDS:
            raise KdumpError(f"{what}: kind {kind!r} is not one of {', '.join(LINK_KINDS)}")
        if not members or not all(isinstance(member, str) for member in members):
            raise KdumpError(f"{what}: members should be a non-empty list of names")
        strange = [member for member in members if member not in known]
        if strange:
            raise KdumpError(f"{what}: member {strange[0]!r} is neither an earlier link nor a NIC of "
                             f"nic_macs")
        if not all(isinstance(value, str) for value in options.values()):
            raise KdumpError(f"{what}: option values should be strings")
        if kind == "vlan":
            vlan_id = options.get("id", "")
            if not vlan_id.isdigit() or not 1 <= int(vlan_id) <= 4094 or len(members) != 1:
                raise KdumpError(f"{what}: a VLAN needs one parent and an id 1-4094, not {vlan_id!r}")
        if mac is not None:
            _check_mac(mac.lower(), f"link {name!r}: mac")
        links.append(VirtualLink(kind=kind, name=name, members=tuple(members), options=tuple(options.items()),
                                 mac=mac.lower() if mac else None, mtu=mtu))
        known.add(name)
    return tuple(links)


def record_host_route(host: str, target_address: str, *, resolv_conf: str = DEFAULT_RESOLV_CONF,
                      rtnetlink: OpenRtnetlink = open_rtnetlink,
                      stand_in_nics: Collection[str] = ()) -> HostRecord:
    """How this host reaches the server host (at target_address, IPv4 or IPv6), for the
    capture kernel.

    The links are those under the one the kernel routes target_address through now
    (hostlinks.walk; `stand_in_nics` is for tests, see there). Both families of that top
    link are recorded, whichever the target's: a dual-stack host stays dual-stack.

    `dhcp` (IPv4) is a guess, as no kernel object says "DHCP": it is true when one of the
    link's IPv4 addresses has a finite lifetime (DHCP clients such as NetworkManager and
    systemd-networkd add leases that way; a static address is IFA_F_PERMANENT) or a route
    through it has protocol `dhcp`. ISC dhclient's script adds permanent addresses with
    `proto boot` routes, so its leases look static: the capture kernel then reuses the
    leased address, which the crashed host still holds. `ip=<if>:dhcp` overrides.
    `ipv6` is guessed the same way, see _ipv6_method. Name servers on loopback
    (systemd-resolved's 127.0.0.53) are left out: nothing answers there in the capture
    kernel; IPv6 ones are kept only when the link has IPv6.
    """
    target = _address(target_address, "target address")
    with rtnetlink() as ipr:
        route = _host_route(ipr, target)
        index = int(route.get("RTA_OIF"))
        stack = walk(ipr, index, target, stand_in_nics=stand_in_nics)
        v4 = [a for a in ipr.get_addr(index=index, family=socket.AF_INET)
              if a["scope"] == RT_SCOPE_UNIVERSE and ":" not in _ip_of(a)]
        v6 = [a for a in ipr.get_addr(index=index, family=socket.AF_INET6) if _usable_ipv6(a)]
        routes4 = [r for r in ipr.route("dump", family=socket.AF_INET) if r.get("RTA_OIF") == index]
        routes6 = [r for r in ipr.route("dump", family=socket.AF_INET6) if r.get("RTA_OIF") == index]
    source = route.get("RTA_PREFSRC")
    cidrs = [sorted((_cidr(a) for a in found), key=lambda cidr: cidr.split("/")[0] != source)
             for found in (v4, v6)]
    ipv6 = _ipv6_method(v6)
    on_target_family = route.get("RTA_GATEWAY")
    record = HostRecord(
        host=host,
        target=target,
        interface=stack.top,
        mac=stack.mac,
        mtu=stack.mtu,
        addresses=tuple(cidrs[0] + cidrs[1]),
        gateway=on_target_family if ":" not in target else _default_gateway(routes4, 4),
        dns=tuple(_nameservers(resolv_conf, ipv6=ipv6 is not None)),
        dhcp=bool(v4) and (any(r["proto"] == RTPROT_DHCP and ":" not in str(r.get("RTA_GATEWAY") or "")
                               for r in routes4)
                           or any(not _address_flags(a) & IFA_F_PERMANENT for a in v4)),
        hostname=_hostname(),
        links=stack.links,
        nic_macs=stack.nic_macs,
        ipv6=ipv6,
        gateway6=on_target_family if ":" in target else _default_gateway(routes6, 6),
    )
    if ":" not in target and not record.dhcp and not cidrs[0]:
        raise KdumpError(f"{record.interface} routes to {target} but has no IPv4 address to record")
    if ":" in target and ipv6 is None:
        raise KdumpError(f"{record.interface} routes to {target} but has no global IPv6 address to record")
    return record


def _ip_of(address: Any) -> str:
    return str(address.get("IFA_LOCAL") or address.get("IFA_ADDRESS"))


def _usable_ipv6(address: Any) -> bool:
    """A global IPv6 address worth recording: not a privacy (temporary) address, which the
    kernel makes up anew, nor a deprecated or failed one."""
    if ":" not in _ip_of(address) or address["scope"] != RT_SCOPE_UNIVERSE:
        return False
    return not _address_flags(address) & (IFA_F_TEMPORARY | IFA_F_DEPRECATED | IFA_F_DADFAILED)


def _ipv6_method(addresses: list[Any]) -> str | None:
    """How the host got its IPv6 addresses: a guess, like IPv4's DHCP guess.

    A permanent address (no lifetime) was configured: "static". One the kernel made from a
    router advertisement (IFA_PROTO kernel_ra, Linux 5.18; before that a /64 with a finite
    lifetime, or IFA_F_MANAGETEMPADDR, which NetworkManager and systemd-networkd set on
    their own SLAAC addresses): "auto6". A finite /128 is a DHCPv6 lease: "dhcp6". A host
    with several kinds needs the most of the capture kernel: dhcp6, then auto6, then static.
    """
    methods = set()
    for address in addresses:
        flags = _address_flags(address)
        if flags & IFA_F_PERMANENT and address.get("IFA_PROTO") != IFAPROT_KERNEL_RA:
            methods.add("static")
        elif (address.get("IFA_PROTO") == IFAPROT_KERNEL_RA or flags & IFA_F_MANAGETEMPADDR
              or address["prefixlen"] == 64):
            methods.add("auto6")
        elif address["prefixlen"] == 128:
            methods.add("dhcp6")
        else:
            methods.add("static")
    return next((method for method in ("dhcp6", "auto6", "static") if method in methods), None)


def _default_gateway(routes: list[Any], version: int) -> str | None:
    """The gateway of the default route (of that IP version) through the top link."""
    for route in routes:
        gateway = route.get("RTA_GATEWAY")
        if (route.get("RTA_DST") is None and not route.get("dst_len") and gateway
                and ipaddress.ip_address(gateway).version == version):
            return str(gateway)
    return None


def _host_route(ipr: Any, target: str) -> Any:
    route, why_not = route_to(ipr, target)
    if route is None:
        raise KdumpError(f"this host has no route to {target}: {why_not}")
    if route.get("RTA_OIF") is None:
        raise KdumpError(f"the route to {target} leaves through no interface")
    return route


def _cidr(address: Any) -> str:
    return f"{_ip_of(address)}/{address['prefixlen']}"


def _address_flags(address: Any) -> int:
    """IFA_FLAGS (32 bits) when the kernel sends it, else the header's 8-bit flags."""
    flags = address.get("IFA_FLAGS")
    return int(flags if flags is not None else address["flags"])


def _nameservers(resolv_conf: str, *, ipv6: bool) -> list[str]:
    """resolv.conf's name servers the capture kernel can ask: not on loopback, IPv6 ones only
    with IPv6, and no link-local ones (their zone names a host interface)."""
    servers = []
    try:
        with open(resolv_conf, encoding="utf-8") as lines:
            for line in lines:
                words = line.split()
                if len(words) >= 2 and words[0] == "nameserver":
                    servers.append(words[1])
    except OSError:
        return []
    usable = []
    for server in servers:
        try:
            address = ipaddress.ip_address(server)
        except ValueError:
            continue
        if not address.is_loopback and not address.is_link_local and (address.version == 4 or ipv6):
            usable.append(server)
    return usable


def _hostname() -> str | None:
    """This host's name for the capture kernel's DHCP requests; None when it has none (the
    kernel's "(none)", which a DHCP server would take for a name)."""
    name = socket.gethostname()
    return None if name in ("", "(none)") else name
