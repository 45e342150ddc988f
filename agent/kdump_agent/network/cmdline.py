"""dracut's network parameters on the capture kernel's command line, as a NetworkPlan.

The forms read:

- `ip=dhcp`, `ip=<if>:dhcp[:<mtu>]`, `ip=auto6`, `ip=dhcp6`, `ip=<if>:{auto6|dhcp6}[:<mtu>]`;
- `ip=<client>:[<peer>]:<gw>:<mask>:<host>:<if>:{none|off|dhcp|auto6|dhcp6}[:<dns1>[:<dns2>]]`
  (or `[:<mtu>]` there), the client and gateway IPv4 or `[IPv6]`, an IPv6 client's prefix
  length in <mask> or as `[addr/64]`;
- several `ip=` for one interface: one IPv4 and one IPv6 method (dual stack);
- `bond=`, `vlan=`, `bridge=` (see `linkargs`), `ifname=<if>:<mac>` and `nameserver=<ip>`.

dracut would rename the NIC with an `ifname=` MAC; we only use the MAC to find it.
`choose_plan` combines this plan with the one mkinitrd recorded on the host.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from ..errors import KdumpError
from .linkargs import mtu_value, order_links, parse_bond, parse_bridge, parse_vlan
from .plan import NetworkPlan, VirtualLink

_DHCP_METHODS = frozenset({"dhcp", "on", "any", "single-dhcp"})
_STATIC_METHODS = frozenset({"none", "off"})
_IPV6_METHODS = frozenset({"dhcp6", "auto6"})
_REFUSED_IPV6_METHODS = {
    "either6": "either6 (SLAAC, else DHCPv6) is not supported: say which the network offers, "
               "auto6 or dhcp6",
    "link6": "link6 gives only a link-local address, which does not reach a server by name or "
             "through a router: use auto6, dhcp6 or a static [address]",
    "link-local": "link-local gives only a link-local address: use auto6, dhcp6 or a static "
                  "[address]",
}
# A MAC address as the record and ifname= hold it: lower case, colon-separated.
MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# Words of /proc/cmdline: the kernel allows double quotes around values with spaces.
_CMDLINE_WORD = re.compile(r'(?:[^\s"]+|"[^"]*")+')
_LINK_PARSERS = {"bond": parse_bond, "vlan": parse_vlan, "bridge": parse_bridge}


@dataclass(frozen=True)
class _Ip:
    """What one ip= says: its interface, and an IPv4 method, an IPv6 method or neither."""

    parameter: str
    interface: str | None
    ipv4: str | None = None  # "dhcp" or "static"
    ipv6: str | None = None  # one of plan.IPV6_METHODS
    addresses: tuple[str, ...] = ()
    gateway: str | None = None
    gateway6: str | None = None
    dns: tuple[str, ...] = ()
    hostname: str | None = None
    mtu: int | None = None


def parse_cmdline(cmdline: str) -> NetworkPlan | None:
    """The plan dracut's parameters describe, or None without `ip=`.

    A malformed or unsupported value raises KdumpError naming the parameter: a capture
    kernel told how to reach its target must not silently do something else.
    """
    parameters = _cmdline_parameters(cmdline)
    ips = [_parse_ip(value) for key, value in parameters if key == "ip"]
    if not ips:
        return None
    links = [_LINK_PARSERS[key](value) for key, value in parameters if key in _LINK_PARSERS]
    macs = _ifname_macs([value for key, value in parameters if key == "ifname"])
    interface = _top(ips, links, macs)
    ordered = order_links(links, interface) if interface else ()
    link_names = {link.name for link in ordered}
    planned = _combine(ips, interface)
    nameservers = [ip_address(value.strip("[]"), f"nameserver={value}")
                   for key, value in parameters if key == "nameserver"]
    nics = NetworkPlan(interface=interface, mac=None, dhcp=False, addresses=(), gateway=None, dns=(),
                       hostname=None, links=ordered).nics()
    return replace(
        planned, links=ordered, dns=tuple(dict.fromkeys([*planned.dns, *nameservers])),
        mac=macs.get(interface) if interface and interface not in link_names else None,
        nic_macs=tuple((nic, macs[nic]) for nic in nics if nic in macs and ordered),
    )


def _top(ips: list[_Ip], links: list[VirtualLink], macs: dict[str, str]) -> str | None:
    """The interface every ip= configures: the one they name, else the only link on top of
    the declared ones, else the only ifname= NIC, else none (the only Ethernet NIC)."""
    named = {ip.interface for ip in ips}
    if len(named) > 1:
        given = ", ".join(ip.parameter for ip in ips)
        raise KdumpError(f"{given}: kdump-agent brings up one interface; give ip= for one interface "
                         f"(one IPv4 and one IPv6 method)")
    (interface,) = named
    if interface is not None:
        return interface
    members = {member for link in links for member in link.members}
    tops = [link.name for link in links if link.name not in members]
    if len(tops) > 1:
        raise KdumpError(f"{ips[0].parameter}: names no interface and the command line builds "
                         f"several ({', '.join(tops)}): use ip=<if>:...")
    if tops:
        return tops[0]
    if len(macs) == 1:
        return next(iter(macs))
    return None


def _combine(ips: list[_Ip], interface: str | None) -> NetworkPlan:
    """The ip= of one interface as one plan: at most one IPv4 and one IPv6 method."""
    v4 = [ip for ip in ips if ip.ipv4]
    v6 = [ip for ip in ips if ip.ipv6]
    for family, given in (("IPv4", v4), ("IPv6", v6)):
        if len(given) > 1:
            raise KdumpError(f"{', '.join(ip.parameter for ip in given)}: two {family} methods for "
                             f"one interface")
    hostnames = {ip.hostname for ip in ips if ip.hostname}
    mtus = {ip.mtu for ip in ips if ip.mtu}
    if len(hostnames) > 1 or len(mtus) > 1:
        raise KdumpError(f"{', '.join(ip.parameter for ip in ips)}: different host names or MTUs for "
                         f"one interface")
    return NetworkPlan(
        interface=interface, mac=None, dhcp=any(ip.ipv4 == "dhcp" for ip in ips),
        addresses=tuple(cidr for ip in ips for cidr in ip.addresses),
        gateway=next((ip.gateway for ip in ips if ip.gateway), None),
        dns=tuple(dict.fromkeys(server for ip in ips for server in ip.dns)),
        hostname=next(iter(hostnames), None), mtu=next(iter(mtus), None),
        ipv6=v6[0].ipv6 if v6 else None, gateway6=next((ip.gateway6 for ip in ips if ip.gateway6), None),
    )


def _cmdline_parameters(cmdline: str) -> list[tuple[str, str]]:
    """(key, value) of every `key=value` word, in order, with the kernel's quotes removed."""
    parameters = []
    for word in _CMDLINE_WORD.findall(cmdline):
        key, sep, value = word.replace('"', "").partition("=")
        if sep or key in ("bond", "bridge"):  # dracut's bare `bond` and `bridge`: the defaults
            parameters.append((key, value))
    return parameters


def _split_fields(value: str) -> list[str]:
    """Split an ip= value at colons as dracut's ip_to_var does: `[v6:addr]` stays one field."""
    fields = []
    rest = value
    while True:
        if rest.startswith("["):
            end = rest.find("]")
            if end < 0:
                raise KdumpError(f"ip={value}: unbalanced [")
            fields.append(rest[1:end])
            rest = rest[end + 1:]
            if rest and not rest.startswith(":"):
                raise KdumpError(f"ip={value}: ':' expected after ]")
            rest = rest[1:] if rest else rest
            if not rest:
                return fields
            continue
        field, sep, rest = rest.partition(":")
        fields.append(field)
        if not sep:
            return fields


def _parse_ip(value: str) -> _Ip:
    """One dracut `ip=` value (without ifname= and nameserver=)."""
    name = f"ip={value}"
    fields = _split_fields(value)
    if len(fields) == 1:
        return _parse_ip_method(name, None, fields[0], [])
    if fields[1] in _DHCP_METHODS | _STATIC_METHODS | _IPV6_METHODS | set(_REFUSED_IPV6_METHODS):
        return _parse_ip_method(name, fields[0] or None, fields[1], fields[2:])
    if len(fields) < 7:
        raise KdumpError(f"{name}: expected ip=<client>:[<peer>]:<gw>:<mask>:<host>:<if>:none "
                         f"or ip=[<if>:]dhcp")
    return _parse_ip_static(name, fields)


def _parse_ip_method(name: str, interface: str | None, method: str, extra: list[str]) -> _Ip:
    """`ip=<method>` or `ip=<if>:<method>[:<mtu>[:<macaddr>]]`."""
    kind = _check_method(name, method, allow_static=False)
    mtu = mtu_value(name, extra[0]) if extra and extra[0] else None
    if any(extra[1:]):
        raise KdumpError(f"{name}: setting the MAC address (<macaddr>) is not supported")
    if kind == "dhcp":
        return _Ip(name, interface, ipv4="dhcp", mtu=mtu)
    return _Ip(name, interface, ipv6=kind, mtu=mtu)


def _parse_ip_static(name: str, fields: list[str]) -> _Ip:
    """`ip=<client>:[<peer>]:<gw>:<mask>:<host>:<if>:<method>[:<dns1>[:<dns2>]|:<mtu>[:<macaddr>]]`."""
    client, peer, gateway, mask, hostname, interface, method, *extra = fields
    kind = _check_method(name, method, allow_static=True)
    if peer:
        raise KdumpError(f"{name}: point-to-point peers (<peer>) are not supported")
    dns: tuple[str, ...] = ()
    mtu = None
    if extra and _is_address(extra[0]):  # dracut: an address there means dns1[:dns2]
        if len(extra) > 2:
            raise KdumpError(f"{name}: at most two DNS servers follow the method")
        dns = tuple(ip_address(server, name) for server in extra if server)
    elif extra:
        mtu = mtu_value(name, extra[0]) if extra[0] else None
        if any(extra[1:]):
            raise KdumpError(f"{name}: setting the MAC address (<macaddr>) is not supported")
    found = _Ip(name, interface or None, dns=dns, hostname=hostname or None, mtu=mtu)
    if kind == "static":
        cidr = _client_cidr(name, client, mask)
        router = ip_address(gateway, name) if gateway else None
        if router and (":" in router) != (":" in cidr):
            raise KdumpError(f"{name}: the gateway {router} is not of the address's family")
        if ":" in cidr:
            return replace(found, ipv6="static", addresses=(cidr,), gateway6=router)
        return replace(found, ipv4="static", addresses=(cidr,), gateway=router)
    if kind == "dhcp":
        return replace(found, ipv4="dhcp", gateway=ipv4(gateway, name) if gateway else None)
    return replace(found, ipv6=kind)


def _check_method(name: str, method: str, *, allow_static: bool) -> str:
    """"dhcp", "static" or an IPv6 method; anything else raises naming the parameter."""
    if method in _DHCP_METHODS:
        return "dhcp"
    if method in _STATIC_METHODS:
        if allow_static:
            return "static"
        raise KdumpError(f"{name}: {method} brings no interface up; for a static address use "
                         f"ip=<client>::<gw>:<mask>:<host>:<if>:none")
    if method in _IPV6_METHODS:
        return method
    if method in _REFUSED_IPV6_METHODS:
        raise KdumpError(f"{name}: {_REFUSED_IPV6_METHODS[method]}")
    if re.fullmatch(r"[0-9.]+", method) and not allow_static:
        raise KdumpError(f"{name}: the anaconda form (ip=<address> with netmask=, gateway=) is not "
                         f"supported; use ip=<client>::<gw>:<mask>:<host>:<if>:none")
    raise KdumpError(f"{name}: unknown method {method!r} (expected dhcp, on, any, none, off, auto6 "
                     f"or dhcp6)")


def _client_cidr(name: str, client: str, mask: str) -> str:
    """The static address in CIDR form; the mask may be dotted (IPv4), a prefix length, or in
    client (`addr/len`)."""
    if not client:
        raise KdumpError(f"{name}: a static configuration needs <client>")
    if "/" in client and not mask:
        client, _, mask = client.partition("/")
    if not mask:
        raise KdumpError(f"{name}: a static configuration needs <mask>")
    address = ip_address(client, name)
    try:
        if ":" in address:
            if not mask.isdigit():
                raise ValueError(mask)
            prefix = ipaddress.IPv6Network(f"::/{mask}").prefixlen
        else:
            prefix = ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
    except ValueError:
        raise KdumpError(f"{name}: {mask!r} is not a netmask") from None
    return f"{address}/{prefix}"


def _ifname_macs(values: list[str]) -> dict[str, str]:
    """Interface name -> MAC from `ifname=<if>:<mac>` parameters."""
    macs: dict[str, str] = {}
    for value in values:
        interface, sep, mac = value.partition(":")
        mac = mac.lower()
        if not interface or not sep or not MAC.match(mac):
            raise KdumpError(f"ifname={value}: expected ifname=<interface>:<mac> (six hex pairs)")
        if macs.get(interface, mac) != mac:
            raise KdumpError(f"ifname={value}: {interface} already has MAC {macs[interface]}")
        macs[interface] = mac
    return macs


def ip_address(text: str, name: str) -> str:
    """text as a normalised IPv4 or IPv6 address (compressed); else KdumpError naming `name`."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise KdumpError(f"{name}: {text!r} is not an IP address") from None


def ipv4(text: str, name: str) -> str:
    """text as a normalised IPv4 address; anything else raises KdumpError naming `name`."""
    address = ip_address(text, name)
    if ":" in address:
        raise KdumpError(f"{name}: {text} is IPv6; an IPv4 address is needed here")
    return address


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def choose_plan(cmdline_plan: NetworkPlan | None, recorded: NetworkPlan | None) -> NetworkPlan | None:
    """The command line's plan if there is one, else the recorded one; None if neither exists.

    The command line wins, but the record lends it what only the host knew. When `ip=`
    names no interface and builds no links, the record's whole path (its interface, links
    and NIC MACs) carries the command line's addressing. Otherwise every NIC of the command
    line's plan without a MAC takes the record's MAC for a NIC of that name: the capture
    kernel may call it something else.
    """
    if cmdline_plan is None or recorded is None:
        return cmdline_plan or recorded
    if cmdline_plan.interface is None and not cmdline_plan.links:
        return replace(cmdline_plan, interface=recorded.interface, mac=cmdline_plan.mac or recorded.mac,
                       links=recorded.links, nic_macs=recorded.nic_macs)
    lent = dict(cmdline_plan.nic_macs)
    for nic in cmdline_plan.nics():
        mac = recorded.mac_of(nic)
        if mac and nic != cmdline_plan.interface and nic not in lent:
            lent[nic] = mac
    interface = cmdline_plan.interface
    mac = cmdline_plan.mac
    if mac is None and interface and cmdline_plan.link(interface) is None:
        mac = recorded.mac_of(interface)
    return replace(cmdline_plan, mac=mac, nic_macs=tuple(lent.items()))
