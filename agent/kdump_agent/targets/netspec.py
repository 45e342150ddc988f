"""How kdump.conf names a dump server: the host part of `ssh` and `nfs` targets, and the NFS spec.

One parser per spec kind, shared by check-config and mkinitrd (config.py) and LOAD_CONFIG in
the capture kernel (steps/setup.py), so a spec the capture would refuse never passes
check-config. Imports nothing of ours, so config.py can use it without pulling in a target.
"""

from __future__ import annotations

import ipaddress
import re

# A DNS name or an IPv4 address: dot-separated ASCII labels (underscore allowed, as resolvers
# do), none starting with '-', an optional final dot; RFC 1035's length limits.
_LABEL = r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}"
_HOST_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?")
_MAX_NAME = 253

NFS_SHAPE = "must look like host:/export (an IPv6 server goes in brackets: [2001:db8::1]:/export)"


def check_host(what: str, host: str) -> None:
    """Refuse a host that is neither a name, an IPv4 nor an IPv6 address; `what` names the spec."""
    if ":" in host:
        check_ipv6(what, host)
    elif len(host) > _MAX_NAME or not _HOST_NAME.fullmatch(host):
        raise ValueError(f"{what}: {host!r} is not a host name or address")


def check_ipv6(what: str, host: str) -> None:
    """Refuse anything but an IPv6 address, with an optional zone (fe80::1%eth0)."""
    address, percent, zone = host.partition("%")
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        raise ValueError(f"{what}: {host!r} is not an IPv6 address") from None
    if percent and not _HOST_NAME.fullmatch(zone):  # the zone is an interface name
        raise ValueError(f"{what}: {host!r} is not an IPv6 address")


def parse_nfs_spec(spec: str) -> tuple[str, str]:
    """host:/export -> (host, /export); [2001:db8::1]:/export -> (2001:db8::1, /export).

    Raises ValueError naming the spec: the export must be absolute and free of '..', which
    the server would resolve to somewhere the admin did not name.
    """
    what = f"NFS target {spec!r}"
    if spec.startswith("["):
        host, bracket, export = spec[1:].partition("]:")
        if not bracket or not host:
            raise ValueError(f"{what} {NFS_SHAPE}")
        check_ipv6(what, host)
    else:
        host, _, export = spec.partition(":/")
        if not host or not _ or ":" in host:
            raise ValueError(f"{what} {NFS_SHAPE}")
        check_host(what, host)
        export = "/" + export
    if not export.startswith("/"):
        raise ValueError(f"{what} {NFS_SHAPE}")
    if ".." in export.split("/"):
        raise ValueError(f"{what}: the export must not contain '..' components; name the exported "
                         "directory itself")
    return host, export
