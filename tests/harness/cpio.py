"""The one newc cpio writer: initramfs images, and archives laid over them, built without root.

newc is the format the kernel unpacks as initramfs; it unpacks concatenated archives in
order, later files winning, which is how a test lays another config over a built image.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import re
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

from .cache import locked
from .commands import log, run

BUSYBOX = Path("/bin/busybox")

# Bump when the layout of a generated initramfs changes in a way its inputs do not show.
_BUILDER_VERSION = "1"


@dataclasses.dataclass(frozen=True)
class _Entry:
    mode: int                   # full st_mode, type bits included
    data: bytes | Path = b""    # file content, symlink target, or a host file to copy
    rdev: tuple[int, int] = (0, 0)

    def content(self) -> bytes:
        return self.data.read_bytes() if isinstance(self.data, Path) else self.data


class Cpio:
    """An in-memory plan for a gzip'd newc archive, the format the kernel unpacks as initramfs.

    Writing the archive ourselves (instead of staging a tree and running cpio) means device
    nodes need no root, ownership is always 0:0, timestamps are zero (reproducible output) and
    the content digest used for caching comes for free. Parent directories are added
    implicitly because the kernel's unpacker does not create them. The same plan can also be
    staged as a directory tree (`stage`), which is how harness.rootfs builds an ext4 root.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def _add(self, path: str, entry: _Entry) -> None:
        path = path.strip("/")
        parent = os.path.dirname(path)
        if parent and parent not in self._entries:
            self.add_dir(parent)
        self._entries[path] = entry

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        self._add(path, _Entry(stat.S_IFDIR | mode))

    def add_file(self, path: str, content: bytes | Path, mode: int = 0o644) -> None:
        """`content` is the bytes themselves or a host file, read (through symlinks) at write."""
        self._add(path, _Entry(stat.S_IFREG | mode, content))

    def add_symlink(self, path: str, target: str) -> None:
        self._add(path, _Entry(stat.S_IFLNK | 0o777, target.encode()))

    def add_chardev(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._add(path, _Entry(stat.S_IFCHR | mode, rdev=(major, minor)))

    def __contains__(self, path: str) -> bool:
        return path.strip("/") in self._entries

    def add_binary(self, host: Path, dest: str | None = None) -> None:
        """Install an executable and every shared object `ldd` says it needs, at the paths
        ldd prints (the ELF interpreter path is baked into the binary, so it must match)."""
        self.add_file(dest or str(host), host, 0o755)
        for lib in shared_libraries(host):
            if lib not in self:
                self.add_file(lib, Path(lib), 0o755)

    def add_busybox(self, busybox: Path = BUSYBOX) -> None:
        """A static busybox at /bin/busybox with a symlink per applet, as busybox --install."""
        self.add_file("bin/busybox", busybox, 0o755)
        applets = run([busybox, "--list-full"]).stdout.split()
        for applet in applets:
            if applet.strip("/") not in self:
                self.add_symlink(applet, "/bin/busybox")

    def add_base_layout(self) -> None:
        """Mount points and the two device nodes /init needs before devtmpfs is mounted: without
        /dev/console the kernel starts /init with no stdio at all."""
        for d in ("dev", "proc", "sys", "run", "tmp", "mnt", "root", "etc"):
            self.add_dir(d, 0o1777 if d == "tmp" else 0o755)
        self.add_chardev("dev/console", 5, 1)
        self.add_chardev("dev/null", 1, 3, 0o666)

    def digest(self) -> str:
        """sha256 over the whole plan, file contents included: the cache key of the archive."""
        h = hashlib.sha256(_BUILDER_VERSION.encode())
        for path, entry in sorted(self._entries.items()):
            h.update(f"\0{path}\0{entry.mode:o}\0{entry.rdev}\0".encode())
            if isinstance(entry.data, Path):
                with open(entry.data, "rb") as fd:
                    for chunk in iter(lambda: fd.read(1 << 20), b""):
                        h.update(chunk)
            else:
                h.update(entry.data)
        return h.hexdigest()

    def entries(self) -> Iterator[bytes]:
        """The archive's newc entries in order, the trailer last (uncompressed)."""
        for ino, (path, entry) in enumerate(sorted(self._entries.items()), start=1):
            data = entry.content()
            if stat.S_ISDIR(entry.mode) or stat.S_ISCHR(entry.mode):
                data = b""
            yield _newc_entry(path, ino, entry.mode, data, entry.rdev)
        yield _newc_entry("TRAILER!!!", 0, 0, b"", (0, 0))

    def archive(self) -> bytes:
        """The whole uncompressed archive, for a test that looks at the bytes themselves."""
        return b"".join(self.entries())

    def write(self, out: Path, compresslevel: int = 6) -> Path:
        """Write the gzip'd newc archive to `out` atomically."""
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                                   compresslevel=compresslevel) as gz:
            for entry in self.entries():
                gz.write(entry)
        tmp.replace(out)
        return out

    def write_cached(self, out: Path) -> Path:
        """Write `out` unless it already holds an archive of exactly this plan.

        The key sits next to the image (`<out>.key`); it covers every input byte, so a new
        kernel, a changed /init or an upgraded host binary rebuilds and nothing else does.
        """
        key = self.digest()
        stamp = out.with_name(out.name + ".key")
        with locked(out.with_name(out.name + ".lock")):
            if out.is_file() and stamp.is_file() and stamp.read_text().strip() == key:
                return out
            log(f"building {out}")
            self.write(out)
            stamp.write_text(key + "\n")
        return out

    def stage(self, root: Path) -> None:
        """Create the plan as a real tree under the existing directory `root`, for tools that
        take a directory (`mkfs.ext4 -d`). Device nodes need root, and files belong to the
        caller, so run as root to get the 0:0 ownership the archive has."""
        for path, entry in sorted(self._entries.items()):  # a parent sorts before its children
            dest = root / path
            kind = stat.S_IFMT(entry.mode)
            if kind == stat.S_IFDIR:
                dest.mkdir()
            elif kind == stat.S_IFLNK:
                os.symlink(os.fsdecode(entry.content()), dest)
            elif kind == stat.S_IFCHR:
                os.mknod(dest, entry.mode, os.makedev(*entry.rdev))
            else:
                dest.write_bytes(entry.content())
            if kind != stat.S_IFLNK:
                os.chmod(dest, stat.S_IMODE(entry.mode))  # undo the umask


def _newc_entry(name: str, ino: int, mode: int, data: bytes, rdev: tuple[int, int]) -> bytes:
    """One newc entry: header, NUL-ended name and data, each padded to 4 bytes; owner 0:0,
    mtime 0."""
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data), 0, 0,
              rdev[0], rdev[1], len(encoded), 0)
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    return (header + encoded + b"\0" * (-(len(header) + len(encoded)) % 4)
            + data + b"\0" * (-len(data) % 4))


def newc(files: Mapping[str, bytes]) -> bytes:
    """An uncompressed archive of regular files (mode 0644) and their parent directories."""
    plan = Cpio()
    for path, content in files.items():
        plan.add_file(path, content)
    return plan.archive()


def shared_libraries(binary: Path) -> list[str]:
    """Absolute paths of the shared objects `binary` loads, interpreter included (via ldd).
    A static binary yields an empty list."""
    proc = run(["ldd", binary], check=False)
    libs = []
    for line in proc.stdout.splitlines():
        match = re.search(r"=>\s+(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(", line)
        if match:
            libs.append(match.group(1))
    return libs

