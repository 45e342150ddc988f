"""FINALIZE: make the vmcore durable, give it its final name, then checksum it.

The rename comes after the fsync, so a file named `vmcore` is always a complete dump;
anything that stops us earlier leaves `vmcore-incomplete`, which says what it is. The
dump counts as saved from the rename on.

The sha256 for the record needs the whole file read back, work that grows with the dump
(a 1 TiB machine's vmcore over 1 GbE NFS is hours of it). It gets its own share of the
state's deadline, which grows with the dump as the collector's does, and it is the one
thing here allowed to give up: past its time the record says the vmcore was not hashed,
and the dump is still saved. Nothing after the rename may fail the dump, or the failure
action would save the same dump a second time.
"""

from __future__ import annotations

import logging
import os
import posixpath
import time
from pathlib import Path

from .. import system
from ..context import Capture, FileRecord
from ..targets.raw import RawTarget
from .collect import VMCORE_PARTIAL
from .dmesg import DMESG_NAME

log = logging.getLogger("kdump-agent")

VMCORE_NAME = "vmcore"
# Kept back from the state's deadline for what follows the hash (the record of the files).
HASH_MARGIN_SECONDS = 10.0


def finalize(capture: Capture, timeout: float) -> str:
    started = time.monotonic()
    if isinstance(capture.target, RawTarget):
        system.fsync(capture.target.device)
        capture.vmcore_saved = True
        return f"{capture.target.device} synced; `kdump-agent restore-raw` rebuilds the vmcore"
    if capture.remote is not None:
        return _finalized_remotely(capture)
    assert capture.dump_dir is not None, "PREPARE_DIR ran"
    partial = capture.dump_dir / VMCORE_PARTIAL
    os.chmod(partial, 0o600)
    system.fsync(partial)
    os.rename(partial, capture.dump_dir / VMCORE_NAME)
    system.fsync(capture.dump_dir)
    capture.vmcore_saved = True
    give_up_at = started + max(0.0, timeout - HASH_MARGIN_SECONDS)
    for name in (DMESG_NAME, VMCORE_NAME):
        if (capture.dump_dir / name).exists():
            capture.files.append(_recorded(capture, capture.dump_dir / name, give_up_at))
    vmcore = capture.files[-1]
    return f"{VMCORE_NAME}: {vmcore.size} bytes" + ("" if vmcore.sha256 else ", not hashed")


def _recorded(capture: Capture, path: Path, give_up_at: float) -> FileRecord:
    """The file's size and sha256; without the sha256 (and a note saying why) when reading
    it back fails or runs out of time."""
    size = path.stat().st_size
    try:
        return FileRecord(path.name, size, system.file_sha256(path, give_up_at=give_up_at))
    except (OSError, TimeoutError) as error:
        log.warning("%s is saved, but not hashed: %s", path, error)
        capture.notes.append(f"{path.name} not hashed: {error}")
        return FileRecord(path.name, size, None)


def _finalized_remotely(capture: Capture) -> str:
    """SSH: the server flushed, size-checked and renamed the file as the stream ended
    (targets/ssh.py); what is left is to note it."""
    transfer = capture.transfer
    name = posixpath.basename(str(transfer["path"]))
    sha256 = transfer["sha256"]
    capture.files.append(FileRecord(name, int(str(transfer["size"])), str(sha256) if sha256 else None))
    capture.vmcore_saved = True
    if transfer["flattened"]:
        capture.notes.append(f"the server has no SFTP: the dump is {name} in the flattened format; "
                             f"`makedumpfile -R vmcore < {name}` rebuilds it")
    return f"{capture.where_saved}/{name}: {transfer['size']} bytes"
