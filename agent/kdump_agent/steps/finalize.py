"""FINALIZE: make the vmcore durable, then give it its final name.

The rename comes after the sync, so a file named `vmcore` is always a complete dump;
anything that stops us earlier leaves `vmcore-incomplete`, which says what it is.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .. import system
from ..context import Capture, FileRecord
from ..targets.raw import RawTarget
from .collect import VMCORE_PARTIAL
from .dmesg import DMESG_NAME

VMCORE_NAME = "vmcore"
_CHUNK = 1 << 20


def describe(path: Path) -> FileRecord:
    """Size and sha256 of a saved file, so a copy of the dump can be checked later."""
    digest = hashlib.sha256()
    with open(path, "rb") as saved:
        while chunk := saved.read(_CHUNK):
            digest.update(chunk)
    return FileRecord(name=path.name, size=path.stat().st_size, sha256=digest.hexdigest())


def finalize(capture: Capture) -> str:
    if isinstance(capture.target, RawTarget):
        system.fsync(capture.target.device)
        capture.vmcore_saved = True
        return f"{capture.target.device} synced; `kdump-agent restore-raw` rebuilds the vmcore"
    assert capture.dump_dir is not None, "PREPARE_DIR ran"
    partial = capture.dump_dir / VMCORE_PARTIAL
    os.chmod(partial, 0o600)
    system.fsync(partial)
    os.sync()
    os.rename(partial, capture.dump_dir / VMCORE_NAME)
    system.fsync(capture.dump_dir)
    capture.vmcore_saved = True
    for name in (DMESG_NAME, VMCORE_NAME):
        if (capture.dump_dir / name).exists():
            capture.files.append(describe(capture.dump_dir / name))
    vmcore = capture.files[-1]
    return f"{VMCORE_NAME}: {vmcore.size} bytes"
