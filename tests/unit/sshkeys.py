"""Keys and known_hosts lines for the SSH unit tests (host-key pinning and the connection)."""

from __future__ import annotations

from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def ed25519_key(path: Path) -> paramiko.PKey:
    """A fresh ed25519 key written in OpenSSH's format (what ssh-keygen makes)."""
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    path.write_bytes(pem)
    return paramiko.PKey.from_path(path)


def known_hosts_line(names: str, key: paramiko.PKey) -> str:
    return f"{names} {key.get_name()} {key.get_base64()}\n"


def revoked_line(names: str, key: paramiko.PKey, separator: str = " ") -> str:
    return separator.join(["@revoked", names, key.get_name(), key.get_base64()]) + "\n"
