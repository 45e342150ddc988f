"""dracut's network parameters on the capture kernel's command line, as a NetworkPlan.

The forms read: `ip=dhcp`, `ip=<if>:dhcp[:<mtu>]`,
`ip=<client>:[<peer>]:<gw>:<mask>:<host>:<if>:{none|off|dhcp}[:<dns1>[:<dns2>]]` (or
`[:<mtu>]` there), `ifname=<if>:<mac>` and `nameserver=<ip>`. dracut would rename the NIC
with that MAC to <if>; we only use the MAC to find it. IPv4 only.

`choose_plan` combines this plan with the one mkinitrd recorded on the host.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace

from ..errors import KdumpError
from .plan import NetworkPlan

_DHCP_METHODS = frozenset({"dhcp", "on", "any", "single-dhcp"})
_STATIC_METHODS = frozenset({"none", "off"})
_IPV6_METHODS = frozenset({"dhcp6", "auto6", "either6", "link6", "link-local"})
# A MAC address as the record and ifname= hold it: lower case, colon-separated.
MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# Words of /proc/cmdline: the kernel allows double quotes around values with spaces.
_CMDLINE_WORD = re.compile(r'(?:[^\s"]+|"[^"]*")+')


def parse_cmdline(cmdline: str) -> NetworkPlan | None:
    """The plan dracut's `ip=`/`ifname=`/`nameserver=` describe, or None without `ip=`.

    A malformed or unsupported value raises KdumpError naming the parameter: a capture
    kernel told how to reach its target must not silently do something else.
    """
    parameters = _cmdline_parameters(cmdline)
    ips = [value for key, value in parameters if key == "ip"]
    if not ips:
        return None
    if len(ips) > 1:
        given = ", ".join(f"ip={value}" for value in ips)
        raise KdumpError(f"{given}: kdump-agent brings up one interface; give one ip=")
    plan = _parse_ip(ips[0])
    macs = _ifname_macs([value for key, value in parameters if key == "ifname"])
    if plan.interface is not None:
        plan = replace(plan, mac=macs.get(plan.interface))
    elif len(macs) == 1:
        (interface, mac), = macs.items()
        plan = replace(plan, interface=interface, mac=mac)
    nameservers = [ipv4(value, f"nameserver={value}") for key, value in parameters if key == "nameserver"]
    return replace(plan, dns=tuple(dict.fromkeys([*plan.dns, *nameservers])))


def _cmdline_parameters(cmdline: str) -> list[tuple[str, str]]:
    """(key, value) of every `key=value` word, in order, with the kernel's quotes removed."""
    parameters = []
    for word in _CMDLINE_WORD.findall(cmdline):
        key, sep, value = word.replace('"', "").partition("=")
        if sep:
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


def _parse_ip(value: str) -> NetworkPlan:
    """One dracut `ip=` value as a plan (without ifname= and nameserver=)."""
    name = f"ip={value}"
    fields = _split_fields(value)
    if len(fields) == 1:
        return _parse_ip_method(name, None, fields[0], [])
    if fields[1] in _DHCP_METHODS | _STATIC_METHODS | _IPV6_METHODS:
        return _parse_ip_method(name, fields[0] or None, fields[1], fields[2:])
    if len(fields) < 7:
        raise KdumpError(f"{name}: expected ip=<client>:[<peer>]:<gw>:<mask>:<host>:<if>:none "
                         f"or ip=[<if>:]dhcp")
    return _parse_ip_static(name, fields)


def _parse_ip_method(name: str, interface: str | None, method: str, extra: list[str]) -> NetworkPlan:
    """`ip=<method>` or `ip=<if>:<method>[:<mtu>[:<macaddr>]]`."""
    _check_method(name, method, allow_static=False)
    mtu = _mtu(name, extra[0]) if extra and extra[0] else None
    if any(extra[1:]):
        raise KdumpError(f"{name}: setting the MAC address (<macaddr>) is not supported")
    return NetworkPlan(interface=interface, mac=None, dhcp=True, addresses=(), gateway=None,
                       dns=(), hostname=None, mtu=mtu)


def _parse_ip_static(name: str, fields: list[str]) -> NetworkPlan:
    """`ip=<client>:[<peer>]:<gw>:<mask>:<host>:<if>:<method>[:<dns1>[:<dns2>]|:<mtu>[:<macaddr>]]`."""
    client, peer, gateway, mask, hostname, interface, method, *extra = fields
    dhcp = _check_method(name, method, allow_static=True)
    if peer:
        raise KdumpError(f"{name}: point-to-point peers (<peer>) are not supported")
    dns: tuple[str, ...] = ()
    mtu = None
    if extra and "." in extra[0]:  # dracut: an address there means dns1[:dns2]
        if len(extra) > 2:
            raise KdumpError(f"{name}: at most two DNS servers follow the method")
        dns = tuple(ipv4(server, name) for server in extra if server)
    elif extra:
        mtu = _mtu(name, extra[0]) if extra[0] else None
        if any(extra[1:]):
            raise KdumpError(f"{name}: setting the MAC address (<macaddr>) is not supported")
    addresses: tuple[str, ...] = ()
    if not dhcp:
        addresses = (_client_cidr(name, client, mask),)
    return NetworkPlan(
        interface=interface or None, mac=None, dhcp=dhcp, addresses=addresses,
        gateway=ipv4(gateway, name) if gateway else None, dns=dns, hostname=hostname or None, mtu=mtu,
    )


def _check_method(name: str, method: str, *, allow_static: bool) -> bool:
    """True for DHCP, False for static; anything else raises naming the parameter."""
    if method in _DHCP_METHODS:
        return True
    if method in _STATIC_METHODS:
        if allow_static:
            return False
        raise KdumpError(f"{name}: {method} brings no interface up; for a static address use "
                         f"ip=<client>::<gw>:<mask>:<host>:<if>:none")
    if method in _IPV6_METHODS:
        raise KdumpError(f"{name}: {method} is IPv6; kdump-agent configures IPv4 (static or dhcp)")
    if re.fullmatch(r"[0-9.]+", method) and not allow_static:
        raise KdumpError(f"{name}: the anaconda form (ip=<address> with netmask=, gateway=) is not "
                         f"supported; use ip=<client>::<gw>:<mask>:<host>:<if>:none")
    raise KdumpError(f"{name}: unknown method {method!r} (expected dhcp, on, any, none or off)")


def _client_cidr(name: str, client: str, mask: str) -> str:
    """The static address in CIDR form; the mask may be dotted, a prefix length, or in client."""
    if not client:
        raise KdumpError(f"{name}: a static configuration needs <client>")
    if "/" in client and not mask:
        client, _, mask = client.partition("/")
    if not mask:
        raise KdumpError(f"{name}: a static configuration needs <mask>")
    address = ipv4(client, name)
    try:
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


def ipv4(text: str, name: str) -> str:
    """text as a normalised IPv4 address; anything else raises KdumpError naming `name`."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise KdumpError(f"{name}: {text!r} is not an IP address") from None
    if address.version != 4:
        raise KdumpError(f"{name}: {text} is IPv6; kdump-agent configures IPv4")
    return str(address)


def _mtu(name: str, text: str) -> int:
    if not text.isdigit() or not 68 <= int(text) <= 65535:
        raise KdumpError(f"{name}: {text!r} is not an MTU (68-65535)")
    return int(text)



def choose_plan(cmdline_plan: NetworkPlan | None, recorded: NetworkPlan | None) -> NetworkPlan | None:
    """The command line's plan if there is one, else the recorded one; None if neither exists.

    The command line wins, but the record lends it what only the host knew: the NIC's
    interface and MAC when `ip=dhcp` names no interface, or the MAC when both name the same
    interface (the capture kernel may call it something else).
    """
    if cmdline_plan is None or recorded is None:
        return cmdline_plan or recorded
    if cmdline_plan.interface is None:
        return replace(cmdline_plan, interface=recorded.interface, mac=cmdline_plan.mac or recorded.mac)
    if cmdline_plan.mac is None and cmdline_plan.interface == recorded.interface:
        return replace(cmdline_plan, mac=recorded.mac)
    return cmdline_plan
