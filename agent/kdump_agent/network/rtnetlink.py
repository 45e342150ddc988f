"""The kernel's routing socket (pyroute2's IPRoute): the one boundary to the kernel's networking.

`record.record_host_route` (on the host) and `bringup` (in the capture kernel) take an
`OpenRtnetlink` argument defaulting to `open_rtnetlink`, so tests hand them a fake socket.

pyroute2 is imported inside the functions that need it. Importing it costs about a quarter
of a second (its `__init__` pulls in the whole package, NDB and sqlite3 included, even for
`pyroute2.minimal`), which every other sub-command and every local-disk capture would pay
for nothing. PyInstaller still sees these imports; the build must keep asyncio,
multiprocessing, unittest and sqlite3, which pyroute2 0.9.7 imports unconditionally.
"""

from __future__ import annotations

import importlib
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
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        yield ipr


def import_pyroute2() -> None:
    """Import pyroute2 once, before anything of it is used: with stand-ins for what the
    binary leaves out, and without waiting for the capture kernel's random pool
    (randompool.import_without_waiting says why)."""
    if "pyroute2" in sys.modules:
        return
    stand_ins_for_unbundled()
    with randompool.import_without_waiting():
        importlib.import_module("pyroute2")


def stand_ins_for_unbundled() -> None:
    """Let pyroute2 import in a binary built without OpenSSL and SQLite.

    pyroute2 0.9.7 imports ssl (rtnl/probe_msg.py, for a TLS probe) and sqlite3 (ndb, its
    database of the network state) at module level, and uses neither for the rtnetlink
    socket and the DHCP client we use. OpenSSL and SQLite would add megabytes to the binary
    and its one-file unpack, both paid from the crash kernel's reservation (paramiko's
    cryptography carries its own OpenSSL). asyncio is imported first, while `import ssl`
    still fails, so it takes its no-SSL path; then placeholders whose every attribute
    raises ImportError answer pyroute2's imports.
    """
    for name in ("ssl", "sqlite3"):
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)  # a full Python (tests, the host) has them
            continue
        except ImportError:
            pass
        import asyncio  # noqa: F401 - before the ssl placeholder, see above

        def missing(attribute: str, module: str = name) -> object:
            raise ImportError(f"{module}.{attribute}: this kdump-agent binary is built without it")

        placeholder = types.ModuleType(name, f"kdump-agent is built without {name}")
        placeholder.__getattr__ = missing  # type: ignore[method-assign]
        sys.modules[name] = placeholder


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
