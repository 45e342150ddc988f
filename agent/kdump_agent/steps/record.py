"""The dump's record: the kdump-agent.json manifest and the capture kernel's log.

Written just before the final or failure action, after success and after failure alike:
a failed dump's directory says what happened as clearly as a good one. The destination
keeps them where the dump is (targets/base.py, save_record).
"""

from __future__ import annotations

import os
import platform
import sys
import time

from .. import __version__, memory, system
from ..context import Capture
from ..layout import MANIFEST_FORMAT
from ..targets.base import log_manifest


def manifest(capture: Capture, result: str, action: str) -> dict[str, object]:
    """Everything an admin or a script needs to trust (or distrust) this dump."""
    failure = capture.journal.first_failure()
    config, state = capture.config, capture.dump
    return {
        "format": MANIFEST_FORMAT,
        "result": result,
        "failure": None if failure is None else {"state": failure.state.value,
                                                 "outcome": failure.outcome.value,
                                                 "reason": failure.detail},
        "action": action,
        "panic": state.panic,
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
        "collector": {"argv": state.collector_argv, "exit_code": state.collector_returncode},
        "transfer": state.transfer.as_dict() if state.transfer else None,
        "footprint": footprint(capture),
        "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in state.files],
        "states": [entry.as_dict() for entry in capture.journal.entries],
        "notes": [*capture.notes, *state.notes],
        "argv": sys.argv,
    }


def footprint(capture: Capture) -> dict[str, int | None]:
    """What this capture cost in memory: the figures crashkernel= is sized by."""
    program = getattr(sys, "_MEIPASS", None)  # the program's directory, laid out in the image
    return {
        "agent_peak_rss_kib": memory.reading("/proc/self/status", "VmHWM"),
        "agent_unpacked_bytes": _tree_bytes(program) if program else None,
        "memfree_at_collect_kib": capture.dump.memfree_at_collect_kib,
        "collector_peak_rss_kib": capture.dump.collector_peak_kib,
    }


def _tree_bytes(top: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(top) for name in names
               if not os.path.islink(os.path.join(root, name)))


def _target(capture: Capture) -> dict[str, str | None] | None:
    if capture.destination is None:
        return None
    described = capture.destination.manifest_target()
    if capture.dump.server_address:
        described |= {"server_address": capture.dump.server_address,
                      "local_address": capture.dump.local_address}
    return described


def write_record(capture: Capture, result: str, action: str) -> None:
    """Keep the record with the dump, if the capture got far enough to have a destination.

    Failing to write it (a dead disk) is logged, never fatal: the action must still run.
    """
    record = manifest(capture, result, action)
    if capture.destination is None:
        log_manifest(record)  # no target reached: the kernel log keeps it
        return
    capture.destination.save_record(capture.dump, record, system.read_kernel_log())
