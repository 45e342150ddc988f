"""dracut's `bond=`, `vlan=` and `bridge=` as VirtualLinks, and the checks a plan's links must pass.

The syntax is dracut's (modules.d/*network*/parse-bond.sh, parse-vlan.sh, parse-bridge.sh):

- `bond=<name>[:<slaves>[:<options>[:<mtu>]]]`, slaves and options comma-separated
  (`mode=active-backup,miimon=100,primary=eth0`); `bond` alone is
  `bond0:eth0,eth1:mode=balance-rr`. Options are the kernel's bonding sysfs names; they are
  checked here, where a typo can still be told apart from a kernel refusal.
- `vlan=<name>:<parent>`, the id taken from the name as dracut does (vlan0005, vlan5,
  eth0.0005, eth0.5).
- `bridge=<name>:<ports>`, ports comma-separated; `bridge` alone is `br0:eth0`.

`order_links` then checks that the links form a stack under the interface that gets the
addresses, and orders them bottom first, as the bring-up creates them.
"""

from __future__ import annotations

import ipaddress
import logging
import re

from ..errors import KdumpError
from .plan import VirtualLink

log = logging.getLogger("kdump-agent")

BOND_MODES = ("balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad", "balance-tlb",
              "balance-alb")
# The kernel's bonding options (drivers/net/bonding/bond_options.c) that take a number.
_NUMERIC_BOND_OPTIONS = frozenset({
    "miimon", "updelay", "downdelay", "use_carrier", "arp_interval", "min_links", "all_slaves_active",
    "num_grat_arp", "num_unsol_na", "resend_igmp", "lp_interval", "packets_per_slave",
    "tlb_dynamic_lb", "ad_actor_sys_prio", "ad_user_port_key", "peer_notif_delay", "coupled_control",
    "missed_max",
})
# The others, whose words the kernel checks when they are written.
_WORD_BOND_OPTIONS = frozenset({
    "mode", "arp_ip_target", "arp_validate", "arp_all_targets", "primary", "primary_reselect",
    "fail_over_mac", "xmit_hash_policy", "lacp_rate", "lacp_active", "ad_select", "ad_actor_system",
    "ns_ip6_target",
})
BOND_OPTIONS = _NUMERIC_BOND_OPTIONS | _WORD_BOND_OPTIONS
# Options that name a slave: the bring-up puts the capture kernel's name for that NIC there.
SLAVE_OPTIONS = ("primary",)
_DEFAULT_BOND = "bond0:eth0,eth1:mode=balance-rr"
_DEFAULT_BRIDGE = "br0:eth0"
_INTERFACE_NAME = re.compile(r"^[^\s/:,=]{1,15}$")
# Names only a virtual link has: a member called so must be one of the plan's links.
_VIRTUAL_NAME = re.compile(r"^(bond|team|br|vlan|virbr)\d+$|\.\d+$")


def parse_bond(value: str) -> VirtualLink:
    """One `bond=` value."""
    name = f"bond={value}"
    fields = (value or _DEFAULT_BOND).split(":")
    if len(fields) > 4:
        raise KdumpError(f"{name}: expected bond=<name>[:<slaves>[:<options>[:<mtu>]]]")
    bond = _interface(name, fields[0])
    slaves = _members(name, fields[1]) if len(fields) > 1 else ("eth0", "eth1")
    options = _bond_options(name, fields[2] if len(fields) > 2 else "")
    mtu = mtu_value(name, fields[3]) if len(fields) > 3 and fields[3] else None
    return VirtualLink(kind="bond", name=bond, members=slaves, options=options, mtu=mtu)


def parse_vlan(value: str) -> VirtualLink:
    """One `vlan=<name>:<parent>` value."""
    name = f"vlan={value}"
    vlan, sep, parent = value.partition(":")
    if not sep or not vlan or not parent or ":" in parent:
        raise KdumpError(f"{name}: expected vlan=<name>:<parent>")
    return VirtualLink(kind="vlan", name=_interface(name, vlan), members=(_interface(name, parent),),
                       options=(("id", str(vlan_id(name, vlan))),))


def parse_bridge(value: str) -> VirtualLink:
    """One `bridge=<name>:<ports>` value."""
    name = f"bridge={value}"
    bridge, sep, ports = (value or _DEFAULT_BRIDGE).partition(":")
    if not sep or not ports:
        raise KdumpError(f"{name}: expected bridge=<name>:<port>[,<port>...]")
    return VirtualLink(kind="bridge", name=_interface(name, bridge), members=_members(name, ports))


def vlan_id(name: str, vlan: str) -> int:
    """The id in a VLAN's name, as dracut's parse-vlan.sh reads it: vlan<id> or <parent>.<id>."""
    match = re.fullmatch(r"vlan0*(\d+)", vlan) or re.fullmatch(r".+\.0*(\d+)", vlan)
    if match is None:
        raise KdumpError(f"{name}: the VLAN id comes from the name: vlan<id> or <parent>.<id>")
    number = int(match.group(1))
    if not 1 <= number <= 4094:
        raise KdumpError(f"{name}: VLAN id {number} is not in 1-4094")
    return number


def mtu_value(name: str, text: str) -> int:
    if not text.isdigit() or not 68 <= int(text) <= 65535:
        raise KdumpError(f"{name}: {text!r} is not an MTU (68-65535)")
    return int(text)


def _interface(name: str, text: str) -> str:
    if not _INTERFACE_NAME.match(text):
        raise KdumpError(f"{name}: {text!r} is not an interface name")
    return text


def _members(name: str, text: str) -> tuple[str, ...]:
    members = tuple(_interface(name, member) for member in text.split(","))
    if len(set(members)) != len(members):
        raise KdumpError(f"{name}: a member is named twice")
    return members


def _bond_options(name: str, text: str) -> tuple[tuple[str, str], ...]:
    """The options as (sysfs name, value), mode first (named, not numbered) and defaulted to
    the kernel's balance-rr; several arp_ip_target joined as the kernel's file lists them."""
    options: dict[str, str] = {}
    for word in filter(None, text.split(",")):
        key, sep, value = word.partition("=")
        if not sep or not value:
            raise KdumpError(f"{name}: option {word!r} is not <option>=<value>")
        if key not in BOND_OPTIONS:
            raise KdumpError(f"{name}: {key} is not a bonding option")
        if key in _NUMERIC_BOND_OPTIONS and not value.isdigit():
            raise KdumpError(f"{name}: {key}={value} is not a number")
        if key == "mode":
            value = bond_mode(name, value)
        if key == "arp_ip_target":
            value = " ".join([*options.get(key, "").split(), *_addresses(name, value)])
        elif key in options:
            raise KdumpError(f"{name}: option {key} is given twice")
        options[key] = value
    mode = options.pop("mode", "balance-rr")
    return (("mode", mode), *options.items())


def bond_mode(name: str, value: str) -> str:
    """A bonding mode by name or number, as its name."""
    if value.isdigit() and int(value) < len(BOND_MODES):
        return BOND_MODES[int(value)]
    if value not in BOND_MODES:
        raise KdumpError(f"{name}: mode {value} is not a bonding mode ({', '.join(BOND_MODES)})")
    return value


def _addresses(name: str, text: str) -> list[str]:
    """arp_ip_target's IPv4 addresses (dracut lets `;` separate several)."""
    found = []
    for part in text.split(";"):
        try:
            found.append(str(ipaddress.IPv4Address(part)))
        except ValueError:
            raise KdumpError(f"{name}: arp_ip_target {part!r} is not an IPv4 address") from None
    return found


def order_links(links: list[VirtualLink], top: str) -> tuple[VirtualLink, ...]:
    """The links under `top` (the interface that gets the addresses), bottom first.

    Every member is either one of the links or a physical NIC; a name only a virtual link
    has (bond0, br0, vlan5, eth0.5) must be declared. A slave or port belongs to one link
    only, and nothing is its own member. Links that do not lead to `top` are not built:
    kdump-agent brings up one path to the server.
    """
    by_name: dict[str, VirtualLink] = {}
    for link in links:
        if link.name in by_name:
            raise KdumpError(f"{link.kind}={link.name}: {link.name} is declared twice")
        by_name[link.name] = link
    _check_name(top, by_name, f"the interface {top}")
    for link in links:
        if top in link.members and link.kind != "vlan":
            raise KdumpError(f"the interface {top} is a member of {link.kind}={link.name}: "
                             f"put ip= on {link.name}")
    ordered: dict[str, VirtualLink] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        link = by_name.get(name)
        if link is None or name in ordered:
            return
        if name in path:
            raise KdumpError(f"{link.kind}={name}: the links form a loop ({' > '.join([*path, name])})")
        for member in link.members:
            _check_name(member, by_name, f"{link.kind}={name}: member {member}")
            visit(member, (*path, name))
        ordered[name] = link

    visit(top, ())
    chosen = tuple(ordered.values())
    _check_owners(chosen)
    unused = [link.name for link in links if link.name not in ordered]
    if unused:
        log.warning("network: %s not under %s, which gets the addresses: not built", ", ".join(unused), top)
    return chosen


def _check_name(member: str, by_name: dict[str, VirtualLink], what: str) -> None:
    if member not in by_name and _VIRTUAL_NAME.search(member):
        raise KdumpError(f"{what} is not declared (no bond=, vlan= or bridge= names it), and a NIC "
                         f"would not be called so")


def _check_owners(links: tuple[VirtualLink, ...]) -> None:
    """A bond's slave or a bridge's port is used by that link only (a VLAN parent may carry
    several VLANs, but not also be enslaved)."""
    users: dict[str, list[VirtualLink]] = {}
    for link in links:
        for member in link.members:
            users.setdefault(member, []).append(link)
    for member, using in users.items():
        enslaving = [link for link in using if link.kind != "vlan"]
        if enslaving and len(using) > 1:
            names = " and ".join(f"{link.kind}={link.name}" for link in using)
            raise KdumpError(f"{member} is a member of both {names}")
