"""NETWORK_UP: for NFS and SSH targets, bring up the NIC that reaches the server.

The plan comes from the capture kernel's command line (dracut's `ip=`), else from what
mkinitrd recorded on the host (network.cmdline.choose_plan says how the two combine); with
neither, DHCP on the only Ethernet NIC there is. A damaged record fails the state only
when it is the only source of a plan. A server named by host name is resolved after the
link is up, through the name servers of the plan or the DHCP lease; the address mkinitrd
resolved on the host is the fallback, and the one the route is waited for meanwhile.
"""

from __future__ import annotations

import ipaddress
import logging
import time

from .. import system
from ..context import Capture
from ..errors import KdumpError
from ..network import bringup
from ..network.cmdline import choose_plan, parse_cmdline
from ..network.plan import NetworkPlan
from ..network.record import HostRecord

log = logging.getLogger("kdump-agent")

# With no ip= and no record: what a machine with one NIC most likely wants.
FALLBACK_PLAN = NetworkPlan(interface=None, mac=None, dhcp=True, addresses=(), gateway=None, dns=(),
                            hostname=None)


def network_up(capture: Capture, deadline: float) -> str:
    host = capture.destination.server if capture.destination else None
    if host is None:
        return "no network target"
    started = time.monotonic()
    cmdline_plan = parse_cmdline(system.read_text(capture.paths.cmdline) or "")
    record = _host_record(system.read_text(capture.paths.recorded_network), needed=cmdline_plan is None)
    plan = choose_plan(cmdline_plan, record.plan() if record else None)
    if plan is None:
        log.warning("no ip= on the kernel command line and no network recorded by mkinitrd: "
                    "trying DHCP on the only Ethernet NIC")
        plan = FALLBACK_PLAN
    recorded = record.address_for(host) if record else None
    literal = _literal(host)
    link_delay = float(capture.config.link_delay or 0) if capture.config else 0.0
    note = bringup.bring_up(plan, literal or recorded, link_delay=link_delay, deadline=deadline,
                            resolv_conf=capture.paths.resolv_conf)
    address = literal or _resolved(host, recorded, bringup.address_families(plan))
    if address != (literal or recorded):
        note += bringup.wait_for_route(address, max(1.0, deadline - (time.monotonic() - started)))
    capture.dump.server_address = address
    capture.dump.local_address = bringup.source_address(address)
    return f"{note}; server {host} is {address}" if host != address else note


def _host_record(text: str | None, *, needed: bool) -> HostRecord | None:
    """The record mkinitrd packed, or None without one.

    A damaged record fails the state only when it is `needed` (the command line gives no
    plan); otherwise it is logged and the command line's plan is used alone.
    """
    if text is None:
        return None
    try:
        return HostRecord.from_json(text)
    except KdumpError as error:
        if needed:
            raise
        log.warning("%s; going by the command line alone", error)
        return None


def _resolved(host: str, recorded: str | None, families: tuple[int, ...]) -> str:
    """The name through today's DNS, among the address families the plan configured (an
    IPv6-only capture must not pick an A record); the host's answer at mkinitrd time if
    that fails."""
    try:
        return bringup.resolve(host, families)
    except KdumpError as error:
        if recorded is None:
            raise
        log.warning("%s; using %s, its address when the initramfs was built", error, recorded)
        return recorded


def _literal(host: str) -> str | None:
    """host itself when it is an IPv4 or IPv6 address (compressed), None for a name."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None
