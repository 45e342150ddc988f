"""NETWORK_UP's work in the capture kernel: configure the plan's NIC until the server is routed.

`bring_up` works through the steps below against one deadline; each step may use what is
left of it and an overrun names the step. Find the link (by MAC when known: the driver
may still be loading, so it is waited for), set the MTU if one is given, set it up, wait
for carrier, sleep `link_delay` (kdump.conf: spanning-tree ports pass no traffic for a
while after the link comes up), add the addresses and the default route or run DHCP, and
finally wait until the kernel has a route to the target: "link up" comes too early on
some NICs, which is why RHEL's kdump waits for the route too.

Its boundaries to the machine are parameters: `rtnetlink` (the kernel's routing socket)
and `lease` (pyroute2's DHCP client), so tests hand in fakes. It also writes resolv.conf,
when asked to, for the name servers it configured.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from ..errors import KdumpError
from .cmdline import ipv4
from .dhcp import Addressing, Budget, ObtainLease, dhcp_lease
from .plan import NetworkPlan
from .rtnetlink import (
    ARPHRD_ETHER,
    IFF_DORMANT,
    IFF_LOWER_UP,
    OpenRtnetlink,
    open_rtnetlink,
    request,
    route_to,
)

log = logging.getLogger("kdump-agent")

POLL_SECONDS = 0.1

T = TypeVar("T")


@dataclass(frozen=True)
class _Link:
    index: int
    name: str
    mac: str


def bring_up(
    plan: NetworkPlan,
    target_address: str | None,
    *,
    link_delay: float,
    deadline: float,
    resolv_conf: str | None = None,
    rtnetlink: OpenRtnetlink = open_rtnetlink,
    lease: ObtainLease = dhcp_lease,
) -> str:
    """Bring up the plan's NIC until the kernel routes to target_address; a journal note.

    `deadline` is the seconds the whole bring-up may take; any step that would run past it
    raises KdumpError naming the step. /etc/resolv.conf (or whatever `resolv_conf` names) is
    written only when that path is given. Without a target address (a host name not yet
    resolved) the route is not waited for here: the caller resolves the name through the
    servers just written, then calls wait_for_route.
    """
    target = ipv4(target_address, "target address") if target_address else None
    budget = Budget(deadline)
    with rtnetlink() as ipr:
        link = _find_link(ipr, plan, budget)
        if plan.mtu is not None:
            request(f"setting MTU {plan.mtu} on {link.name}", ipr.link, "set", index=link.index,
                    mtu=plan.mtu)
        request(f"setting {link.name} up", ipr.link, "set", index=link.index, state="up")
        _wait_for(budget, f"carrier on {link.name}", lambda: _link_ready(ipr, link.index))
        _link_delay(link_delay, budget)
        if plan.dhcp:
            leased = lease(link.name, budget, plan.hostname)
            addressing = replace(leased, dns=leased.dns or plan.dns)  # the lease's DNS, else the plan's
        else:
            addressing = Addressing(plan.addresses, plan.gateway, plan.dns)
        _configure(ipr, link, addressing)
        route = _route_note(ipr, target, budget) if target else ""
    if resolv_conf is not None and addressing.dns:
        write_resolv_conf(resolv_conf, addressing.dns)
    how = "via DHCP" if plan.dhcp else "static"
    return f"{link.name} ({link.mac}) {', '.join(addressing.addresses)} {how}{route}"


def wait_for_route(target_address: str, deadline: float, *,
                   rtnetlink: OpenRtnetlink = open_rtnetlink) -> str:
    """Wait until the kernel routes to target_address; `, route to ...` for the journal."""
    target = ipv4(target_address, "target address")
    with rtnetlink() as ipr:
        return _route_note(ipr, target, Budget(deadline))


def _route_note(ipr: Any, target: str, budget: Budget) -> str:
    oif, gateway = _wait_for(budget, f"a route to {target}", lambda: _route_via(ipr, target))
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


def _wait_for(budget: Budget, what: str, probe: Callable[[], tuple[T | None, str]]) -> T:
    """Poll probe until it returns a value; it says why not otherwise, for the error."""
    while True:
        value, reason = probe()
        if value is not None:
            return value
        if budget.left() <= 0:
            raise budget.overrun(what, reason)
        time.sleep(min(POLL_SECONDS, budget.left()))


def _find_link(ipr: Any, plan: NetworkPlan, budget: Budget) -> _Link:
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


def _link_delay(seconds: float, budget: Budget) -> None:
    if seconds <= 0:
        return
    if seconds > budget.left():
        raise KdumpError(f"link_delay {seconds:g} s does not fit in the {budget.left():.1f} s left of the "
                         f"{budget.seconds:g} s network deadline")
    log.info("network: link_delay, waiting %g s", seconds)
    time.sleep(seconds)


def _configure(ipr: Any, link: _Link, addressing: Addressing) -> None:
    """Add the addresses (replacing any equal ones) and the default route via the gateway."""
    for cidr in addressing.addresses:
        interface = ipaddress.IPv4Interface(cidr)
        extra = {}
        if interface.network.prefixlen < 31:
            extra["broadcast"] = str(interface.network.broadcast_address)
        request(f"adding {cidr} to {link.name}", ipr.addr, "replace", index=link.index,
                address=str(interface.ip), prefixlen=interface.network.prefixlen, **extra)
    if addressing.gateway:
        request(f"adding the default route via {addressing.gateway} on {link.name}", ipr.route,
                "replace", dst="0.0.0.0/0", gateway=addressing.gateway, oif=link.index)


def _route_via(ipr: Any, target: str) -> tuple[tuple[int, str | None] | None, str]:
    """(output interface, gateway) of the kernel's route to target, or why there is none."""
    route, why_not = route_to(ipr, target)
    if route is None:
        return None, why_not
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
