"""How much of the reservation the capture kernel and its initramfs take, read from the files.

The kernel: an x86 bzImage says in its boot header (`init_size`, boot protocol 2.10+) how
much contiguous memory it needs to decompress and start; that is read, not guessed. An
image without that header counts as its file size times KERNEL_SIZE_FACTOR.

The initramfs: the kernel unpacks every archive of the image into RAM, so what counts is
the unpacked size: the byte length of each cpio archive, decompressed (what `make bench`
reports as initramfs_unpacked_bytes). A dracut image may start with an uncompressed early
cpio (microcode), then one compressed archive; archives are read one after the other as
the kernel does, skipping the zero padding between them. gzip is decompressed here (zlib);
the other compressors run as their own programs, because Python's lzma and bz2 modules are
left out of the frozen binary (build/kdump-agent.spec), and Python 3.11 has no zstd: such an
archive must be the image's last, as dracut writes it.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import tempfile
import zlib
from typing import IO

from .. import system
from ..errors import CommandFailed, KdumpError

# init_size / file size of Debian 12's cloud kernel (6.1.0-56: 51.5 MiB / 13.5 MiB) is 3.8.
KERNEL_SIZE_FACTOR = 4
_SETUP_HEADER_MAGIC = b"HdrS"
_HEADER_MAGIC_AT = 0x202
_PROTOCOL_AT = 0x206
_INIT_SIZE_AT = 0x260
_INIT_SIZE_PROTOCOL = 0x020A  # the first boot protocol with init_size

_CPIO_MAGICS = (b"070701", b"070702")
_CPIO_HEADER = 110
_CPIO_TRAILER = b"TRAILER!!!"
_HEX8 = re.compile(rb"[0-9A-Fa-f]{8}")
_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
# Magic -> (program that decompresses it with -dc, Debian package that has the program).
_DECOMPRESSORS = {
    b"\x28\xb5\x2f\xfd": ("zstd", "zstd"),
    b"\xfd7zXZ\x00": ("xz", "xz-utils"),
    b"\x5d\x00\x00": ("xz", "xz-utils"),  # legacy .lzma: xz reads it too
    b"BZh": ("bzip2", "bzip2"),
    b"\x02\x21\x4c\x18": ("lz4", "lz4"),  # the kernel's lz4 (legacy frame)
}
DECOMPRESS_TIMEOUT = 300.0


def kernel_memory(path: str) -> tuple[int, str]:
    """Bytes the capture kernel takes, and how that was found."""
    with open(path, "rb") as image:
        header = image.read(_INIT_SIZE_AT + 4)
    bzimage = (len(header) == _INIT_SIZE_AT + 4
               and header[_HEADER_MAGIC_AT:_HEADER_MAGIC_AT + 4] == _SETUP_HEADER_MAGIC)
    if bzimage and struct.unpack_from("<H", header, _PROTOCOL_AT)[0] >= _INIT_SIZE_PROTOCOL:
        return struct.unpack_from("<I", header, _INIT_SIZE_AT)[0], f"init_size in the boot header of {path}"
    size = os.path.getsize(path)
    return size * KERNEL_SIZE_FACTOR, f"{path}: no bzImage header; its size x {KERNEL_SIZE_FACTOR}"


def initramfs_unpacked_bytes(path: str) -> int:
    """The unpacked size of every archive in an initramfs image."""
    with open(path, "rb") as image:
        data = memoryview(image.read())
    total = 0
    at = 0
    while at < len(data):
        while at < len(data) and data[at] == 0:
            at += 1
        if at >= len(data):
            break
        magic = bytes(data[at:at + 6])
        if magic in _CPIO_MAGICS:
            end = _cpio_end(data, at, path)
            total += end - at
            at = end
            continue
        if magic.startswith(_GZIP_MAGIC):
            produced, used = _gunzip(data[at:], path, at)
            total, at = total + produced, at + used
            continue
        program = next((found for prefix, found in _DECOMPRESSORS.items() if magic.startswith(prefix)), None)
        if program is None:
            raise KdumpError(f"{path}: unknown data at byte {at} ({magic.hex()}): not cpio, gzip, zstd, xz, "
                             "lzma, bzip2 or lz4")
        return total + _decompressed_bytes(program, path, data[at:], at)
    return total


def _cpio_end(data: memoryview, start: int, path: str) -> int:
    """The offset just after the TRAILER!!! entry of the newc cpio archive at `start`.

    Names and file data are padded to 4 bytes from the archive's own start.
    """
    def aligned(offset: int) -> int:
        return start + ((offset - start + 3) & ~3)

    at = start
    while True:
        header = bytes(data[at:at + _CPIO_HEADER])
        if len(header) < _CPIO_HEADER or header[:6] not in _CPIO_MAGICS:
            raise KdumpError(f"{path}: broken cpio header at byte {at}")
        file_size, name_size = _cpio_field(header, 54, path, at), _cpio_field(header, 94, path, at)
        if name_size == 0 or at + _CPIO_HEADER + name_size > len(data):
            raise KdumpError(f"{path}: the cpio entry at byte {at} is cut short")
        name_end = at + _CPIO_HEADER + name_size
        name = bytes(data[at + _CPIO_HEADER:name_end - 1])
        at = aligned(aligned(name_end) + file_size)
        if name == _CPIO_TRAILER:
            return min(at, len(data))


def _cpio_field(header: bytes, offset: int, path: str, at: int) -> int:
    """One of a newc header's numbers: exactly 8 hex digits (int() would take a sign or
    blanks, and a negative size would walk the archive backwards)."""
    field = header[offset:offset + 8]
    if _HEX8.fullmatch(field) is None:
        raise KdumpError(f"{path}: broken cpio header at byte {at} ({field!r} is not a hex number)")
    return int(field, 16)


def _gunzip(data: memoryview, path: str, start: int) -> tuple[int, int]:
    """(bytes produced, bytes of `data` consumed) for one gzip archive."""
    decompressor = zlib.decompressobj(wbits=31)
    produced = fed = 0
    while not decompressor.eof and fed < len(data):
        chunk = bytes(data[fed:fed + _CHUNK])
        fed += len(chunk)
        try:
            produced += len(decompressor.decompress(chunk))
        except zlib.error as error:
            raise KdumpError(f"{path}: cannot decompress the archive at byte {start}: {error}") from error
    if not decompressor.eof:
        raise KdumpError(f"{path}: the compressed archive at byte {start} is cut short")
    return produced, fed - len(decompressor.unused_data)


def _decompressed_bytes(program: tuple[str, str], path: str, data: memoryview, start: int) -> int:
    """`<program> -dc` on the archive (the image's last), counting what it writes."""
    name, package = program
    if shutil.which(name, path=system.CLEAN_PATH) is None:
        raise KdumpError(f"{path} is compressed with {name}, which is not installed "
                         f"(apt-get install {package})")

    def count(stream: IO[bytes]) -> int:
        return sum(len(block) for block in iter(lambda: stream.read(_CHUNK), b""))

    with tempfile.TemporaryDirectory(prefix="kdump-agent-estimate.") as scratch:
        source = path
        if start:  # the program reads a file: the archive alone, without what comes before it
            source = os.path.join(scratch, "archive")
            with open(source, "wb") as out:
                out.write(data)
        produced, result = system.run_streaming([name, "-dc", "--", source], count,
                                                timeout=DECOMPRESS_TIMEOUT)
    if result.returncode != 0:
        raise CommandFailed(result.args, result.returncode, result.stderr.decode(errors="replace").strip())
    return produced
