"""How long each state of the capture may take. Every wait in the capture path is bounded
by these: a state that overruns is a failure, never a hang."""

from __future__ import annotations

import os

from .context import Capture
from .machine import ROOTFS_DUMP, State
from .ssh.resume import RESUME_SECONDS
from .targets.local import DEFAULT_DISK_TIMEOUT

# The admin's hooks of one kind (kdump_pre and pre.d, ...) get this much in all.
HOOKS_SECONDS = 300.0
# A kdump shell left open this long is closed and final_action runs: a forgotten shell
# must not keep a production machine down for good.
SHELL_SECONDS = 4 * 3600.0
# ~17 MiB/s: far below any disk a dump is written to, so only a stuck collector hits it.
COLLECT_SECONDS_PER_GIB = 60.0
# FINALIZE reads the vmcore back for its sha256: the same allowance per GiB. No work that
# grows with the dump has a fixed deadline.
READBACK_SECONDS_PER_GIB = COLLECT_SECONDS_PER_GIB

# keep_old_dumps and free_disk_size: listing `path` and deleting old dumps (each deletion a
# few requests, each bounded by the target's own timeouts) stops starting new deletions
# after this long, and the state gets this much more.
ROTATION_SECONDS = 60.0
# free_disk_size: makedumpfile's dry run, which estimates the dump's size, may take this
# share of the collector's own allowance (and the state gets it on top).
ESTIMATE_SHARE = 0.25

BASE_DEADLINES: dict[State, float] = {
    State.START: 10,
    State.LOAD_CONFIG: 30,
    State.RUN_PRE: HOOKS_SECONDS,
    State.NETWORK_UP: 60,  # plus link_delay
    State.MOUNT_TARGET: 60,  # plus disk_timeout
    State.PREPARE_DIR: 60,
    State.SAVE_DMESG: 120,
    State.COLLECT: 600,  # plus COLLECT_SECONDS_PER_GIB per GiB of /proc/vmcore, plus
    # RESUME_SECONDS for an SSH server: what reconnecting after broken connections may cost
    State.FINALIZE: 120,  # fsync, rename; plus READBACK_SECONDS_PER_GIB for the sha256
    State.RUN_POST: HOOKS_SECONDS,
    State.FINAL_ACTION: 120,
    State.FAILURE_ACTION: 120 + 2 * HOOKS_SECONDS,  # the record, kdump_post and kdump_emergency
    State.REBOOT: 120,  # a sync (at most 60 s), then reboot(2)
    State.HALT: 120,
    State.POWEROFF: 120,
    State.SHELL: SHELL_SECONDS + 60,  # the shell itself is closed after SHELL_SECONDS
    State.DUMP_TO_ROOTFS: 10,  # reads the root file system's record; the ROOTFS_* states dump
    State.MOUNT_ROOT_RUN_INIT: 60,  # plus disk_timeout
    State.ROOT_INIT: 10,
}


def disk_timeout(capture: Capture) -> float:
    """disk_timeout from kdump.conf, or the default wait for the target device."""
    configured = capture.config.disk_timeout if capture.config else None
    return float(configured) if configured is not None else DEFAULT_DISK_TIMEOUT


def _gib(vmcore: str) -> float:
    """The crashed kernel's memory in GiB: what the collector reads, and at most what the
    vmcore it writes holds."""
    try:
        return os.stat(vmcore).st_size / (1 << 30)
    except OSError:
        return 0.0


def collect_seconds(vmcore: str) -> float:
    """The collector's deadline: it grows with the memory it has to read."""
    return BASE_DEADLINES[State.COLLECT] + COLLECT_SECONDS_PER_GIB * _gib(vmcore)


def finalize_seconds(vmcore: str) -> float:
    """FINALIZE's deadline: it grows with the vmcore it reads back."""
    return BASE_DEADLINES[State.FINALIZE] + READBACK_SECONDS_PER_GIB * _gib(vmcore)


def deadline_for(capture: Capture, state: State) -> float:
    """The deadline of a state, asked as the state is entered (some depend on the config).
    The dump_to_rootfs states have their twins' deadlines."""
    state = ROOTFS_DUMP.get(state, state)
    base = BASE_DEADLINES[state]
    if state is State.NETWORK_UP:
        return base + float(capture.config.link_delay or 0 if capture.config else 0)
    if state in (State.MOUNT_TARGET, State.MOUNT_ROOT_RUN_INIT):
        return base + disk_timeout(capture)
    if state is State.PREPARE_DIR and capture.config and capture.config.keep_old_dumps:
        return base + ROTATION_SECONDS
    if state is State.COLLECT:
        collector = collect_seconds(capture.paths.vmcore)
        if capture.config and capture.config.free_disk_size:
            collector = collector * (1 + ESTIMATE_SHARE) + ROTATION_SECONDS
        resuming = capture.destination is not None and capture.destination.uses_ssh
        return collector + (RESUME_SECONDS if resuming else 0.0)
    if state is State.FINALIZE:
        return finalize_seconds(capture.paths.vmcore)
    return base
