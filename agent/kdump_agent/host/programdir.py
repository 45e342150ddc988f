"""The frozen agent laid out unpacked for the capture initramfs.

The admin installs one file: PyInstaller's one-file binary, whose bootloader unpacks the
libraries it carries (~22 MB) into `$TMPDIR` before Python starts. In the capture kernel
that unpack costs twice: the binary sits in the initramfs and its unpack beside it, both
in RAM, and the unpack (zlib, under a slow CPU) is most of the agent's start-up. So
mkinitrd unpacks it once, here, on the host: the files go into the image as a directory
(PyInstaller's one-dir layout), and the executable keeps only the archive entries Python
reads in place (the compiled modules, the entry script, the options). The bootloader sees
no entry to extract and runs one-dir: the program's home is the executable's directory.

A capture that never connects over SSH never loads paramiko's crypto libraries, so a
local or NFS image leaves them out (`SSH_ONLY`); the executable's compiled modules leave out
the network and SSH sides the same way (pyzarchive.py).

The binary's layout (PyInstaller's CArchive, `PyInstaller/archive/writers.py`): entries,
a table of contents, then a cookie; on Linux the whole archive is the ELF section
`pydata`, and the bootloader finds the archive by the last cookie in the file.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import KdumpError
from . import pyzarchive

COOKIE_MAGIC = b"MEI\014\013\012\013\016"
COOKIE = struct.Struct("!8sIIII64s")  # magic, archive length, TOC offset, TOC length, python, libpython
TOC_ENTRY = struct.Struct("!IIIIBc")  # entry length, offset, stored length, length, compressed, type
# The entries the bootloader writes out in one-file mode: binaries, data, zip files and
# symbolic links (bootloader/src/pyi_archive.c); a dependency on another archive ("d", a
# multi-package build) is one the agent's build never makes.
EXTRACTED = frozenset(b"bxZn")
DEPENDENCY = ord("d")
SYMLINK = ord("n")
PYZ = ord("z")
# What only an SSH capture loads (paramiko's crypto: cryptography, PyNaCl, bcrypt, cffi,
# and the package metadata only paramiko's import reads), as paths inside the program.
SSH_ONLY = ("cryptography/", "cryptography-", "paramiko-", "nacl/", "bcrypt/", "_cffi_backend.")
# What only the host side reads: our dracut module, which mkinitrd gives dracut.
HOST_ONLY = ("dracut-module/",)
# The one-file build's option that puts the program's files in a subdirectory; the laid-out
# program keeps them beside the executable, the bootloader's default without it.
CONTENTS_OPTION = "pyi-contents-directory "
PROGRAM_NAME = "kdump-agent"
# The standard library's modules that Python's start needs before the PYZ can be read; the
# build stores them uncompressed (1.3 MB). Deflated, they are 0.55 MB in the image, and
# zipimport inflates the few a capture imports (zlib is an extension module beside them).
BASE_LIBRARY = "base_library.zip"

_ELF64_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
_ELF64_SECTION = struct.Struct("<IIQQQQIIQQ")


@dataclass(frozen=True)
class Entry:
    """One archive entry, its bytes as stored (compressed or not)."""

    name: str
    typecode: int
    compressed: bool
    length: int
    stored: bytes

    def content(self) -> bytes:
        return zlib.decompress(self.stored) if self.compressed else self.stored


@dataclass(frozen=True)
class Archive:
    """A one-file binary split into the ELF around its archive and the archive's entries."""

    elf: bytes
    start: int  # where the archive begins in the file
    end: int  # where its cookie ends
    python_version: int
    libpython: bytes
    entries: tuple[Entry, ...]


def read_archive(binary: Path) -> Archive:
    """Parse the binary's archive; a file that is not a PyInstaller binary is refused."""
    data = binary.read_bytes()
    cookie_at = data.rfind(COOKIE_MAGIC)
    if cookie_at < 0 or cookie_at + COOKIE.size > len(data):
        raise KdumpError(f"{binary}: not a PyInstaller binary (no archive cookie)")
    _, length, toc_offset, toc_length, python_version, libpython = COOKIE.unpack_from(data, cookie_at)
    end = cookie_at + COOKIE.size
    start = end - length
    if start < 0 or toc_offset + toc_length > length:
        raise KdumpError(f"{binary}: its archive's cookie does not match the file")
    entries = []
    position = start + toc_offset
    while position < start + toc_offset + toc_length:
        size, offset, stored, full, compressed, typecode = TOC_ENTRY.unpack_from(data, position)
        name = data[position + TOC_ENTRY.size:position + size].rstrip(b"\0").decode()
        entries.append(Entry(name, typecode[0], bool(compressed), full,
                             data[start + offset:start + offset + stored]))
        position += size
    return Archive(data, start, end, python_version, libpython, tuple(entries))


def write_archive(entries: list[Entry], python_version: int, libpython: bytes) -> bytes:
    """An archive of these entries as the bootloader reads it (writers.CArchiveWriter)."""
    body, toc = bytearray(), bytearray()
    for entry in entries:
        name = entry.name.encode() + b"\0"
        name += b"\0" * (-(TOC_ENTRY.size + len(name)) % 16)  # entries are 16-byte aligned
        toc += TOC_ENTRY.pack(TOC_ENTRY.size + len(name), len(body), len(entry.stored), entry.length,
                              int(entry.compressed), bytes([entry.typecode])) + name
        body += entry.stored
    length = len(body) + len(toc) + COOKIE.size
    cookie = COOKIE.pack(COOKIE_MAGIC, length, len(body), len(toc), python_version, libpython)
    return bytes(body + toc + cookie)


def replace_section(elf: bytes, start: int, end: int, payload: bytes) -> bytes:
    """The ELF with bytes [start, end) (the archive, in section `pydata`) replaced by payload.

    The sections after it and the section header table move; their offsets are updated so
    the file stays a well-formed ELF that ldd, strip and readelf read (dracut runs them).
    """
    payload += b"\0" * (-(len(payload) - (end - start)) % 8)  # the section headers stay aligned
    delta = len(payload) - (end - start)
    header = list(_ELF64_HEADER.unpack_from(elf, 0))
    if header[0][:4] != b"\x7fELF" or header[0][4] != 2 or header[0][5] != 1:
        raise KdumpError("the agent binary is not a little-endian 64-bit ELF file")
    shoff, shentsize, shnum = header[6], header[11], header[12]
    if shoff < end or shentsize != _ELF64_SECTION.size:
        raise KdumpError("the agent binary's section headers are not after its archive")
    out = bytearray(elf[:start] + payload + elf[end:])
    found = False
    for index in range(shnum):
        at = shoff + delta + index * shentsize
        section = list(_ELF64_SECTION.unpack_from(out, at))
        offset, size = section[4], section[5]
        if offset <= start and end <= offset + size:
            section[5] = size + delta
            found = True
        elif offset >= end:
            section[4] = offset + delta
        _ELF64_SECTION.pack_into(out, at, *section)
    if not found:
        raise KdumpError("the agent binary's archive is in no ELF section")
    header[6] = shoff + delta
    _ELF64_HEADER.pack_into(out, 0, *header)
    return bytes(out)


def deflated(archive: bytes) -> bytes:
    """The zip archive with every member deflated, names, dates and order kept."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as source, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as target:
        for member in source.infolist():
            target.writestr(member, source.read(member), compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def lay_out(binary: Path, into: Path, *, ssh: bool, network: bool) -> Path:
    """Write the program's directory into `into` (which must not exist): its one-dir
    executable and the files the one-file binary would unpack, leaving out the SSH-only
    libraries and modules unless `ssh`, and the network stack's modules unless `network`
    (or `ssh`). Returns the executable's path."""
    archive = read_archive(binary)
    into.mkdir(parents=True)
    left_out = pyzarchive.left_out(network=network, ssh=ssh)
    kept = []
    for entry in archive.entries:
        if entry.typecode == DEPENDENCY:
            raise KdumpError(f"{binary}: archive entry {entry.name!r} names another archive")
        if entry.typecode == PYZ and left_out:
            trimmed = pyzarchive.without(entry.content(), left_out)
            kept.append(Entry(entry.name, entry.typecode, False, len(trimmed), trimmed))
            continue
        if entry.typecode not in EXTRACTED:
            if not entry.name.startswith(CONTENTS_OPTION):
                kept.append(entry)
            continue
        if entry.name.startswith(HOST_ONLY) or not ssh and entry.name.startswith(SSH_ONLY):
            continue
        path = into / entry.name
        if not path.resolve().is_relative_to(into.resolve()):
            raise KdumpError(f"{binary}: archive entry {entry.name!r} points outside the program")
        path.parent.mkdir(parents=True, exist_ok=True)
        if entry.typecode == SYMLINK:
            os.symlink(entry.content().decode(), path)
        else:
            content = entry.content()
            path.write_bytes(deflated(content) if entry.name == BASE_LIBRARY else content)
            path.chmod(0o755 if entry.typecode == ord("b") else 0o644)
    executable = into / PROGRAM_NAME
    executable.write_bytes(replace_section(archive.elf, archive.start, archive.end,
                                           write_archive(kept, archive.python_version, archive.libpython)))
    executable.chmod(0o755)
    return executable
