"""How the capture kernel reaches its server: the links to build and the addresses to put on top.

One shape for all three sources of a plan (the command line, the host's record, the DHCP
fallback), so the bring-up has one input:

- `links`: the virtual links to create, bottom first (a bond before the VLAN on it, a VLAN
  before the bridge over it). Their members are either other links of the plan or physical
  NICs. A plan with no links is today's single NIC.
- `nic_macs`: the physical NICs the plan names, with their MACs where known (`ifname=`, the
  record). The capture kernel may name a NIC differently from the host (no udev rename in
  the initramfs), so a NIC with a known MAC is found by it; the plan's name is only a label.
- `interface`: the link that gets the addresses (the top of the stack, or the NIC itself),
  with `mac` when it is a physical NIC.
- IPv4: DHCP (`dhcp`), static (IPv4 CIDRs in `addresses`, `gateway`), or neither
  (IPv6 only). IPv6: `ipv6` is None (none), "static" (IPv6 CIDRs in `addresses`,
  `gateway6`), "auto6" (SLAAC: the kernel configures from router advertisements) or
  "dhcp6" (a DHCPv6 lease, routes from router advertisements). Both may be set: dual stack.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

# The kinds of virtual link we build. Anything else on the way to the server (team, macvlan,
# vxlan, a tunnel, ...) is refused when the image is built.
LINK_MODULES = {"bond": "bonding", "vlan": "8021q", "bridge": "bridge"}  # the module each kind needs
LINK_KINDS = tuple(LINK_MODULES)
IPV6_METHODS = ("static", "auto6", "dhcp6")


@dataclass(frozen=True)
class VirtualLink:
    """A link the capture kernel creates: a bond, a VLAN or a bridge.

    `members`: a bond's slaves or a bridge's ports (bottom-most first), a VLAN's one parent.
    `options`: a bond's options as the kernel's sysfs names and text values, in the order
    they are to be written ("mode" first: the others depend on it), e.g.
    (("mode", "active-backup"), ("miimon", "100"), ("primary", "eth0")); a VLAN's
    (("id", "10"),). `mac`, when known (the record), is set on the new link, so a DHCP
    server or a switch sees the host's address.
    """

    kind: str
    name: str
    members: tuple[str, ...]
    options: tuple[tuple[str, str], ...] = ()
    mac: str | None = None
    mtu: int | None = None

    def option(self, name: str) -> str | None:
        """One option's value, or None when the plan does not set it."""
        return next((value for key, value in self.options if key == name), None)

    @property
    def vlan_id(self) -> int:
        """A VLAN's 802.1Q id (1-4094)."""
        value = self.option("id")
        assert self.kind == "vlan" and value is not None, self
        return int(value)


@dataclass(frozen=True)
class NetworkPlan:
    """How the capture kernel reaches the target; see the module's docstring."""

    interface: str | None
    mac: str | None
    dhcp: bool
    addresses: tuple[str, ...]  # static CIDRs, IPv4 and IPv6, e.g. "192.168.1.10/24", "fd00::5/64"
    gateway: str | None  # IPv4
    dns: tuple[str, ...]  # IPv4 and IPv6 servers
    hostname: str | None
    mtu: int | None = None
    ipv6: str | None = None  # None, or one of IPV6_METHODS
    gateway6: str | None = None
    links: tuple[VirtualLink, ...] = ()
    nic_macs: tuple[tuple[str, str], ...] = field(default=())  # (name, MAC) of physical NICs

    @property
    def ipv4_addresses(self) -> tuple[str, ...]:
        return tuple(cidr for cidr in self.addresses if ":" not in cidr)

    @property
    def ipv6_addresses(self) -> tuple[str, ...]:
        return tuple(cidr for cidr in self.addresses if ":" in cidr)

    @property
    def has_ipv4(self) -> bool:
        return self.dhcp or bool(self.ipv4_addresses)

    def link(self, name: str) -> VirtualLink | None:
        """The plan's virtual link called name; None for a physical NIC."""
        return next((link for link in self.links if link.name == name), None)

    def nics(self) -> tuple[str, ...]:
        """The physical NICs under the plan, by the plan's names: every member that is not one
        of its links, or the interface itself when the plan has no links."""
        if not self.links:
            return (self.interface,) if self.interface else ()
        names = {link.name for link in self.links}
        found: dict[str, None] = {}
        for link in self.links:
            for member in link.members:
                if member not in names:
                    found[member] = None
        return tuple(found)

    def mac_of(self, nic: str) -> str | None:
        """The MAC the plan knows for a physical NIC; None when it is found by name."""
        if nic == self.interface and self.mac:
            return self.mac
        return next((mac for name, mac in self.nic_macs if name == nic), None)

    def modules(self) -> tuple[str, ...]:
        """The kernel modules the plan's links need (mkinitrd packs them, and no others)."""
        return tuple(dict.fromkeys(LINK_MODULES[link.kind] for link in self.links))


def is_ipv6(address: str) -> bool:
    """Whether address (bare or CIDR) is IPv6."""
    return ipaddress.ip_interface(address).version == 6
