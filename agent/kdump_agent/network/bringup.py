"""NETWORK_UP's work: bring up the one NIC that reaches the dump target, and nothing else.

Where the plan comes from, first match wins:

1. dracut's parameters on the capture kernel's command line, the way admins and kexec
   already describe capture-kernel networking: `ip=dhcp`, `ip=<if>:dhcp[:<mtu>]`,
   `ip=<client>:[<peer>]:<gw>:<mask>:<host>:<if>:{none|off|dhcp}[:<dns1>[:<dns2>]]` (or
   `[:<mtu>]` there), `ifname=<if>:<mac>` and `nameserver=<ip>`. dracut would rename the
   NIC with that MAC to <if>; we only use the MAC to find it. IPv4 only.
2. What `mkinitrd` recorded on the host (`record_host_route`): the interface that routes to
   the target, its MAC (the capture kernel may name the NIC differently: there is no udev
   rename in a lean initramfs, so `ens3` may come up as `eth0`), its addresses, gateway,
   DNS servers and whether it used DHCP.

`bring_up` then works through the steps below against one deadline; each step may use
what is left of it and an overrun names the step. Find the link (by MAC when known: the
driver may still be loading, so it is waited for), set the MTU if one is given, set it up,
wait for carrier, sleep `link_delay` (kdump.conf: spanning-tree ports pass no traffic for a
while after the link comes up), add the addresses and the default route or run DHCP, and
finally wait until the kernel has a route to the target: "link up" comes too early on
some NICs, which is why RHEL's kdump waits for the route too.

pyroute2 is imported inside the functions that need it. Importing it costs about a quarter
of a second (its `__init__` pulls in the whole package, NDB and sqlite3 included, even for
`pyroute2.minimal`), which every other sub-command and every local-disk capture would pay
for nothing. PyInstaller still sees these imports; the build must keep asyncio,
multiprocessing, unittest and sqlite3, which pyroute2 0.9.7 imports unconditionally.
"""

from __future__ import annotations

import importlib
import ipaddress
import json
import logging
import os
import re
import socket
import sys
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from .errors import KdumpError

log = logging.getLogger("kdump-agent")

DEFAULT_RESOLV_CONF = "/etc/resolv.conf"
RECORD_NAME = "network record"
POLL_SECONDS = 0.1

# Kernel constants (linux/if.h, if_addr.h, rtnetlink.h, if_arp.h).
IFF_LOWER_UP = 0x10000
IFF_DORMANT = 0x20000
IFA_F_PERMANENT = 0x80
RTPROT_DHCP = 16
ARPHRD_ETHER = 1
RT_SCOPE_UNIVERSE = 0

_DHCP_METHODS = frozenset({"dhcp", "on", "any", "single-dhcp"})
_STATIC_METHODS = frozenset({"none", "off"})
_IPV6_METHODS = frozenset({"dhcp6", "auto6", "either6", "link6", "link-local"})
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# Words of /proc/cmdline: the kernel allows double quotes around values with spaces.
_CMDLINE_WORD = re.compile(r'(?:[^\s"]+|"[^"]*")+')

T = TypeVar("T")


@dataclass(frozen=True)
class NetworkPlan:
    """How the capture kernel reaches the target: one interface, static or DHCP (IPv4).

    `interface` is the name the plan's source used; `mac` finds the NIC whatever the capture
    kernel calls it. With neither, the only Ethernet NIC there is gets used.
    """

    interface: str | None
    mac: str | None
    dhcp: bool
    addresses: tuple[str, ...]  # CIDR, e.g. "192.168.1.10/24"; empty with DHCP
    gateway: str | None
    dns: tuple[str, ...]
    hostname: str | None
    mtu: int | None = None


# --- the capture kernel's command line (dracut's syntax) ---------------------------------


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
    nameservers = [_ipv4(value, f"nameserver={value}") for key, value in parameters if key == "nameserver"]
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
        dns = tuple(_ipv4(server, name) for server in extra if server)
    elif extra:
        mtu = _mtu(name, extra[0]) if extra[0] else None
        if any(extra[1:]):
            raise KdumpError(f"{name}: setting the MAC address (<macaddr>) is not supported")
    addresses: tuple[str, ...] = ()
    if not dhcp:
        addresses = (_client_cidr(name, client, mask),)
    return NetworkPlan(
        interface=interface or None, mac=None, dhcp=dhcp, addresses=addresses,
        gateway=_ipv4(gateway, name) if gateway else None, dns=dns, hostname=hostname or None, mtu=mtu,
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
    address = _ipv4(client, name)
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
        if not interface or not sep or not _MAC.match(mac):
            raise KdumpError(f"ifname={value}: expected ifname=<interface>:<mac> (six hex pairs)")
        if macs.get(interface, mac) != mac:
            raise KdumpError(f"ifname={value}: {interface} already has MAC {macs[interface]}")
        macs[interface] = mac
    return macs


def _ipv4(text: str, name: str) -> str:
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


# --- the host's record (written by mkinitrd, read in the capture kernel) -----------------


def plan_from_record(json_text: str) -> NetworkPlan:
    """The plan in a record made by `record_host_route`; a damaged record raises KdumpError."""
    try:
        data = json.loads(json_text)
    except ValueError as error:
        raise KdumpError(f"{RECORD_NAME}: not JSON: {error}") from None
    if not isinstance(data, dict):
        raise KdumpError(f"{RECORD_NAME}: expected a JSON object")
    try:
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
    if not _MAC.match(mac):
        raise KdumpError(f"{RECORD_NAME}: mac {mac!r} is not a MAC address")
    for cidr in addresses:
        try:
            ipaddress.IPv4Interface(cidr)
        except (ValueError, TypeError):
            raise KdumpError(f"{RECORD_NAME}: address {cidr!r} is not IPv4 CIDR") from None
    if not dhcp and not addresses:
        raise KdumpError(f"{RECORD_NAME}: static, but no addresses")
    return NetworkPlan(
        interface=interface, mac=mac, dhcp=dhcp, addresses=() if dhcp else tuple(addresses),
        gateway=_ipv4(gateway, RECORD_NAME) if gateway else None,
        dns=tuple(_ipv4(str(server), RECORD_NAME) for server in dns), hostname=hostname, mtu=mtu,
    )


def _field(data: dict[str, Any], key: str, kind: type[T], *, optional: bool = False) -> Any:
    if key not in data or (optional and data[key] is None):
        if optional:
            return None
        raise KeyError(f"{key} is missing")
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{key} should be {kind.__name__}, not {type(value).__name__}")
    return value


def choose_plan(cmdline: str, record_text: str | None) -> NetworkPlan | None:
    """The command line's plan if it has one, else the record's; None if neither exists.

    The command line wins, but the record lends it what only the host knew: the NIC's
    interface and MAC when `ip=dhcp` names no interface, or the MAC when both name the same
    interface (the capture kernel may call it something else). A damaged record only fails
    the capture when it is the only source.
    """
    plan = parse_cmdline(cmdline)
    if record_text is None:
        return plan
    if plan is None:
        return plan_from_record(record_text)
    try:
        record = plan_from_record(record_text)
    except KdumpError as error:
        log.warning("%s; going by the command line alone", error)
        return plan
    if plan.interface is None:
        return replace(plan, interface=record.interface, mac=plan.mac or record.mac)
    if plan.mac is None and plan.interface == record.interface:
        return replace(plan, mac=record.mac)
    return plan


def record_host_route(target_address: str, *, resolv_conf: str = DEFAULT_RESOLV_CONF) -> str:
    """JSON describing how this host reaches target_address, for the capture kernel.

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
    target = _ipv4(target_address, "target address")
    with _iproute() as ipr:
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
    record = {
        "target": target,
        "interface": link.get("IFLA_IFNAME"),
        "mac": str(link.get("IFLA_ADDRESS")).lower(),
        "mtu": link.get("IFLA_MTU"),
        "addresses": cidrs,
        "gateway": route.get("RTA_GATEWAY"),
        "dns": _nameservers(resolv_conf),
        "dhcp": bool(dhcp_routes) or any(not _address_flags(a) & IFA_F_PERMANENT for a in addresses),
        "hostname": socket.gethostname(),
    }
    if not record["dhcp"] and not cidrs:
        raise KdumpError(f"{record['interface']} routes to {target} but has no IPv4 address to record")
    return json.dumps(record, indent=2) + "\n"


def _host_route(ipr: Any, target: str) -> Any:
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        route = ipr.route("get", dst=target)[0]
    except NetlinkError as error:
        raise KdumpError(f"this host has no route to {target}: {_netlink_reason(error)}") from None
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


# --- bringing the link up ---------------------------------------------------------------


@dataclass(frozen=True)
class _Link:
    index: int
    name: str
    mac: str


@dataclass(frozen=True)
class _Addressing:
    """What goes on the link: the plan's own, or what a DHCP server leased."""

    addresses: tuple[str, ...]  # CIDR
    gateway: str | None
    dns: tuple[str, ...]


class _Budget:
    """What is left of one deadline, shared by the steps of a bring-up."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def overrun(self, what: str, detail: str) -> KdumpError:
        return KdumpError(f"{what}: not done within the {self.seconds:g} s network deadline"
                          f"{' (' + detail + ')' if detail else ''}")


def bring_up(
    plan: NetworkPlan,
    target_address: str | None,
    *,
    link_delay: float,
    deadline: float,
    resolv_conf: str | None = None,
) -> str:
    """Bring up the plan's NIC until the kernel routes to target_address; a journal note.

    `deadline` is the seconds the whole bring-up may take; any step that would run past it
    raises KdumpError naming the step. /etc/resolv.conf (or whatever `resolv_conf` names) is
    written only when that path is given. Without a target address (a host name not yet
    resolved) the route is not waited for here: the caller resolves the name through the
    servers just written, then calls wait_for_route.
    """
    target = _ipv4(target_address, "target address") if target_address else None
    budget = _Budget(deadline)
    with _iproute() as ipr:
        link = _find_link(ipr, plan, budget)
        if plan.mtu is not None:
            _netlink(f"setting MTU {plan.mtu} on {link.name}", ipr.link, "set", index=link.index,
                     mtu=plan.mtu)
        _netlink(f"setting {link.name} up", ipr.link, "set", index=link.index, state="up")
        _wait_for(budget, f"carrier on {link.name}", lambda: _link_ready(ipr, link.index))
        _link_delay(link_delay, budget)
        if plan.dhcp:
            lease = _dhcp_lease(link.name, budget, plan.hostname)
            addressing = replace(lease, dns=lease.dns or plan.dns)  # the lease's DNS, else the plan's
        else:
            addressing = _Addressing(plan.addresses, plan.gateway, plan.dns)
        _configure(ipr, link, addressing)
        route = _route_note(ipr, target, budget) if target else ""
    if resolv_conf is not None and addressing.dns:
        write_resolv_conf(resolv_conf, addressing.dns)
    how = "via DHCP" if plan.dhcp else "static"
    return f"{link.name} ({link.mac}) {', '.join(addressing.addresses)} {how}{route}"


def wait_for_route(target_address: str, deadline: float) -> str:
    """Wait until the kernel routes to target_address; `, route to ...` for the journal."""
    target = _ipv4(target_address, "target address")
    with _iproute() as ipr:
        return _route_note(ipr, target, _Budget(deadline))


def _route_note(ipr: Any, target: str, budget: _Budget) -> str:
    oif, gateway = _wait_for(budget, f"a route to {target}", lambda: _route_to(ipr, target))
    via = f" via {gateway}" if gateway else ""
    return f", route to {target}{via} dev {_link_name(ipr, oif)}"


def source_address(target_address: str) -> str:
    """The address this machine sends from to reach target_address (no packet is sent):
    the `<host-ip>` in the dump directory's name, and NFSv4's clientaddr."""
    family = socket.AF_INET6 if ":" in target_address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((target_address, 9))
        return str(probe.getsockname()[0])


def resolve(host: str) -> str:
    """An IPv4 address for host: itself if it is one, else the resolver's first answer.

    The name goes to getaddrinfo() as ASCII bytes: the frozen binary has no idna codec.
    """
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        answers = socket.getaddrinfo(host.encode("ascii"), None, socket.AF_INET, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise KdumpError(f"cannot resolve {host}: {error}") from None
    return str(answers[0][4][0])


@contextmanager
def _iproute() -> Iterator[Any]:
    """An rtnetlink socket (pyroute2's IPRoute), closed on the way out."""
    _stand_ins_for_unbundled()
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        yield ipr


def _stand_ins_for_unbundled() -> None:
    """Let pyroute2 import in a binary built without OpenSSL and SQLite.

    pyroute2 0.9.7 imports ssl (rtnl/probe_msg.py, for a TLS probe) and sqlite3 (ndb, its
    database of the network state) at module level, and uses neither for the rtnetlink
    socket and the DHCP client we use. OpenSSL and SQLite would add megabytes to the binary
    and its one-file unpack, both paid from the crash kernel's reservation (paramiko's
    cryptography carries its own OpenSSL). asyncio is imported first, while `import ssl`
    still fails, so it takes its no-SSL path; then placeholders whose every attribute
    raises ImportError answer pyroute2's imports.
    """
    for name in ("ssl", "sqlite3"):
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)  # a full Python (tests, the host) has them
            continue
        except ImportError:
            pass
        import asyncio  # noqa: F401 - before the ssl placeholder, see above

        def missing(attribute: str, module: str = name) -> object:
            raise ImportError(f"{module}.{attribute}: this kdump-agent binary is built without it")

        placeholder = types.ModuleType(name, f"kdump-agent is built without {name}")
        placeholder.__getattr__ = missing  # type: ignore[method-assign]
        sys.modules[name] = placeholder


def _netlink(what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """One netlink request; a refusal becomes KdumpError saying what was tried."""
    from pyroute2.netlink.exceptions import NetlinkError

    log.info("network: %s", what)
    try:
        return call(*args, **kwargs)
    except NetlinkError as error:
        raise KdumpError(f"{what}: {_netlink_reason(error)}") from None


def _netlink_reason(error: Any) -> str:
    code = getattr(error, "code", None)
    return os.strerror(code) if isinstance(code, int) and code > 0 else str(error)


def _wait_for(budget: _Budget, what: str, probe: Callable[[], tuple[T | None, str]]) -> T:
    """Poll probe until it returns a value; it says why not otherwise, for the error."""
    while True:
        value, reason = probe()
        if value is not None:
            return value
        if budget.left() <= 0:
            raise budget.overrun(what, reason)
        time.sleep(min(POLL_SECONDS, budget.left()))


def _find_link(ipr: Any, plan: NetworkPlan, budget: _Budget) -> _Link:
    """The plan's NIC: by MAC when known, else by name, else the only Ethernet NIC.

    Waited for: udev may still be loading its driver when the capture starts.
    """
    if plan.mac:
        what = f"the NIC with MAC {plan.mac}" + (f" ({plan.interface})" if plan.interface else "")
        index = _wait_for(budget, what, lambda: _first(ipr.link_lookup(address=plan.mac), "no such link"))
    elif plan.interface:
        index = _wait_for(budget, f"the NIC {plan.interface}",
                          lambda: _first(ipr.link_lookup(ifname=plan.interface), "no such link"))
    else:
        index = _wait_for(budget, "an Ethernet NIC", lambda: _only_ethernet(ipr))
    message = ipr.link("get", index=index)[0]
    link = _Link(index=index, name=str(message.get("IFLA_IFNAME")), mac=str(message.get("IFLA_ADDRESS")))
    log.info("network: using %s (%s)", link.name, link.mac)
    return link


def _first(indexes: list[int], reason: str) -> tuple[int | None, str]:
    return (indexes[0], "") if indexes else (None, reason)


def _only_ethernet(ipr: Any) -> tuple[int | None, str]:
    """With no interface named, the NIC is only unambiguous if there is one."""
    links = [link for link in ipr.get_links() if link["ifi_type"] == ARPHRD_ETHER]
    if len(links) > 1:
        names = ", ".join(str(link.get("IFLA_IFNAME")) for link in links)
        raise KdumpError(f"ip=dhcp names no interface and there are several ({names}): "
                         f"add ifname=<if>:<mac> or use ip=<if>:dhcp")
    return (links[0]["index"], "") if links else (None, "no Ethernet NIC yet")


def _link_ready(ipr: Any, index: int) -> tuple[bool | None, str]:
    """Up as dracut's wait_for_if_up sees it: operstate UP, or UNKNOWN with carrier."""
    message = ipr.link("get", index=index)[0]
    state = message.get("IFLA_OPERSTATE")
    flags = int(message["flags"])
    if state == "UP" or (state == "UNKNOWN" and flags & IFF_LOWER_UP and not flags & IFF_DORMANT):
        return True, ""
    return None, f"operstate {state}" + ("" if flags & IFF_LOWER_UP else ", no carrier")


def _link_delay(seconds: float, budget: _Budget) -> None:
    if seconds <= 0:
        return
    if seconds > budget.left():
        raise KdumpError(f"link_delay {seconds:g} s does not fit in the {budget.left():.1f} s left of the "
                         f"{budget.seconds:g} s network deadline")
    log.info("network: link_delay, waiting %g s", seconds)
    time.sleep(seconds)


def _configure(ipr: Any, link: _Link, addressing: _Addressing) -> None:
    """Add the addresses (replacing any equal ones) and the default route via the gateway."""
    for cidr in addressing.addresses:
        interface = ipaddress.IPv4Interface(cidr)
        extra = {}
        if interface.network.prefixlen < 31:
            extra["broadcast"] = str(interface.network.broadcast_address)
        _netlink(f"adding {cidr} to {link.name}", ipr.addr, "replace", index=link.index,
                 address=str(interface.ip), prefixlen=interface.network.prefixlen, **extra)
    if addressing.gateway:
        _netlink(f"adding the default route via {addressing.gateway} on {link.name}", ipr.route,
                 "replace", dst="0.0.0.0/0", gateway=addressing.gateway, oif=link.index)


def _route_to(ipr: Any, target: str) -> tuple[tuple[int, str | None] | None, str]:
    """(output interface, gateway) of the kernel's route to target, or why there is none."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        route = ipr.route("get", dst=target)[0]
    except NetlinkError as error:
        return None, _netlink_reason(error)
    oif = route.get("RTA_OIF")
    if oif is None:
        return None, "the route has no output interface"
    return (int(oif), route.get("RTA_GATEWAY")), ""


def _link_name(ipr: Any, index: int) -> str:
    return str(ipr.link("get", index=index)[0].get("IFLA_IFNAME"))


def write_resolv_conf(path: str, servers: tuple[str, ...]) -> None:
    """Point the resolver at servers (replacing the file whole, so no reader sees half)."""
    partial = f"{path}.kdump-agent"
    with open(partial, "w", encoding="utf-8") as out:
        out.write("# written by kdump-agent\n")
        out.writelines(f"nameserver {server}\n" for server in servers)
    os.replace(partial, path)


def _dhcp_lease(interface: str, budget: _Budget, hostname: str | None) -> _Addressing:
    """One DHCPv4 lease for interface from pyroute2's client, within the budget.

    The client only asks (hooks none, no lease file, no signal handlers: we run in a worker
    thread; no DHCPRELEASE on the way out: we keep the address); the caller configures the
    address it returns. The lease is not renewed: it has to outlast the dump.
    """
    import asyncio

    from pyroute2.dhcp.client import AsyncDHCPClient, ClientConfig
    from pyroute2.dhcp.fsm import State
    from pyroute2.dhcp.leases import Lease, MissingOptionError

    class KeptInMemory(Lease):  # type: ignore[misc]
        def dump(self) -> None:
            pass

        @classmethod
        def load(cls, interface: str) -> None:
            return None

    def optional(read: Callable[[], T]) -> T | None:
        try:
            return read()
        except MissingOptionError:
            return None

    async def obtain() -> _Addressing:
        config = ClientConfig(interface=interface, lease_type=KeptInMemory, handle_signals=False,
                              release=False, write_pidfile=False, host_name=hostname, vendor_id=None)
        async with AsyncDHCPClient(config) as client:
            await client.bootstrap()
            try:
                await client.wait_for_state(State.BOUND, timeout=budget.left())
            except TimeoutError:
                raise budget.overrun(f"DHCP on {interface}", f"no lease; client state "
                                     f"{client.state.name}") from None
            lease = client.lease
        mask = optional(lambda: lease.prefixlen)
        if mask is None:
            raise KdumpError(f"DHCP on {interface}: the lease for {lease.ip} has no subnet mask")
        routers = optional(lambda: lease.routers) or []
        servers = optional(lambda: lease.name_servers) or []
        log.info("network: DHCP lease %s/%s from %s", lease.ip, mask, optional(lambda: lease.server_id))
        return _Addressing(addresses=(f"{lease.ip}/{mask}",), gateway=routers[0] if routers else None,
                           dns=tuple(servers))

    return asyncio.run(obtain())
