"""The dump's record: kexec-dmesg.log and the kdump-agent.json manifest.

Written just before the final or failure action, after success and after failure alike:
a failed dump's directory says what happened as clearly as a good one.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

from .. import __version__, memory, system
from ..context import Capture
from ..errors import KdumpError
from ..targets.raw import RawTarget
from ..targets.sshdest import SshDestination

log = logging.getLogger("kdump-agent")

MANIFEST_NAME = "kdump-agent.json"
KEXEC_DMESG_NAME = "kexec-dmesg.log"
MANIFEST_FORMAT = 1
# Room kept for the record: a manifest is a few KiB, the capture kernel's log rarely 1 MiB.
RESERVED_BYTES = {MANIFEST_NAME: 256 << 10, KEXEC_DMESG_NAME: 2 << 20}


def manifest(capture: Capture, result: str, action: str) -> dict[str, object]:
    """Everything an admin or a script needs to trust (or distrust) this dump."""
    failure = capture.journal.first_failure()
    config = capture.config
    return {
        "format": MANIFEST_FORMAT,
        "result": result,
        "failure": None if failure is None else {"state": failure.state.value,
                                                 "outcome": failure.outcome.value,
                                                 "reason": failure.detail},
        "action": action,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(capture.started_wall)),
        "versions": {"kdump_agent": __version__, "python": platform.python_version(),
                     "capture_kernel": platform.release()},
        "config": None if config is None else {
            "path": config.source, "sha256": config.digest,
            "core_collector": list(config.core_collector),
            "failure_action": config.failure_action.value, "final_action": config.final_action.value,
        },
        "target": _target(capture),
        "dump_dir": capture.where_saved,
        "collector": {"argv": capture.collector_argv, "exit_code": capture.collector_returncode},
        "transfer": capture.transfer or None,
        "footprint": footprint(capture),
        "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in capture.files],
        "states": [entry.as_dict() for entry in capture.journal.entries],
        "notes": capture.notes,
        "argv": sys.argv,
    }


def footprint(capture: Capture) -> dict[str, int | None]:
    """What this capture cost in memory: the figures crashkernel= is sized by."""
    unpacked = getattr(sys, "_MEIPASS", None)  # the one-file binary's unpack directory
    return {
        "agent_peak_rss_kib": memory.reading("/proc/self/status", "VmHWM"),
        "agent_unpacked_bytes": _tree_bytes(unpacked) if unpacked else None,
        "memfree_at_collect_kib": capture.memfree_at_collect_kib,
        "collector_peak_rss_kib": capture.collector_peak_kib,
    }


def _tree_bytes(top: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(top) for name in names
               if not os.path.islink(os.path.join(root, name)))


def _target(capture: Capture) -> dict[str, str | None] | None:
    target = capture.target
    if isinstance(target, RawTarget):
        return {"raw": target.device}
    if target is None:
        return None
    if isinstance(target, SshDestination):
        described: dict[str, str | None] = {"ssh": str(target), "path": target.directory}
    else:
        described = {"spec": target.spec, "fstype": target.fstype, "path": target.directory}
    if capture.target_address:
        described |= {"server_address": capture.target_address, "local_address": capture.local_address}
    return described


def reserve(dump_dir: Path) -> None:
    """Allocate the record's files before the collector runs.

    A collector that fills the disk must not leave us unable to say so: the record is later
    written into these blocks in place. Without room even for this, we go on unreserved.
    """
    for name, size in RESERVED_BYTES.items():
        fd = os.open(dump_dir / name, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as error:
            log.warning("could not reserve %d bytes for %s: %s", size, name, error)
        finally:
            os.close(fd)


def _write_in_place(path: Path, data: bytes) -> None:
    """Overwrite a (reserved) file from its start and cut it to the new length."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)


def write_record(capture: Capture, result: str, action: str) -> None:
    """Write both files into the dump directory, if the capture got far enough to have one.

    Failing to write them (a dead disk) is logged, never fatal: the action must still run.
    """
    record = manifest(capture, result, action)
    if capture.remote is not None and capture.remote_dir is not None:
        _send_record(capture, record)
        return
    if capture.dump_dir is None or not capture.dump_dir.is_dir():
        # Nowhere to write it (a raw device, or no target reached): the kernel log keeps it.
        log.info("manifest %s", json.dumps(record, separators=(",", ":")))
        return
    document = json.dumps(record, indent=2) + "\n"
    for name, data in ((MANIFEST_NAME, document.encode()),
                       (KEXEC_DMESG_NAME, system.read_kernel_log().encode())):
        try:
            _write_in_place(capture.dump_dir / name, data)
        except OSError as error:
            log.error("could not write %s: %s", name, error)
    system.sync()


def _send_record(capture: Capture, record: dict[str, object]) -> None:
    """Both files to the SSH server's dump directory; the kernel log keeps the manifest too,
    since a connection that failed the dump may fail this as well."""
    assert capture.remote is not None
    log.info("manifest %s", json.dumps(record, separators=(",", ":")))
    document = json.dumps(record, indent=2) + "\n"
    for name, data in ((MANIFEST_NAME, document.encode()),
                       (KEXEC_DMESG_NAME, system.read_kernel_log().encode())):
        try:
            capture.remote.put_file(data, name)
        except KdumpError as error:
            log.error("could not send %s: %s", name, error)
