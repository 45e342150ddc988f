"""The capture kernel's links of a plan: find its physical NICs, then create its bonds, VLANs and
bridges over them, bottom first, with pyroute2 over netlink.

The plan's names are labels: a NIC with a known MAC is found by it and may have another name
here (no udev rename in the initramfs), so every name the kernel is told (a bond's
`primary`) is translated to the capture kernel's. Bond options go through sysfs
(/sys/class/net/<bond>/bonding/<option>), as dracut writes them: mode first, all of them
before the first slave (the kernel refuses a mode change on a bond with slaves). A bridge
is created with STP off and forward delay 0, so its ports forward at once instead of after
the host's 2 x 15 s of listening and learning.

Everything but the top link is set up here; the caller sets the top's MTU and IPv6 knobs
first, then sets it up.
"""

from __future__ import annotations

import errno
import logging
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from ..errors import KdumpError
from .dhcp import Budget
from .linkargs import SLAVE_OPTIONS
from .plan import LINK_MODULES, NetworkPlan, VirtualLink
from .poll import wait_for
from .rtnetlink import ARPHRD_ETHER, IFF_DORMANT, IFF_LOWER_UP, link_info, reason, request

log = logging.getLogger("kdump-agent")

# Bond options whose value is a list the kernel takes one `+<address>` write at a time.
_LIST_OPTIONS = ("arp_ip_target", "ns_ip6_target")


@dataclass(frozen=True)
class Link:
    """A link as the capture kernel has it."""

    index: int
    name: str
    mac: str


@dataclass(frozen=True)
class Stack:
    """The built links: `top` gets the addresses; `below` are all the others, NICs first;
    `note` describes them for the journal; `stp_overridden` names bridges whose host had
    STP on."""

    top: Link
    below: tuple[Link, ...]
    note: str
    stp_overridden: tuple[str, ...] = ()


def build(ipr: Any, plan: NetworkPlan, budget: Budget, sysfs: Path) -> Stack:
    """Find the plan's NICs and create its links; every link but the top is left up."""
    nics = find_nics(ipr, plan, budget)
    if not plan.links:
        (nic,) = nics.values()
        return Stack(top=nic, below=(), note=f"{nic.name} ({nic.mac})")
    built = dict(nics)
    notes = []
    overridden = []
    for link in plan.links:
        members = [built[member] for member in link.members]
        if link.kind == "bond":
            made = _bond(ipr, link, members, built, sysfs)
            mode = link.option("mode") or "balance-rr"
            notes.append(f"{made.name} ({mode}: {', '.join(member.name for member in members)})")
        elif link.kind == "vlan":
            made = _vlan(ipr, link, members[0])
            notes.append(f"{made.name} (VLAN {link.vlan_id})")
        else:
            made = _bridge(ipr, link, members)
            note = f"{made.name} (bridge: {', '.join(member.name for member in members)}"
            if link.option("stp_state") not in (None, "0"):
                log.warning("network: STP is off on %s in the capture kernel (the host had it on), so "
                            "its ports forward at once", made.name)
                overridden.append(made.name)
                note += "; STP off, the host had it on"
            notes.append(note + ")")
        for member in members:
            request(f"setting {member.name} up", ipr.link, "set", index=member.index, state="up")
        built[link.name] = made
    top_name = plan.interface if plan.interface in built else plan.links[-1].name
    top = built[top_name]
    below = tuple(link for name, link in built.items() if name != top_name)
    return Stack(top=top, below=below, note=" > ".join(notes), stp_overridden=tuple(overridden))


def find_nics(ipr: Any, plan: NetworkPlan, budget: Budget) -> dict[str, Link]:
    """The plan's physical NICs by the plan's names: by MAC when known, else by name, else (a
    plan naming none) the only Ethernet NIC. Waited for: udev may still be loading a driver."""
    names = plan.nics()
    if not names and plan.mac:
        index = wait_for(budget, f"the NIC with MAC {plan.mac}",
                         partial(_lookup, ipr, {"address": plan.mac}))
        return {"": _link(ipr, index)}
    if not names:
        index = wait_for(budget, "an Ethernet NIC", lambda: _only_ethernet(ipr))
        return {"": _link(ipr, index)}
    found = {}
    for nic in names:
        mac = plan.mac_of(nic)
        what, spec = (f"the NIC with MAC {mac} ({nic})", {"address": mac}) if mac else (f"the NIC {nic}",
                                                                                       {"ifname": nic})
        index = wait_for(budget, what, partial(_lookup, ipr, spec))
        found[nic] = _link(ipr, index)
        log.info("network: %s is %s (%s)", nic, found[nic].name, found[nic].mac)
    return found


def link_ready(ipr: Any, index: int) -> tuple[bool | None, str]:
    """Up as dracut's wait_for_if_up sees it: operstate UP, or UNKNOWN with carrier."""
    message = ipr.link("get", index=index)[0]
    state = message.get("IFLA_OPERSTATE")
    flags = int(message["flags"])
    if state == "UP" or (state == "UNKNOWN" and flags & IFF_LOWER_UP and not flags & IFF_DORMANT):
        return True, ""
    return None, f"operstate {state}" + ("" if flags & IFF_LOWER_UP else ", no carrier")


def _bond(ipr: Any, link: VirtualLink, members: list[Link], built: dict[str, Link], sysfs: Path) -> Link:
    bond = _create(ipr, link, kind="bond")
    directory = sysfs / "class" / "net" / bond.name / "bonding"
    for option, value in sorted(link.options, key=lambda option: option[0] != "mode"):
        if option in SLAVE_OPTIONS:
            value = built[value].name if value in built else value
        values = [value]
        if option in _LIST_OPTIONS:
            values = [f"+{word}" for word in re.split(r"[\s,]+", value) if word]
        for text in values:
            _write_option(directory, bond.name, option, text)
    if link.mac:
        request(f"setting {bond.name}'s MAC to {link.mac}", ipr.link, "set", index=bond.index,
                address=link.mac)
    for member in members:
        request(f"setting {member.name} down to enslave it", ipr.link, "set", index=member.index,
                state="down")
        request(f"enslaving {member.name} to {bond.name}", ipr.link, "set", index=member.index,
                master=bond.index)
    _mtu(ipr, link, bond)
    return bond


def _vlan(ipr: Any, link: VirtualLink, parent: Link) -> Link:
    vlan = _create(ipr, link, kind="vlan", link=parent.index, vlan_id=link.vlan_id)
    _mtu(ipr, link, vlan)
    return vlan


def _bridge(ipr: Any, link: VirtualLink, ports: list[Link]) -> Link:
    bridge = _create(ipr, link, kind="bridge", br_stp_state=0, br_forward_delay=0)
    if link.mac:
        request(f"setting {bridge.name}'s MAC to {link.mac}", ipr.link, "set", index=bridge.index,
                address=link.mac)
    for port in ports:
        request(f"adding {port.name} to {bridge.name}", ipr.link, "set", index=port.index,
                master=bridge.index)
    _mtu(ipr, link, bridge)
    return bridge


def _create(ipr: Any, planned: VirtualLink, **spec: Any) -> Link:
    """Create the link (the kernel loads its module by itself: rtnl-link-<kind>).

    A link of that name and kind already there is taken: a built-in bonding driver makes
    bond0 at boot.
    """
    from pyroute2.netlink.exceptions import NetlinkError

    what = f"creating {planned.kind} {planned.name}"
    log.info("network: %s", what)
    try:
        ipr.link("add", ifname=planned.name, **spec)
    except NetlinkError as error:
        if error.code == errno.EEXIST and _kind(ipr, planned.name) == spec["kind"]:
            log.info("network: %s exists already, using it", planned.name)
            made = _link(ipr, ipr.link_lookup(ifname=planned.name)[0])
            request(f"setting {made.name} down", ipr.link, "set", index=made.index, state="down")
            return made
        hint = ""
        if error.code == errno.EOPNOTSUPP:
            hint = (f": the {LINK_MODULES[planned.kind]} module is not in the image "
                    "(or not built for this kernel)")
        raise KdumpError(f"{what}: {reason(error)}{hint}") from None
    indexes = ipr.link_lookup(ifname=planned.name)
    if not indexes:
        raise KdumpError(f"{what}: the kernel reports no such link afterwards")
    return _link(ipr, indexes[0])


def _write_option(directory: Path, bond: str, option: str, value: str) -> None:
    path = directory / option
    log.info("network: %s: %s = %s", bond, option, value)
    try:
        path.write_text(f"{value}\n", encoding="ascii")
    except OSError as error:
        raise KdumpError(f"bond {bond}: setting {option} to {value} ({path}): {error.strerror or error}; "
                         f"the kernel log says why") from None


def _mtu(ipr: Any, link: VirtualLink, made: Link) -> None:
    if link.mtu is not None:
        request(f"setting MTU {link.mtu} on {made.name}", ipr.link, "set", index=made.index, mtu=link.mtu)


def _kind(ipr: Any, name: str) -> str | None:
    indexes = ipr.link_lookup(ifname=name)
    if not indexes:
        return None
    return link_info(ipr.link("get", index=indexes[0])[0])[0]


def _link(ipr: Any, index: int) -> Link:
    message = ipr.link("get", index=index)[0]
    return Link(index=index, name=str(message.get("IFLA_IFNAME")), mac=str(message.get("IFLA_ADDRESS")))


def _lookup(ipr: Any, spec: dict[str, str]) -> tuple[int | None, str]:
    indexes = ipr.link_lookup(**spec)
    return (indexes[0], "") if indexes else (None, "no such link")


def _only_ethernet(ipr: Any) -> tuple[int | None, str]:
    """With no interface named, the NIC is only unambiguous if there is one. Links of a kind
    are no NICs: loading bonding makes a bond0 of its own (max_bonds=1), which is Ethernet too."""
    links = [link for link in ipr.get_links()
             if link["ifi_type"] == ARPHRD_ETHER and link_info(link)[0] is None]
    if len(links) > 1:
        names = ", ".join(str(link.get("IFLA_IFNAME")) for link in links)
        raise KdumpError(f"ip=dhcp names no interface and there are several ({names}): "
                         f"add ifname=<if>:<mac> or use ip=<if>:dhcp")
    return (links[0]["index"], "") if links else (None, "no Ethernet NIC yet")
