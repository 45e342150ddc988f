"""PREPARE_DIR: make `<path>/<host-ip>-<YYYY-MM-DD-HH:MM:SS>/`, mode 0700.

The name is the one RHEL's tools and admins' scripts expect: network targets use our
address towards the server, local targets 127.0.0.1.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..context import Capture
from ..targets.raw import RawTarget
from .record import reserve

LOCAL_HOST_ADDRESS = "127.0.0.1"


def dump_dir_name(host_address: str, when: time.struct_time) -> str:
    return f"{host_address}-{time.strftime('%Y-%m-%d-%H:%M:%S', when)}"


def make_dump_dir(parent: Path, name: str) -> Path:
    """Create parent (0700 parts as needed) and a fresh dump directory in it.

    An existing directory of the same name (two dumps in one second) is never reused: the
    new one gets a suffix, so nothing already saved is overwritten.
    """
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    candidate = parent / name
    suffix = 1
    while True:
        try:
            candidate.mkdir(mode=0o700)
        except FileExistsError:
            suffix += 1
            candidate = parent / f"{name}-{suffix}"
            continue
        os.chmod(candidate, 0o700)
        return candidate


def prepare(capture: Capture) -> str:
    if isinstance(capture.target, RawTarget):
        return "nothing to prepare on a raw device"
    when = time.localtime(capture.started_wall)
    if capture.remote is not None:  # SSH: the directory is made on the server
        capture.remote_dir = capture.remote.make_dump_dir(dump_dir_name(capture.remote.local_address, when))
        return f"{capture.target}:{capture.remote_dir}"
    assert capture.target is not None and capture.target_root, "MOUNT_TARGET ran"
    parent = Path(capture.target_root) / capture.target.directory.lstrip("/")
    name = dump_dir_name(capture.local_address or LOCAL_HOST_ADDRESS, when)
    capture.dump_dir = make_dump_dir(parent, name)
    reserve(capture.dump_dir)
    return str(capture.dump_dir)
