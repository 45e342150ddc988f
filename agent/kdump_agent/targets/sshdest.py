"""Where an SSH dump goes: `ssh user@host[:port]`, with `path` and `sshkey` of kdump.conf.

Kept apart from ssh.py so that reading the config and choosing the steps does not import
paramiko: a capture to a local disk never pays for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .netspec import check_host, check_ipv6

SSH_PORT = 22
_PORT = re.compile(r"[0-9]{1,5}")  # ASCII only: str.isdigit takes '²', which int() refuses
DEFAULT_KEY_PATH = "/root/.ssh/kdump_id_rsa"  # RHEL's default `sshkey`
DEFAULT_KNOWN_HOSTS_PATH = "/etc/kdump-agent/known_hosts"  # the pin, packed by mkinitrd
DEFAULT_DIRECTORY = "/var/crash"
DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class SshDestination:
    """Where the dump goes: `ssh user@host[:port]`, `path` and `sshkey` of kdump.conf."""

    user: str
    host: str  # a name, an IPv4 or a bare IPv6 address (no brackets)
    directory: str = DEFAULT_DIRECTORY
    port: int = SSH_PORT
    key_path: str = DEFAULT_KEY_PATH
    known_hosts_path: str = DEFAULT_KNOWN_HOSTS_PATH

    @property
    def known_hosts_name(self) -> str:
        """The name OpenSSH files this server's keys under: `host`, or `[host]:port`."""
        return self.host if self.port == SSH_PORT else f"[{self.host}]:{self.port}"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}" + ("" if self.port == SSH_PORT else f":{self.port}")


def parse_spec(spec: str, *, directory: str = DEFAULT_DIRECTORY, key_path: str = DEFAULT_KEY_PATH,
               known_hosts_path: str = DEFAULT_KNOWN_HOSTS_PATH) -> SshDestination:
    """`user@host`, `user@host:port`, `user@[v6addr]`, `user@[v6addr]:port` or `user@v6addr`.

    Raises ValueError naming the spec; config.py turns it into its ConfigError, and so does
    LOAD_CONFIG, so check-config and the capture kernel refuse the same specs with the same words.
    """
    what = f"SSH target {spec!r}"
    user, at, rest = spec.partition("@")
    if not at or not user or not rest or "@" in rest or any(c.isspace() for c in spec):
        raise ValueError(f"SSH target {spec!r} must look like user@host or user@host:port")
    port_text = ""
    if rest.startswith("["):
        host, bracket, after = rest[1:].partition("]")
        if not bracket or not host or (after and not after.startswith(":")):
            raise ValueError(f"SSH target {spec!r}: an IPv6 address goes in brackets: user@[2001:db8::1]:22")
        port_text = after[1:] if after else ""
        if after and not port_text:
            raise ValueError(f"SSH target {spec!r}: no port after ':'")
        check_ipv6(what, host)
    elif rest.count(":") > 1:  # a bare IPv6 address: no room for a port
        host = rest
        check_ipv6(what, host)
    else:
        host, colon, port_text = rest.partition(":")
        if colon and not port_text:
            raise ValueError(f"SSH target {spec!r}: no port after ':'")
        if not host:
            raise ValueError(f"SSH target {spec!r} names no host")
        check_host(what, host)
    port = SSH_PORT
    if port_text:
        if not _PORT.fullmatch(port_text) or not 0 < int(port_text) < 65536:
            raise ValueError(f"SSH target {spec!r}: port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    return SshDestination(user=user, host=host, port=port, directory=directory, key_path=key_path,
                          known_hosts_path=known_hosts_path)

