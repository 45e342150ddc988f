"""`kdump-agent capture`: the whole capture, from the config to the final action.

This module binds each state of the machine to its step and its deadline. It is the only
place that knows both, so the flow reads top to bottom here.
"""

from __future__ import annotations

import logging
import os
from functools import partial

from . import memory, system
from .context import Capture, Paths
from .machine import State
from .runner import Journal, Runner, Step
from .config import Config
from .steps import actions, collect, dmesg, dumpdir, finalize, hooks, mount, setup

log = logging.getLogger("kdump-agent")

# Seconds each state may take. Waiting for the disk is bounded by disk_timeout (see
# deadline_for); the collector's deadline grows with the memory it has to read.
BASE_DEADLINES: dict[State, float] = {
    State.START: 10,
    State.LOAD_CONFIG: 30,
    State.RUN_PRE: hooks.HOOKS_SECONDS,
    State.NETWORK_UP: 60,
    State.MOUNT_TARGET: 60,  # plus disk_timeout
    State.PREPARE_DIR: 60,
    State.SAVE_DMESG: 120,
    State.COLLECT: 600,  # plus COLLECT_SECONDS_PER_GIB per GiB of /proc/vmcore
    State.FINALIZE: 600,  # syncs and re-reads the vmcore for its sha256
    State.RUN_POST: hooks.HOOKS_SECONDS,
    State.FINAL_ACTION: 120,
    State.FAILURE_ACTION: 120 + 2 * hooks.HOOKS_SECONDS,  # kdump_post and kdump_emergency first
}
# ~17 MiB/s: far below any disk a dump is written to, so only a stuck collector hits it.
COLLECT_SECONDS_PER_GIB = 60.0


def vmcore_gib(path: str) -> float:
    """The size of the crashed kernel's memory image, in GiB (0 when it cannot be read)."""
    try:
        return os.stat(path).st_size / (1 << 30)
    except OSError:
        return 0.0


def deadline_for(capture: Capture, state: State) -> float:
    base = BASE_DEADLINES[state]
    if state is State.MOUNT_TARGET:
        return base + mount.disk_timeout(capture)
    if state is State.COLLECT:
        return base + COLLECT_SECONDS_PER_GIB * vmcore_gib(capture.paths.vmcore)
    return base


def loaded(capture: Capture) -> Config:
    """The config, for states that run only after LOAD_CONFIG succeeded."""
    assert capture.config is not None, "LOAD_CONFIG ran"
    return capture.config


def steps_for(capture: Capture) -> dict[State, Step]:
    """Each state's work. States without an entry have nothing to do in this version."""
    def timeout(state: State) -> float:
        return deadline_for(capture, state)

    return {
        State.LOAD_CONFIG: partial(setup.load_config, capture),
        State.RUN_PRE: lambda: hooks.run_pre(loaded(capture), hooks.HOOKS_SECONDS, capture.paths.hooks),
        State.MOUNT_TARGET: partial(mount.mount, capture),
        State.PREPARE_DIR: partial(dumpdir.prepare, capture),
        State.SAVE_DMESG: lambda: dmesg.save_dmesg(capture, timeout(State.SAVE_DMESG)),
        State.COLLECT: lambda: collect.collect(capture, timeout(State.COLLECT)),
        State.FINALIZE: partial(finalize.finalize, capture),
        State.RUN_POST: lambda: hooks.run_post(loaded(capture), 0, hooks.HOOKS_SECONDS,
                                                    capture.paths.hooks),
        State.FINAL_ACTION: partial(actions.final_action, capture),
        State.FAILURE_ACTION: partial(actions.failure_action, capture),
    }


def report_memory(capture: Capture, state: State) -> None:
    """debug_mem_level (the seed's knob): memory at each state, to size crashkernel by."""
    level = capture.config.debug_mem_level if capture.config else 0
    line = memory.snapshot(level)
    if line:
        log.info("%s: %s", state.value, line)


def capture(paths: Paths) -> Capture:
    """Run the capture. On a real capture kernel this ends in reboot(2) and never returns;
    if every action failed it returns, and the caller reboots as the last resort."""
    os.umask(0o077)
    state = Capture(paths=paths, journal=Journal())
    Runner(steps=steps_for(state), deadline_for=partial(deadline_for, state),
           journal=state.journal, on_enter=partial(report_memory, state)).run()
    return state


def last_resort() -> None:
    """Reboot without syncing: a file system that hung the actions may hang a sync too."""
    log.error("every action failed; rebooting")
    system.power(system.Power.REBOOT, sync=False)
