"""NETWORK_UP: for NFS and SSH targets, bring up the NIC that reaches the server.

The plan comes from the capture kernel's command line (dracut's `ip=`), else from what
mkinitrd recorded on the host (network.py says how the two combine); with neither, DHCP
on the only Ethernet NIC there is. A server named by host name is resolved after the
link is up, through the name servers of the plan or the DHCP lease; the address mkinitrd
resolved on the host is the fallback, and the one the route is waited for meanwhile.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time

from .. import network, system
from ..context import Capture
from ..errors import KdumpError
from ..network import NetworkPlan

log = logging.getLogger("kdump-agent")

# With no ip= and no record: what a machine with one NIC most likely wants.
FALLBACK_PLAN = NetworkPlan(interface=None, mac=None, dhcp=True, addresses=(), gateway=None, dns=(),
                            hostname=None)


def network_up(capture: Capture, deadline: float) -> str:
    host = capture.destination.server if capture.destination else None
    if host is None:
        return "no network target"
    started = time.monotonic()
    record_text = system.read_text(capture.paths.recorded_network)
    plan = network.choose_plan(system.read_text(capture.paths.cmdline) or "", record_text)
    if plan is None:
        log.warning("no ip= on the kernel command line and no network recorded by mkinitrd: "
                    "trying DHCP on the only Ethernet NIC")
        plan = FALLBACK_PLAN
    recorded = _recorded_address(record_text, host)
    literal = _literal(host)
    link_delay = float(capture.config.link_delay or 0) if capture.config else 0.0
    note = network.bring_up(plan, literal or recorded, link_delay=link_delay, deadline=deadline,
                            resolv_conf=capture.paths.resolv_conf)
    address = literal or _resolved(host, recorded)
    if address != (literal or recorded):
        note += network.wait_for_route(address, max(1.0, deadline - (time.monotonic() - started)))
    capture.dump.server_address = address
    capture.dump.local_address = network.source_address(address)
    return f"{note}; server {host} is {address}" if host != address else note


def _resolved(host: str, recorded: str | None) -> str:
    """The name through today's DNS; the host's answer at mkinitrd time if that fails."""
    try:
        return network.resolve(host)
    except KdumpError as error:
        if recorded is None:
            raise
        log.warning("%s; using %s, its address when the initramfs was built", error, recorded)
        return recorded


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        return None


def _recorded_address(record_text: str | None, host: str) -> str | None:
    """The server's address as mkinitrd resolved it, if the record is about this host."""
    if record_text is None:
        return None
    try:
        record = json.loads(record_text)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("host") not in (None, host):
        return None
    address = record.get("target")
    return address if isinstance(address, str) else None

