"""DHCPv4 for the capture kernel's NIC, and what every lease and bring-up step shares.

`Budget` is what is left of NETWORK_UP's one deadline: each step of a bring-up (finding the
links, carrier, DAD, router advertisements, a DHCP or DHCPv6 exchange, the route) takes
from it, and an overrun names the step. `Addressing` is what goes on the top link: the
plan's static addresses, or a lease.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ..errors import KdumpError
from . import rtnetlink

log = logging.getLogger("kdump-agent")

T = TypeVar("T")


@dataclass(frozen=True)
class Addressing:
    """What goes on the link: the plan's own, or what a DHCP server leased."""

    addresses: tuple[str, ...]  # CIDR
    gateway: str | None
    dns: tuple[str, ...]


class Budget:
    """What is left of one deadline, shared by the steps of a bring-up (the DHCP client's too)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def overrun(self, what: str, detail: str) -> KdumpError:
        return KdumpError(f"{what}: not done within the {self.seconds:g} s network deadline"
                          f"{' (' + detail + ')' if detail else ''}")


# Obtains a DHCP lease for an interface within the budget, asking with the given host name.
ObtainLease = Callable[[str, Budget, str | None], Addressing]


def dhcp_lease(interface: str, budget: Budget, hostname: str | None) -> Addressing:
    """One DHCPv4 lease for interface from pyroute2's client, within the budget.

    The client only asks (hooks none, no lease file, no signal handlers: we run in a worker
    thread; no DHCPRELEASE on the way out: we keep the address); the caller configures the
    address it returns. The lease is not renewed: it has to outlast the dump.
    """
    import asyncio

    rtnetlink.import_pyroute2()
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

    async def obtain() -> Addressing:
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
        return Addressing(addresses=(f"{lease.ip}/{mask}",), gateway=routers[0] if routers else None,
                           dns=tuple(servers))

    return asyncio.run(obtain())


