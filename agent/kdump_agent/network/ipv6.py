"""IPv6 on the top link: the kernel's per-interface switches, and the waits for its addresses.

An IPv6 address is not usable while it is tentative: the kernel first checks, by duplicate
address detection (DAD), that no other host has it, and a packet sent from it meanwhile is
dropped. So a static or DHCPv6 address is waited for until DAD passes, SLAAC (auto6) until
a router advertisement has given a global address that passed it, and DHCPv6 starts only
when the link-local address it is sent from has passed it.

The switches are /proc/sys/net/ipv6/conf/<if>/: accept_ra and autoconf for SLAAC (and
accept_ra for DHCPv6, whose routes come from router advertisements), forwarding off (a
forwarding interface ignores them with accept_ra=1). They are written before the link is
set up, so the router solicitation the kernel sends then is answered.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from ..errors import KdumpError
from .dhcp import Addressing, Budget
from .links import Link
from .poll import wait_for
from .rtnetlink import request

log = logging.getLogger("kdump-agent")

# linux/if_addr.h and rtnetlink.h
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
RT_SCOPE_LINK = 253

# Obtains a DHCPv6 lease for an interface (its MAC makes the DUID) within the budget,
# asking with the given host name.
ObtainLease6 = Callable[[str, Budget, str, str | None], Addressing]


def dhcp6_lease(interface: str, budget: Budget, mac: str, hostname: str | None) -> Addressing:
    """The DHCPv6 client (network.dhcp6), imported only when a plan asks for DHCPv6."""
    from . import dhcp6

    return dhcp6.dhcp6_lease(interface, budget, mac, hostname)


def prepare(procfs: Path, interface: str, method: str) -> None:
    """Turn on what the method needs on interface (before it is set up)."""
    conf = procfs / "sys" / "net" / "ipv6" / "conf" / interface
    if not conf.is_dir():
        raise KdumpError(f"IPv6 on {interface}: {conf} is missing: this kernel runs without IPv6 "
                         f"(ipv6.disable=1 on the command line?)")
    settings = [("disable_ipv6", "0")]
    if method in ("auto6", "dhcp6"):
        settings += [("forwarding", "0"), ("accept_ra", "1")]
    if method == "auto6":
        settings.append(("autoconf", "1"))
    for name, value in settings:
        try:
            (conf / name).write_text(f"{value}\n", encoding="ascii")
        except OSError as error:
            raise KdumpError(f"IPv6 on {interface}: setting {conf / name} to {value}: "
                             f"{error.strerror or error}") from None


def add_addresses(ipr: Any, link: Link, budget: Budget, cidrs: tuple[str, ...]) -> None:
    """Add the IPv6 CIDRs to link and wait until each has passed DAD."""
    for cidr in cidrs:
        interface = ipaddress.IPv6Interface(cidr)
        request(f"adding {cidr} to {link.name}", ipr.addr, "replace", index=link.index,
                address=str(interface.ip), prefixlen=interface.network.prefixlen)
    for cidr in cidrs:
        address = str(ipaddress.IPv6Interface(cidr).ip)
        wait_for(budget, f"DAD for {address} on {link.name}", partial(_passed, ipr, link, address))


def add_default_route(ipr: Any, link: Link, gateway: str) -> None:
    """The default route via gateway (a link-local one too: the output interface is given)."""
    request(f"adding the default route via {gateway} on {link.name}", ipr.route, "replace", dst="::/0",
            gateway=gateway, oif=link.index, family=socket.AF_INET6)


def wait_for_slaac(ipr: Any, link: Link, budget: Budget) -> str:
    """The global address a router advertisement gave link, once it has passed DAD (CIDR)."""
    return wait_for(budget, f"a SLAAC address on {link.name} (router advertisement)",
                    lambda: _usable(ipr, link, global_scope=True))


def wait_for_link_local(ipr: Any, link: Link, budget: Budget) -> str:
    """link's fe80:: address once it has passed DAD (CIDR): DHCPv6 is sent from it."""
    return wait_for(budget, f"the link-local address of {link.name}",
                    lambda: _usable(ipr, link, global_scope=False))


def _addresses(ipr: Any, link: Link) -> list[tuple[str, int, int, int]]:
    """(address, prefix length, flags, scope) of link's IPv6 addresses."""
    found = []
    for message in ipr.get_addr(index=link.index, family=socket.AF_INET6):
        address = message.get("IFA_ADDRESS")
        flags = message.get("IFA_FLAGS")
        found.append((str(ipaddress.IPv6Address(address)), int(message["prefixlen"]),
                      int(flags if flags is not None else message["flags"]), int(message["scope"])))
    return found


def _passed(ipr: Any, link: Link, address: str) -> tuple[bool | None, str]:
    for found, _, flags, _ in _addresses(ipr, link):
        if found != address:
            continue
        if flags & IFA_F_DADFAILED:
            raise KdumpError(f"{address} on {link.name}: duplicate address detection failed: another "
                             f"host on the link has this address")
        if flags & IFA_F_TENTATIVE:
            return None, "tentative"
        return True, ""
    return None, "the address is gone (the kernel dropped it)"


def _usable(ipr: Any, link: Link, *, global_scope: bool) -> tuple[str | None, str]:
    tentative = []
    for address, prefix, flags, scope in _addresses(ipr, link):
        if (scope == 0) != global_scope or (not global_scope and scope != RT_SCOPE_LINK):
            continue
        if flags & IFA_F_DADFAILED:
            continue
        if flags & IFA_F_TENTATIVE:
            tentative.append(address)
            continue
        return f"{address}/{prefix}", ""
    if tentative:
        return None, f"{', '.join(tentative)} tentative (DAD)"
    return None, "no router advertisement with an autonomous prefix yet" if global_scope else "none yet"
