"""The program's compiled modules (PyInstaller's PYZ archive) without those an image's
capture never imports.

The PYZ sits in the executable, and the executable in the capture initramfs, so every
module in it is paid for in reserved RAM for the whole capture. A capture with no server to
reach never imports the network stack (pyroute2, with the asyncio, multiprocessing,
unittest, email and concurrent packages that only pyroute2 and paramiko import here), and
one that does not talk SSH never imports paramiko and its crypto (`capture.py` and
`targets/registry.py` import them only for such targets; tests/unit/test_pyzarchive.py
checks that nothing else does). 1.9 MB of the 3.4 MB PYZ is the network and SSH side.

The layout (PyInstaller/archive/writers.py, ZlibArchiveWriter): a 17-byte header (magic,
the bytecode's magic, the table's offset, big-endian, and unused bytes), each module's
zlib-compressed marshalled code, then the table: a marshalled list of (name, (kind,
offset, length)).
"""

from __future__ import annotations

import marshal
import struct
from collections.abc import Iterable

from ..errors import KdumpError

PYZ_MAGIC = b"PYZ\0"
HEADER_LENGTH = 17
TABLE_OFFSET = struct.Struct("!i")  # at byte 8 of the header

# Packages only a capture that reaches a server imports, and the agent's own network side.
NETWORK_ONLY = ("pyroute2", "asyncio", "multiprocessing", "unittest", "email", "concurrent",
                "kdump_agent.network", "kdump_agent.steps.network_up")
# Packages only an SSH capture imports: paramiko, its crypto, and the agent's SSH side (the
# SSH modules a local capture imports, ssh.resume for the manifest's record, stay).
SSH_ONLY = ("paramiko", "cryptography", "nacl", "bcrypt", "kdump_agent.targets.sshserver",
            "kdump_agent.ssh.browse", "kdump_agent.ssh.chachapoly", "kdump_agent.ssh.connection",
            "kdump_agent.ssh.hostkeys", "kdump_agent.ssh.remote", "kdump_agent.ssh.sftp",
            "kdump_agent.ssh.shell")


def left_out(*, network: bool, ssh: bool) -> tuple[str, ...]:
    """The packages an image's program leaves out: what its capture never imports (an SSH
    capture reaches its server through the network stack too)."""
    return (() if network or ssh else NETWORK_ONLY) + (() if ssh else SSH_ONLY)


def in_packages(name: str, packages: Iterable[str]) -> bool:
    """Whether module `name` is one of `packages` or inside one."""
    return any(name == package or name.startswith(package + ".") for package in packages)


def without(pyz: bytes, packages: tuple[str, ...]) -> bytes:
    """The archive with the modules of `packages` taken out; the rest byte for byte."""
    if pyz[:4] != PYZ_MAGIC or len(pyz) < HEADER_LENGTH:
        raise KdumpError("the agent binary's module archive is not a PYZ archive")
    (table_at,) = TABLE_OFFSET.unpack_from(pyz, 8)
    try:
        table = marshal.loads(pyz[table_at:])
    except (EOFError, ValueError, TypeError) as error:
        raise KdumpError(f"the agent binary's module archive has no readable table: {error}") from error
    body = bytearray(pyz[:HEADER_LENGTH])
    kept = []
    for name, (kind, offset, length) in table:
        if in_packages(name, packages):
            continue
        kept.append((name, (kind, len(body), length)))
        body += pyz[offset:offset + length]
    TABLE_OFFSET.pack_into(body, 8, len(body))
    body += marshal.dumps(kept)
    return bytes(body)


def module_names(pyz: bytes) -> list[str]:
    """The modules the archive holds, as its table lists them."""
    (table_at,) = TABLE_OFFSET.unpack_from(pyz, 8)
    return [name for name, _ in marshal.loads(pyz[table_at:])]
