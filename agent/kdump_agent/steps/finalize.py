"""FINALIZE: make the vmcore durable, then give it its final name.

The rename comes after the sync, so a file named `vmcore` is always a complete dump;
anything that stops us earlier leaves `vmcore-incomplete`, which says what it is.
"""

from __future__ import annotations

import os
import posixpath

from .. import system
from ..context import Capture, FileRecord
from ..targets.raw import RawTarget
from .collect import VMCORE_PARTIAL
from .dmesg import DMESG_NAME

VMCORE_NAME = "vmcore"


def finalize(capture: Capture) -> str:
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
    os.sync()
    os.rename(partial, capture.dump_dir / VMCORE_NAME)
    system.fsync(capture.dump_dir)
    capture.vmcore_saved = True
    for name in (DMESG_NAME, VMCORE_NAME):
        if (capture.dump_dir / name).exists():
            capture.files.append(FileRecord.of(capture.dump_dir / name))
    vmcore = capture.files[-1]
    return f"{VMCORE_NAME}: {vmcore.size} bytes"


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
