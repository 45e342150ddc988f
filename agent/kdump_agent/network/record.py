"""The host's network record (network.json): written by mkinitrd, read in the capture kernel.

It says how this host reached the dump server when the image was built, for a capture
kernel whose command line has no `ip=`, and the server's name with the address it resolved
to here: the fallback when DNS fails in the capture kernel. The JSON keys are those of
every image built so far; `HostRecord.from_json` is the one place that checks them.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import KdumpError
from .cmdline import MAC, ipv4
from .plan import NetworkPlan
from .rtnetlink import (
    ARPHRD_ETHER,
    IFA_F_PERMANENT,
    RT_SCOPE_UNIVERSE,
    RTPROT_DHCP,
    OpenRtnetlink,
    open_rtnetlink,
    route_to,
)

DEFAULT_RESOLV_CONF = "/etc/resolv.conf"
RECORD_NAME = "network record"

T = TypeVar("T")


@dataclass(frozen=True)
class HostRecord:
    """How the host reached the server `host` (resolved to `target`) when mkinitrd ran.

    `addresses` are the interface's addresses then, the route's source first; with `dhcp`
    the capture kernel asks a DHCP server instead of reusing them.
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

    def as_json(self) -> str:
        """network.json's text, keys in the order every earlier version wrote them."""
        data = {
            "target": self.target, "interface": self.interface, "mac": self.mac, "mtu": self.mtu,
            "addresses": list(self.addresses), "gateway": self.gateway, "dns": list(self.dns),
            "dhcp": self.dhcp, "hostname": self.hostname, "host": self.host,
        }
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
        except (KeyError, TypeError) as error:
            raise KdumpError(f"{RECORD_NAME}: {error.args[0]}") from None
        if not MAC.match(mac):
            raise KdumpError(f"{RECORD_NAME}: mac {mac!r} is not a MAC address")
        for cidr in addresses:
            try:
                ipaddress.IPv4Interface(cidr)
            except (ValueError, TypeError):
                raise KdumpError(f"{RECORD_NAME}: address {cidr!r} is not IPv4 CIDR") from None
        if not dhcp and not addresses:
            raise KdumpError(f"{RECORD_NAME}: static, but no addresses")
        return cls(
            host=host, target=ipv4(target, f"{RECORD_NAME}: target"), interface=interface, mac=mac,
            mtu=mtu, addresses=tuple(addresses), gateway=ipv4(gateway, RECORD_NAME) if gateway else None,
            dns=tuple(ipv4(str(server), RECORD_NAME) for server in dns), dhcp=dhcp, hostname=hostname,
        )

    def plan(self) -> NetworkPlan:
        """The capture kernel's plan: this interface, its addresses or DHCP, its gateway and DNS."""
        return NetworkPlan(
            interface=self.interface, mac=self.mac, dhcp=self.dhcp,
            addresses=() if self.dhcp else self.addresses, gateway=self.gateway, dns=self.dns,
            hostname=self.hostname, mtu=self.mtu,
        )

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


def record_host_route(host: str, target_address: str, *, resolv_conf: str = DEFAULT_RESOLV_CONF,
                      rtnetlink: OpenRtnetlink = open_rtnetlink) -> HostRecord:
    """How this host reaches the server host (at target_address), for the capture kernel.

    The interface is the one the kernel routes target_address through now. `dhcp` is a
    guess, as no kernel object says "DHCP": it is true when one of the interface's IPv4
    addresses has a finite lifetime (DHCP clients such as NetworkManager and
    systemd-networkd add leases that way; a static address is IFA_F_PERMANENT) or a route
    through it has protocol `dhcp`. ISC dhclient's script adds permanent addresses with
    `proto boot` routes, so its leases look static: the capture kernel then reuses the
    leased address, which the crashed host still holds. `ip=<if>:dhcp` overrides.
    Name servers on loopback (systemd-resolved's 127.0.0.53) are left out: nothing answers
    there in the capture kernel.
    """
    target = ipv4(target_address, "target address")
    with rtnetlink() as ipr:
        route = _host_route(ipr, target)
        index = route.get("RTA_OIF")
        link = ipr.link("get", index=index)[0]
        if link["ifi_type"] != ARPHRD_ETHER:
            raise KdumpError(f"the route to {target} leaves through {link.get('IFLA_IFNAME')}, "
                             f"which is not an Ethernet NIC")
        addresses = [a for a in ipr.get_addr(index=index, family=socket.AF_INET)
                     if a["scope"] == RT_SCOPE_UNIVERSE]
        dhcp_routes = [r for r in ipr.route("dump", family=socket.AF_INET)
                       if r.get("RTA_OIF") == index and r["proto"] == RTPROT_DHCP]
    source = route.get("RTA_PREFSRC")
    cidrs = sorted((_cidr(a) for a in addresses), key=lambda cidr: cidr.split("/")[0] != source)
    record = HostRecord(
        host=host,
        target=target,
        interface=link.get("IFLA_IFNAME"),
        mac=str(link.get("IFLA_ADDRESS")).lower(),
        mtu=link.get("IFLA_MTU"),
        addresses=tuple(cidrs),
        gateway=route.get("RTA_GATEWAY"),
        dns=tuple(_nameservers(resolv_conf)),
        dhcp=bool(dhcp_routes) or any(not _address_flags(a) & IFA_F_PERMANENT for a in addresses),
        hostname=socket.gethostname(),
    )
    if not record.dhcp and not cidrs:
        raise KdumpError(f"{record.interface} routes to {target} but has no IPv4 address to record")
    return record


def _host_route(ipr: Any, target: str) -> Any:
    route, why_not = route_to(ipr, target)
    if route is None:
        raise KdumpError(f"this host has no route to {target}: {why_not}")
    if route.get("RTA_OIF") is None:
        raise KdumpError(f"the route to {target} leaves through no interface")
    return route


def _cidr(address: Any) -> str:
    return f"{address.get('IFA_LOCAL') or address.get('IFA_ADDRESS')}/{address['prefixlen']}"


def _address_flags(address: Any) -> int:
    """IFA_FLAGS (32 bits) when the kernel sends it, else the header's 8-bit flags."""
    flags = address.get("IFA_FLAGS")
    return int(flags if flags is not None else address["flags"])


def _nameservers(resolv_conf: str) -> list[str]:
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
        if address.version == 4 and not address.is_loopback:
            usable.append(server)
    return usable
