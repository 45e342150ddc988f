"""ext4 disk images for the guests: made on the file itself and read back with debugfs, so
no loop device, no mount and no privileges beyond the file's.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import tempfile
from pathlib import Path

from .commands import run


def make_disk(path: Path, size_mib: int, uuid: str, label: str, contents: Path | None = None) -> Path:
    """A sparse raw image holding one ext4 file system, made on the file itself: no loop
    device, no mount, no root needed beyond write access to `path`. `contents` is a
    directory whose tree (symbolic links included) the file system starts with."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fd:
        fd.truncate(size_mib * 1024 * 1024)
    seed: list[str | Path] = ["-d", contents] if contents else []
    run(["mkfs.ext4", "-F", "-q", "-U", uuid, "-L", label, *seed, path])
    return path


@dataclasses.dataclass(frozen=True)
class FileInfo:
    """What the tests check about a file in a guest-written image."""

    mode: int   # st_mode, type bits included (stat.S_ISREG(info.mode), info.mode & 0o777)
    size: int   # bytes; 0 for directories (debugfs ls -p leaves it empty)


def _debugfs(image: Path, request: str) -> subprocess.CompletedProcess[str]:
    """One read-only debugfs request. debugfs reports most errors on stderr yet exits 0,
    so callers must check what it printed."""
    return run(["debugfs", "-R", request, image])


def _debugfs_path(path: str) -> str:
    if any(c in path for c in "\"\n"):
        raise ValueError(f"path not representable in a debugfs request: {path!r}")
    return f'"{path}"'


def list_dir(image: Path, directory: str) -> dict[str, FileInfo]:
    """The entries of one directory of the ext4 file system in `image`, by name (no . or ..),
    read with `debugfs ls -p`."""
    proc = _debugfs(image, f"ls -p {_debugfs_path(directory)}")
    if not proc.stdout.strip():
        raise RuntimeError(f"debugfs cannot list {directory} in {image}: {proc.stderr}")
    entries: dict[str, FileInfo] = {}
    for line in proc.stdout.splitlines():
        # /<inode>/<mode octal>/<uid>/<gid>/<name>/<size>/
        fields = line.strip().split("/")
        if len(fields) != 8 or fields[5] in (".", ".."):
            continue
        entries[fields[5]] = FileInfo(mode=int(fields[2], 8), size=int(fields[6]) if fields[6] else 0)
    return entries


def read_tree(image: Path) -> dict[str, FileInfo]:
    """Every entry of the ext4 file system in `image`, keyed by absolute path ("/vmcore"),
    lost+found excluded."""
    tree: dict[str, FileInfo] = {}
    pending = ["/"]
    while pending:
        directory = pending.pop()
        for name, info in list_dir(image, directory).items():
            path = directory.rstrip("/") + "/" + name
            if path == "/lost+found":
                continue
            tree[path] = info
            if stat.S_ISDIR(info.mode):
                pending.append(path)
    return tree


def extract(image: Path, src: str, dest: Path) -> Path:
    """Copy the file (or directory tree) `src` out of the ext4 `image` to `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    info = _debugfs(image, f"stat {_debugfs_path(src)}")
    if "Type: directory" in info.stdout:
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            proc = _debugfs(image, f"rdump {_debugfs_path(src)} {_debugfs_path(tmp)}")
            copied = Path(tmp) / os.path.basename(src.rstrip("/"))
            if not copied.is_dir():
                raise RuntimeError(f"debugfs rdump {src} from {image} failed: {proc.stderr}")
            copied.rename(dest)
    else:
        dest.unlink(missing_ok=True)
        proc = _debugfs(image, f"dump -p {_debugfs_path(src)} {_debugfs_path(str(dest))}")
        if not dest.exists() or "File not found" in proc.stderr:
            dest.unlink(missing_ok=True)
            raise FileNotFoundError(f"{src} not in {image}: {proc.stderr.strip()}")
    return dest



def replay_journal(image: Path) -> None:
    """Replay the ext4 journal of a disk the guest left without unmounting (reboot(2) after
    sync): debugfs reads the disk as it is and would miss what sits in the journal."""
    subprocess.run(["e2fsck", "-y", "-E", "journal_only", str(image)], capture_output=True,
                   timeout=120, check=False)
