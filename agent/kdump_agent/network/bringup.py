"""NETWORK_UP's work in the capture kernel: build the plan's links until the server is routed.

`bring_up` works through the steps below against one deadline (one `Budget`); each step
may use what is left of it and an overrun names the step. Find the physical NICs (by MAC
when known: the driver may still be loading, so they are waited for) and create the
bonds, VLANs and bridges over them (`links`), set the top link's MTU and IPv6 switches
(`ipv6`), set it up, wait for carrier (a bond's or bridge's follows its members'), sleep
`link_delay` (kdump.conf: spanning-tree ports pass no traffic for a while after the link
comes up), configure IPv4 (static, or a DHCP lease) and IPv6 (static after DAD, SLAAC, or
a DHCPv6 lease), and finally wait until the kernel has a route to the target: "link up"
comes too early on some NICs, which is why RHEL's kdump waits for the route too.

Its boundaries to the machine are parameters: `rtnetlink` (the kernel's routing socket),
`lease` and `lease6` (the DHCP clients), `sysfs` and `procfs` (bonding options and IPv6
switches), so tests hand in fakes. It also writes resolv.conf, when asked to, for the
name servers it configured.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import KdumpError
from . import ipv6, links
from .cmdline import ip_address
from .dhcp import Addressing, Budget, ObtainLease, dhcp_lease
from .ipv6 import ObtainLease6, dhcp6_lease
from .plan import NetworkPlan
from .poll import wait_for
from .rtnetlink import OpenRtnetlink, open_rtnetlink, request, route_to

log = logging.getLogger("kdump-agent")

_HOW_V6 = {"static": "static", "auto6": "SLAAC", "dhcp6": "via DHCPv6"}


def bring_up(
    plan: NetworkPlan,
    target_address: str | None,
    *,
    link_delay: float,
    deadline: float,
    resolv_conf: str | None = None,
    rtnetlink: OpenRtnetlink = open_rtnetlink,
    lease: ObtainLease = dhcp_lease,
    lease6: ObtainLease6 = dhcp6_lease,
    sysfs: Path = Path("/sys"),
    procfs: Path = Path("/proc"),
) -> str:
    """Bring up the plan's links until the kernel routes to target_address; a journal note.

    `deadline` is the seconds the whole bring-up may take; any step that would run past it
    raises KdumpError naming the step. /etc/resolv.conf (or whatever `resolv_conf` names) is
    written only when that path is given. Without a target address (a host name not yet
    resolved) the route is not waited for here: the caller resolves the name through the
    servers just written, then calls wait_for_route. `sysfs` and `procfs` are where the
    bonding options and the IPv6 switches are written.
    """
    target = ip_address(target_address, "target address") if target_address else None
    budget = Budget(deadline)
    started = time.monotonic()
    with rtnetlink() as ipr:
        stack = links.build(ipr, plan, budget, sysfs)
        top = stack.top
        built = plan.link(plan.interface) if plan.interface else None
        if plan.mtu is not None and (built is None or built.mtu != plan.mtu):  # links set their own
            request(f"setting MTU {plan.mtu} on {top.name}", ipr.link, "set", index=top.index, mtu=plan.mtu)
        if plan.ipv6:
            ipv6.prepare(procfs, top.name, plan.ipv6)
        request(f"setting {top.name} up", ipr.link, "set", index=top.index, state="up")
        wait_for(budget, f"carrier on {top.name}", lambda: _stack_ready(ipr, stack))
        _link_delay(link_delay, budget)
        parts = []
        dns: list[str] = list(plan.dns)
        if plan.has_ipv4:
            addressing = _ipv4(ipr, plan, top, budget, lease)
            if addressing.dns:  # a lease's name servers replace the plan's
                dns = list(addressing.dns)
            how = "via DHCP" if plan.dhcp else "static"
            parts.append(f"{', '.join(addressing.addresses)} {how}")
        if plan.ipv6:
            addresses, servers = _ipv6(ipr, plan, top, budget, lease6)
            dns += servers
            parts.append(f"{', '.join(addresses)} {_HOW_V6[plan.ipv6]}")
        route = _route_note(ipr, target, budget) if target else ""
    servers = tuple(dict.fromkeys(dns))
    if resolv_conf is not None and servers:
        write_resolv_conf(resolv_conf, servers)
    took = f", up in {time.monotonic() - started:.1f} s" if plan.links else ""
    return f"{stack.note}{took} {', '.join(parts)}{route}"


def _ipv4(ipr: Any, plan: NetworkPlan, top: links.Link, budget: Budget, lease: ObtainLease) -> Addressing:
    """The IPv4 addressing on top: a DHCP lease or the plan's, configured."""
    if plan.dhcp:
        addressing = lease(top.name, budget, plan.hostname)
    else:
        addressing = Addressing(plan.ipv4_addresses, plan.gateway, ())  # the plan's DNS is the caller's
    _configure(ipr, top, addressing)
    return addressing


def _ipv6(ipr: Any, plan: NetworkPlan, top: links.Link, budget: Budget,
          lease6: ObtainLease6) -> tuple[list[str], tuple[str, ...]]:
    """The IPv6 addresses on top (CIDRs) and the lease's name servers."""
    if plan.ipv6 == "static":
        ipv6.add_addresses(ipr, top, budget, plan.ipv6_addresses)
        if plan.gateway6:
            ipv6.add_default_route(ipr, top, plan.gateway6)
        return list(plan.ipv6_addresses), ()
    if plan.ipv6 == "auto6":
        return [ipv6.wait_for_slaac(ipr, top, budget)], ()
    ipv6.wait_for_link_local(ipr, top, budget)
    leased = lease6(top.name, budget, top.mac, plan.hostname)
    ipv6.add_addresses(ipr, top, budget, leased.addresses)
    if leased.gateway:
        ipv6.add_default_route(ipr, top, leased.gateway)
    return list(leased.addresses), leased.dns


def wait_for_route(target_address: str, deadline: float, *,
                   rtnetlink: OpenRtnetlink = open_rtnetlink) -> str:
    """Wait until the kernel routes to target_address (IPv4 or IPv6); `, route to ...` for the journal."""
    target = ip_address(target_address, "target address")
    with rtnetlink() as ipr:
        return _route_note(ipr, target, Budget(deadline))


def _route_note(ipr: Any, target: str, budget: Budget) -> str:
    oif, gateway = wait_for(budget, f"a route to {target}", lambda: _route_via(ipr, target))
    via = f" via {gateway}" if gateway else ""
    return f", route to {target}{via} dev {_link_name(ipr, oif)}"


def source_address(target_address: str) -> str:
    """The address this machine sends from to reach target_address (no packet is sent):
    the `<host-ip>` in the dump directory's name, and NFSv4's clientaddr."""
    family = socket.AF_INET6 if ":" in target_address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((target_address, 9))
        return str(probe.getsockname()[0])


def address_families(plan: NetworkPlan) -> tuple[int, ...]:
    """The address families the plan configures, for `resolve`: a v6-only capture has no
    IPv4 route, so an A record would lead nowhere."""
    families = ((socket.AF_INET,) if plan.has_ipv4 else ()) + ((socket.AF_INET6,) if plan.ipv6 else ())
    return families or (socket.AF_INET, socket.AF_INET6)


def resolve(host: str, families: Iterable[int] = (socket.AF_INET, socket.AF_INET6)) -> str:
    """An address for host: itself if it is one (IPv6 compressed), else the resolver's first
    answer among the families' (A, AAAA or both, in the resolver's order).

    The name goes to getaddrinfo() as ASCII bytes: the frozen binary has no idna codec.
    """
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    wanted = tuple(families)
    family = wanted[0] if len(wanted) == 1 else socket.AF_UNSPEC
    try:
        answers = socket.getaddrinfo(host.encode("ascii"), None, family, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise KdumpError(f"cannot resolve {host}: {error}") from None
    usable = [answer for answer in answers if answer[0] in wanted]
    if not usable:
        kinds = " or ".join("IPv6" if family == socket.AF_INET6 else "IPv4" for family in wanted)
        raise KdumpError(f"cannot resolve {host}: no {kinds} address")
    return str(ipaddress.ip_address(str(usable[0][4][0]).partition("%")[0]))


def _stack_ready(ipr: Any, stack: links.Stack) -> tuple[bool | None, str]:
    """The top link's carrier (a bond's or a bridge's follows its members'); when it is not
    there yet, the reason names the state of every link below too."""
    ready, why = links.link_ready(ipr, stack.top.index)
    if ready or not stack.below:
        return ready, why
    below = "; ".join(f"{link.name} {links.link_ready(ipr, link.index)[1] or 'up'}" for link in stack.below)
    return None, f"{why}; {below}"


def _link_delay(seconds: float, budget: Budget) -> None:
    if seconds <= 0:
        return
    if seconds > budget.left():
        raise KdumpError(f"link_delay {seconds:g} s does not fit in the {budget.left():.1f} s left of the "
                         f"{budget.seconds:g} s network deadline")
    log.info("network: link_delay, waiting %g s", seconds)
    time.sleep(seconds)


def _configure(ipr: Any, link: links.Link, addressing: Addressing) -> None:
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
