"""NFS targets: the export mounted by the capture kernel's own NFS client, then used as a
local file system (the dump directory, the collector writing a file, fsync, rename).

The mount is mount(2) with text options, as mount.nfs hands them to the kernel: the
initramfs needs no nfs-utils, and the kernel (since 2.6.23) resolves the MOUNT and NFS
ports through the server's rpcbind itself. `nfs` tries NFSv4 first and falls back to v3;
`nfs4` insists on v4. v3 runs with `nolock`: the capture kernel has no lock daemon, and
no one else writes the dump.

The mount is `soft` with a bounded `timeo`/`retrans`: a server that dies mid-dump makes
the writes fail with EIO within about half a minute, where a hard mount (RHEL's default)
retries forever and has hung captures for hours. The collector then fails, the failure
action runs, and unmounting uses MNT_FORCE|MNT_DETACH so nothing waits on the dead server.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .. import system
from ..errors import CommandFailed, MountError
from .base import DumpState
from .local import LocalDirectory
from .netspec import parse_nfs_spec

log = logging.getLogger("kdump-agent")

# Each request waits timeo (deciseconds), then timeo more for each retry (TCP backs off
# linearly): 5 + 10 + 15 s before a soft mount gives up on a request.
SOFT_OPTIONS = "soft,timeo=50,retrans=2"
MODPROBE_SECONDS = 30.0
# The kernel's modules for each version; built-in ones make modprobe a no-op.
_MODULES = {"4": ("nfs", "nfsv4"), "3": ("nfs", "nfsv3")}


@dataclass(frozen=True)
class NfsTarget:
    """`nfs|nfs4|net host:/export` of kdump.conf, and `path` below the export."""

    spec: str  # host:/export or [v6addr]:/export, as written
    fstype: str  # "nfs" (v4, then v3) or "nfs4" (v4 only)
    directory: str  # `path`, relative to the export

    @property
    def server(self) -> str:
        """The host part, without the brackets of an IPv6 address."""
        return parse_nfs_spec(self.spec)[0]

    @property
    def export(self) -> str:
        return parse_nfs_spec(self.spec)[1]

    @property
    def versions(self) -> tuple[str, ...]:
        return ("4",) if self.fstype == "nfs4" else ("4", "3")


def mount_options(version: str, server_address: str, client_address: str | None) -> str:
    """The text options mount.nfs would pass for this version (addresses resolved already)."""
    if version == "4":
        client = f",clientaddr={client_address}" if client_address else ""
        return f"vers=4,{SOFT_OPTIONS},addr={server_address}{client}"
    return (f"vers=3,nolock,proto=tcp,mountproto=tcp,{SOFT_OPTIONS},"
            f"addr={server_address},mountaddr={server_address}")


def source(server_address: str, export: str) -> str:
    host = f"[{server_address}]" if ":" in server_address else server_address
    return f"{host}:{export}"


def mount_nfs(target: NfsTarget, server_address: str, client_address: str | None, mountpoint: str) -> str:
    """Mount the export on mountpoint, newest version first; returns `NFSv<n>` as mounted.

    Each version's failure is kept, so the error names why every one was refused.
    """
    refused = []
    for version in target.versions:
        _load_modules(version)
        options = mount_options(version, server_address, client_address)
        try:
            fstype = "nfs4" if version == "4" else "nfs"
            system.mount(source(server_address, target.export), mountpoint, fstype, options)
        except MountError as error:
            log.warning("NFSv%s mount of %s failed: %s", version, target.spec, error)
            refused.append(f"NFSv{version}: {error}")
            continue
        log.info("mounted %s as NFSv%s (%s)", target.spec, version, options)
        return f"NFSv{version}"
    raise MountError(f"cannot mount {target.spec}: {'; '.join(refused)}")


def _load_modules(version: str) -> None:
    """The NFS client modules mkinitrd packed; a missing one shows in the mount's error."""
    for module in _MODULES[version]:
        try:
            system.run(["modprobe", "-q", module], timeout=MODPROBE_SECONDS, echo=False)
        except CommandFailed as error:
            log.warning("modprobe %s: %s", module, error)


class NfsDirectory(LocalDirectory):
    """An NFS export: a local directory once mounted; only mounting and letting go differ.

    NETWORK_UP resolved the server (state.server_address) and our address towards it.
    """

    crosses_mounts = True  # NFSv4 shows the exports below this one as mounts of their own

    def __init__(self, target: NfsTarget) -> None:
        super().__init__(target)
        self.nfs = target
        self.server = target.server

    def attach(self, state: DumpState, *, mountpoint: str, disk_timeout: float) -> str:
        assert state.server_address is not None, "NETWORK_UP resolved the server"
        version = mount_nfs(self.nfs, state.server_address, state.local_address, mountpoint)
        state.mounted.append(mountpoint)
        state.root = mountpoint
        return f"{self.nfs.spec} ({version}) on {mountpoint}"

    def release(self, state: DumpState) -> None:
        """No global sync (a dead server would hold it up for good); let go by force."""
        self._unmount(state, force=True)
