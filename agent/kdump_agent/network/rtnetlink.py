"""The kernel's routing socket (pyroute2's IPRoute): the one boundary to the kernel's networking.

`record.record_host_route` (on the host) and `bringup` (in the capture kernel) take an
`OpenRtnetlink` argument defaulting to `open_rtnetlink`, so tests hand them a fake socket.

pyroute2 is imported inside the functions that need it, and only the parts we use: its
package `__init__` imports the whole library (NDB with sqlite3, IPDB, conntrack, ipset,
nl80211, wireguard...), which costs 5 MB of memory (natively, 16.9 MB against 11.7 MB with
the DHCP client) and the import time, both paid in the capture kernel
(`import_pyroute2`). PyInstaller still sees the package; the build must keep asyncio,
multiprocessing and unittest, which the parts we use import.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from .. import randompool
from ..errors import KdumpError

log = logging.getLogger("kdump-agent")

# Kernel constants (linux/if.h, if_addr.h, rtnetlink.h, if_arp.h).
IFF_LOWER_UP = 0x10000
IFF_DORMANT = 0x20000
IFA_F_PERMANENT = 0x80
RTPROT_DHCP = 16
ARPHRD_ETHER = 1
RT_SCOPE_UNIVERSE = 0

# Opens an rtnetlink socket for the length of a `with` block.
OpenRtnetlink = Callable[[], AbstractContextManager[Any]]


@contextmanager
def open_rtnetlink() -> Iterator[Any]:
    """An rtnetlink socket (pyroute2's IPRoute), closed on the way out."""
    import_pyroute2()
    from pyroute2.iproute import IPRoute

    with IPRoute() as ipr:
        yield ipr


# The parts of pyroute2 the agent uses (the DHCP client, pyroute2.dhcp, comes later).
PYROUTE2_PARTS = ("pyroute2.iproute", "pyroute2.netlink.exceptions")


def import_pyroute2() -> None:
    """Import the parts of pyroute2 we use, once, before anything of it is used: under a
    package module made from its spec without running its `__init__` (see the module's
    docstring), with stand-ins for what the binary leaves out, and without waiting for the
    capture kernel's random pool (randompool.import_without_waiting says why)."""
    if "pyroute2" in sys.modules:
        return
    stand_ins_for_unbundled()
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.submodule_search_locations is None:
        raise KdumpError("pyroute2 is not in this kdump-agent binary")
    sys.modules["pyroute2"] = importlib.util.module_from_spec(spec)
    try:
        with randompool.import_without_waiting():
            for part in PYROUTE2_PARTS:
                importlib.import_module(part)
    except BaseException:
        sys.modules.pop("pyroute2", None)
        raise


def stand_ins_for_unbundled() -> None:
    """Let pyroute2 import in a binary built without OpenSSL.

    The parts of pyroute2 we use import ssl (rtnl/probe_msg.py, for a TLS probe, and
    asyncio's optional TLS support) at module level, and use it for neither the rtnetlink
    socket nor the DHCP client. OpenSSL would add megabytes to the binary and the image,
    paid from the crash kernel's reservation (paramiko's cryptography carries its own).
    asyncio is imported first, while `import ssl` still fails, so it takes its no-SSL path;
    then a placeholder whose every attribute raises ImportError answers pyroute2's import.
    (sqlite3, which its NDB imports, is never loaded: import_pyroute2 skips the package's
    __init__.)
    """
    if "ssl" in sys.modules:
        return
    try:
        importlib.import_module("ssl")  # a full Python (tests, the host) has it
        return
    except ImportError:
        pass
    import asyncio  # noqa: F401 - before the ssl placeholder, see above

    def missing(attribute: str) -> object:
        raise ImportError(f"ssl.{attribute}: this kdump-agent binary is built without it")

    placeholder = types.ModuleType("ssl", "kdump-agent is built without ssl")
    placeholder.__getattr__ = missing  # type: ignore[method-assign]
    sys.modules["ssl"] = placeholder


def request(what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """One netlink request; a refusal becomes KdumpError saying what was tried."""
    from pyroute2.netlink.exceptions import NetlinkError

    log.info("network: %s", what)
    try:
        return call(*args, **kwargs)
    except NetlinkError as error:
        raise KdumpError(f"{what}: {reason(error)}") from None


def route_to(ipr: Any, target: str) -> tuple[Any | None, str]:
    """The kernel's route to target (a message), or None and why there is none."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        return ipr.route("get", dst=target)[0], ""
    except NetlinkError as error:
        return None, reason(error)


def link_info(message: Any) -> tuple[str | None, Any]:
    """(IFLA_INFO_KIND, IFLA_INFO_DATA) of a link message; (None, None) for a plain NIC."""
    info = message.get("IFLA_LINKINFO")
    if info is None:
        return None, None
    kind = info.get("IFLA_INFO_KIND")
    return (str(kind) if kind else None), info.get("IFLA_INFO_DATA")


def reason(error: Any) -> str:
    """A NetlinkError in words: the errno's text when it carries one."""
    code = getattr(error, "code", None)
    return os.strerror(code) if isinstance(code, int) and code > 0 else str(error)
