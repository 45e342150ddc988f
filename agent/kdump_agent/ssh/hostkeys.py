"""Host-key pinning: which keys a known_hosts-format file pins for a server, and the check.

The capture kernel trusts a server only if the key it offers is one pinned for it in a
known_hosts-format file that mkinitrd packed into the initramfs; the host side (mkinitrd's
netpack, propagate) reads the admin's files with the same code, so both agree on what is
pinned. Hashed names, wildcards and negations are understood as OpenSSH does; a `@revoked`
key is refused for every host.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko
from paramiko.hostkeys import HostKeyEntry, HostKeys

from ..errors import TransferError
from ..targets.sshdest import SshDestination
from .resume import Refused

log = logging.getLogger("kdump-agent")

# A known_hosts "ssh-rsa" key is verified with the SHA-2 signature algorithms.
_HOST_KEY_ALGORITHMS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256")}


def describe_key(key: paramiko.PKey) -> str:
    """`ssh-ed25519 SHA256:...`, the way `ssh-keygen -l` shows a key."""
    return f"{key.get_name()} {key.fingerprint}"


def _name_matches(name: str, patterns: Sequence[str]) -> bool:
    """OpenSSH's rule for the names field of a known_hosts line.

    Hashed entries (`|1|salt|hash`) match by HMAC; the others are patterns where only `*`
    and `?` are special (`[host]:port` is literal); a matching negated pattern (`!name`)
    excludes the line whatever else matches.
    """
    name = name.lower()
    matched = False
    for pattern in patterns:
        if pattern.startswith("|1|"):
            matched |= HostKeys.hash_host(name, pattern) == pattern
        elif pattern.startswith("!"):
            if _glob(pattern[1:]).fullmatch(name):
                return False
        else:
            matched |= _glob(pattern).fullmatch(name) is not None
    return matched


def _glob(pattern: str) -> re.Pattern[str]:
    """OpenSSH's match_pattern(): `*` any run, `?` one character, nothing else special."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                              for c in pattern.lower()), re.DOTALL)


REVOKED = "@revoked"
CERT_AUTHORITY = "@cert-authority"


@dataclass(frozen=True)
class KnownKey:
    """A key on one known_hosts line, and where that line is (`file:number`)."""

    key: paramiko.PKey
    where: str


@dataclass(frozen=True)
class KnownHosts:
    """What one known_hosts-format file says about one destination."""

    listed: list[KnownKey]  # the keys of the unmarked lines whose names match it
    revoked: list[KnownKey]  # the key of every `@revoked` line, whatever names the line lists


def read_known_hosts(known_hosts: str, destination: SshDestination) -> KnownHosts:
    """The destination's keys and every revoked key in a known_hosts-format file.

    OpenSSH applies a `@revoked` line to the names it matches; a revoked key stands for a
    stolen private key, so here it is refused for every host. `@cert-authority` lines pin
    nothing (host certificates are not checked) and say so when they name the destination.
    Lines paramiko cannot read are skipped with a warning. A file that cannot be read
    raises TransferError: without it no server can be trusted.
    """
    try:
        text = Path(known_hosts).read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise TransferError(f"{destination}: cannot read the pinned host keys: {error}") from error
    found = KnownHosts(listed=[], revoked=[])
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{known_hosts}:{number}"
        marker, rest = _split_marker(line)
        entry = _host_key_entry(rest, number)
        if marker not in ("", REVOKED, CERT_AUTHORITY) or entry is None:
            log.warning("%s: not a host key line paramiko can read; ignored", where)
            continue
        if marker == REVOKED:
            found.revoked.append(KnownKey(entry.key, where))
            continue
        if not _name_matches(destination.known_hosts_name, entry.hostnames):
            continue
        if marker == CERT_AUTHORITY:
            log.warning("%s: %s pins nothing for %s: the capture kernel checks the server's own host "
                        "key, not host certificates; pin that key", where, CERT_AUTHORITY,
                        destination.known_hosts_name)
            continue
        found.listed.append(KnownKey(entry.key, where))
    return found


def _split_marker(line: str) -> tuple[str, str]:
    """A line's marker (`@revoked`, `@cert-authority`; "" for none) and the rest of it."""
    if not line.startswith("@"):
        return "", line
    marker, _, rest = line.replace("\t", " ").partition(" ")
    return marker, rest.strip()


def _host_key_entry(line: str, number: int) -> HostKeyEntry | None:
    """The line as paramiko reads it, or None when it cannot (unknown key type, garbage)."""
    try:
        entry = HostKeyEntry.from_line(line, number)
    except paramiko.SSHException:
        return None
    return entry if entry is not None and entry.key is not None else None


def not_revoked(listed: Sequence[KnownKey], revoked: Sequence[KnownKey],
                destination: SshDestination) -> list[paramiko.PKey]:
    """The listed keys no revocation names, each once; every one refused is logged."""
    refused = {known.key.asbytes(): known.where for known in revoked}
    keys: list[paramiko.PKey] = []
    for known in listed:
        revocation = refused.get(known.key.asbytes())
        if revocation is not None:
            log.warning("%s: not pinning %s for %s: it is revoked (%s)", known.where,
                        describe_key(known.key), destination.known_hosts_name, revocation)
        elif all(key.asbytes() != known.key.asbytes() for key in keys):
            keys.append(known.key)
    return keys


def pinned_host_keys(known_hosts: str, destination: SshDestination) -> list[paramiko.PKey]:
    """The host keys pinned for the destination in a known_hosts-format file: its lines
    for the destination, less every key a `@revoked` line in the file names."""
    found = read_known_hosts(known_hosts, destination)
    return not_revoked(found.listed, found.revoked, destination)


def host_key_preference(pinned: Sequence[paramiko.PKey], available: Sequence[str]) -> tuple[str, ...]:
    """Host key algorithms in the order to offer them: the pinned keys' types first.

    The server then shows the key we hold rather than another of its keys we cannot check.
    """
    first = [algorithm for key in pinned
             for algorithm in _HOST_KEY_ALGORITHMS.get(key.get_name(), (key.get_name(),))
             if algorithm in available]
    return tuple(dict.fromkeys([*first, *available]))


def check_host_key(destination: SshDestination, offered: paramiko.PKey,
                   pinned: Sequence[paramiko.PKey]) -> None:
    """Accept the server's key only if it is one of the pinned ones; raise Refused else (a
    TransferError that reconnecting does not try to mend)."""
    if any(key.asbytes() == offered.asbytes() for key in pinned):
        return
    if not pinned:
        raise Refused(
            f"{destination}: unknown host: {destination.known_hosts_path} pins no key for "
            f"{destination.known_hosts_name}, and the server offers {describe_key(offered)}; refusing "
            "to send the dump there (pin the server's key, then rebuild the initramfs)")
    raise Refused(
        f"{destination}: HOST KEY MISMATCH: the server offers {describe_key(offered)}, but "
        f"{destination.known_hosts_path} pins {', '.join(describe_key(key) for key in pinned)} "
        f"for {destination.known_hosts_name}; refusing to send the dump there (someone may be in "
        "the middle; if the server's key really changed, pin the new one and rebuild the initramfs)")
