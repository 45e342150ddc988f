"""What `mkinitrd` packs for an NFS or SSH target, or an iSCSI portal, worked out on the host.

- The network record (network.json, a network.record.HostRecord): how this host reaches
  the server now, for a capture kernel whose command line has no `ip=`, plus the server's
  name and the address it resolved to here, the fallback when DNS fails in the capture
  kernel. Only in hostonly mode: a generic image is not for this machine.
- The drivers of the physical NICs under the route (every slave of a bond, every port of
  a bridge), the bonding, 8021q and bridge modules when the record has such links, and
  the NFS client modules for an NFS target.
- For SSH: the key file `sshkey` names (checked to be a usable key without passphrase)
  and the server's host key, pinned from this host's known_hosts files. A server whose key
  is not known here is refused now, not in the capture kernel after a crash.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config
from ..errors import KdumpError
from ..network import bringup
from ..network.record import HostRecord, record_host_route
from ..targets.nfs import NfsTarget
from ..targets.sshdest import SshDestination
from . import hostpaths
from .blockdev import nic_drivers

log = logging.getLogger("kdump-agent")

DEFAULT_KNOWN_HOSTS = hostpaths.DEFAULT_KNOWN_HOSTS  # where a server's host key is looked up

NFS_MODULES = ("nfs", "nfsv3", "nfsv4")


@dataclass
class NetworkPack:
    """Files and drivers for the initramfs; empty for targets that need no network."""

    host: str | None = None  # the server or iSCSI portal the capture kernel reaches
    record: str | None = None  # network.json
    drivers: list[str] = field(default_factory=list)
    known_hosts: str | None = None  # the pinned host key lines
    key_path: str | None = None  # sshkey, packed at the same path


def server_of(config: Config) -> NfsTarget | SshDestination | None:
    """The network target the config names; None for other targets."""
    target = config.dump_target
    return target if isinstance(target, (NfsTarget, SshDestination)) else None


def server_host(config: Config) -> str | None:
    """The network server's host as kdump.conf names it (a name or an address); None for
    other targets."""
    server = server_of(config)
    if server is None:
        return None
    return server.server if isinstance(server, NfsTarget) else server.host


def record_here(host: str) -> HostRecord:
    """How this host reaches `host` now, its name resolved here: what mkinitrd records, and
    what `status` and `estimate` compare and count. Raises KdumpError."""
    return record_host_route(host, bringup.resolve(host))


def network_pack(config: Config, *, hostonly: bool, known_hosts_files: Sequence[str] = DEFAULT_KNOWN_HOSTS,
                 portal: str | None = None) -> NetworkPack:
    """Everything the capture kernel needs to reach the config's server, or the iSCSI
    `portal` a local target's storage stack logs in to (storage/iscsi.py)."""
    server = server_of(config)
    if server is None and portal is None:
        return NetworkPack()
    where = f"{config.source}:{config.target.line}" if config.target else config.source
    pack = NetworkPack()
    if isinstance(server, NfsTarget):
        host = server.server
        pack.drivers += NFS_MODULES
    elif isinstance(server, SshDestination):
        host = server.host
        pack.key_path, pack.known_hosts = _ssh_files(server, where, known_hosts_files)
    else:
        assert portal is not None
        host = portal
    pack.host = host
    if hostonly:
        address = _resolve_here(host, where)
        record = record_host_route(host, address)
        pack.record = record.as_json()
        plan = record.plan()
        for module in [*(d for nic in plan.nics() for d in nic_drivers(nic)), *plan.modules()]:
            if module not in pack.drivers:
                pack.drivers.append(module)
        named = address if host == address else f"{host} ({address})"
        log.info("%s is reached through %s; %s", named, record.described(), _addressing(record))
    elif not config.extra_modules:
        log.warning("%s: a generic (--no-hostonly) image knows no NIC driver: name yours in "
                    "extra_modules (virtio_net, e1000e, ...) unless it is built into the kernel; "
                    "bond=, vlan= or bridge= on the capture command line need bonding, 8021q or bridge "
                    "there too", where)
    return pack


def _addressing(record: HostRecord) -> str:
    """How the record's top link gets its addresses, for the log."""
    parts = ["DHCP" if record.dhcp else ", ".join(a for a in record.addresses if ":" not in a)]
    if record.ipv6 == "static":
        parts.append(", ".join(a for a in record.addresses if ":" in a))
    elif record.ipv6:
        parts.append(record.ipv6)
    return "; ".join(part for part in parts if part)


def _resolve_here(host: str, where: str) -> str:
    try:
        return bringup.resolve(host)
    except KdumpError as error:
        raise KdumpError(f"{where}: {error}") from None


def _ssh_files(destination: SshDestination, where: str, known_hosts_files: Sequence[str]) -> tuple[str, str]:
    """The key file (checked) and the pinned host keys as known_hosts lines.

    A key that a `@revoked` line in any of the files names is never pinned, whichever file
    lists it (a revocation in /etc/ssh/ssh_known_hosts removes a key ~/.ssh/known_hosts has),
    as OpenSSH, which reads them together, would refuse such a server.
    """
    from ..ssh.connection import load_client_key  # paramiko: SSH only

    if not os.path.isfile(destination.key_path):
        raise KdumpError(f"{where}: the SSH key {destination.key_path} (sshkey) does not exist: create it "
                         f"with `ssh-keygen -t ed25519 -N '' -f {destination.key_path}` and install its "
                         f".pub in {destination.user}'s authorized_keys on {destination.host}")
    load_client_key(destination.key_path)
    return destination.key_path, pinned_known_hosts(destination, where, known_hosts_files)


def pinned_known_hosts(destination: SshDestination, where: str, known_hosts_files: Sequence[str]) -> str:
    """The known_hosts lines that pin the server's host keys, read from this host's files
    as the capture kernel will trust them; raises KdumpError when none is pinned."""
    from ..ssh.hostkeys import not_revoked, read_known_hosts  # paramiko: SSH only

    found = [read_known_hosts(path, destination) for path in known_hosts_files if os.path.isfile(path)]
    listed = [known for each in found for known in each.listed]
    revoked = [known for each in found for known in each.revoked]
    lines = [f"{destination.known_hosts_name} {key.get_name()} {key.get_base64()}"
             for key in not_revoked(listed, revoked, destination)]
    port = "" if destination.port == 22 else f"-p {destination.port} "
    if not lines and listed:
        keys = {known.key.asbytes() for known in listed}
        revocations = ", ".join(known.where for known in revoked if known.key.asbytes() in keys)
        raise KdumpError(
            f"{where}: every host key for {destination.known_hosts_name} in {', '.join(known_hosts_files)} "
            f"is revoked ({revocations}); the capture kernel would refuse the server. Pin its new key "
            f"(`ssh-keyscan {port}{destination.host}` output, after checking it), then rebuild")
    if not lines:
        raise KdumpError(
            f"{where}: no host key for {destination.known_hosts_name} in {', '.join(known_hosts_files)}; "
            f"the capture kernel trusts only a pinned key. Connect once with `ssh {port}-i "
            f"{destination.key_path} {destination.user}@{destination.host}` and check the fingerprint, "
            f"or add `ssh-keyscan {port}{destination.host}` output after checking it")
    log.info("pinned %d host key%s of %s", len(lines), "" if len(lines) == 1 else "s",
             destination.known_hosts_name)
    return "".join(f"{line}\n" for line in lines)


def write_pack(pack: NetworkPack, staging: Path) -> dict[str, str]:
    """Write the pack's files into staging; the environment our dracut module reads."""
    env: dict[str, str] = {}
    if pack.record is not None:
        (staging / "network.json").write_text(pack.record, encoding="utf-8")
        env["KDUMP_AGENT_NETWORK"] = str(staging / "network.json")
    if pack.known_hosts is not None:
        (staging / "known_hosts").write_text(pack.known_hosts, encoding="utf-8")
        env["KDUMP_AGENT_KNOWN_HOSTS"] = str(staging / "known_hosts")
    if pack.key_path is not None:
        env["KDUMP_AGENT_SSHKEY"] = pack.key_path
    return env
