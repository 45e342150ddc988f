"""PYZ archives as PyInstaller writes them (writers.ZlibArchiveWriter), for the tests."""

from __future__ import annotations

import importlib.util
import marshal
import struct
import zlib

PACKAGE = 1
MODULE = 0


def pyz_of(names: list[str]) -> bytes:
    """An archive holding one small compiled module for each name; a name that another
    name is inside of is stored as a package."""
    body = bytearray(b"PYZ\0" + importlib.util.MAGIC_NUMBER + b"\0" * 9)
    table = []
    for name in names:
        code = compile(f"NAME = {name!r}\n", f"{name.replace('.', '/')}.py", "exec")
        data = zlib.compress(marshal.dumps(code))
        kind = PACKAGE if any(other.startswith(name + ".") for other in names) else MODULE
        table.append((name, (kind, len(body), len(data))))
        body += data
    struct.pack_into("!i", body, 8, len(body))
    return bytes(body + marshal.dumps(table))
