"""`kdump-agent capture`: the whole capture, from the config to the final action.

This module binds each state of the machine to its step and its deadline. It is the only
place that knows both, so the flow reads top to bottom here.
"""

from __future__ import annotations

import logging
import os
from functools import partial

from . import memory, system
from .config import Config
from .context import Capture, Paths
from .deadlines import HOOKS_SECONDS, deadline_for
from .machine import State
from .runner import Journal, Runner, Step
from .steps import actions, collect, dmesg, dumpdir, finalize, hooks, mount, network_up, setup

log = logging.getLogger("kdump-agent")


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
        State.RUN_PRE: lambda: hooks.run_pre(loaded(capture), HOOKS_SECONDS, capture.paths.hooks),
        State.NETWORK_UP: lambda: network_up.network_up(capture, timeout(State.NETWORK_UP)),
        State.MOUNT_TARGET: partial(mount.mount, capture),
        State.PREPARE_DIR: partial(dumpdir.prepare, capture),
        State.SAVE_DMESG: lambda: dmesg.save_dmesg(capture, timeout(State.SAVE_DMESG)),
        State.COLLECT: lambda: collect.collect(capture, timeout(State.COLLECT)),
        State.FINALIZE: partial(finalize.finalize, capture),
        State.RUN_POST: lambda: hooks.run_post(loaded(capture), 0, HOOKS_SECONDS,
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


def capture(paths: Paths, *, from_rootfs: bool = False) -> Capture:
    """Run the capture. On a real capture kernel this ends in reboot(2) and never returns.
    It returns when mount_root_run_init handed over (`handed_over`), or when every action
    failed, and the caller then reboots as the last resort."""
    os.umask(0o077)
    state = Capture(paths=paths, journal=Journal(), from_rootfs=from_rootfs)
    Runner(steps=steps_for(state), deadline_for=partial(deadline_for, state),
           journal=state.journal, on_enter=partial(report_memory, state)).run()
    return state


def handed_over(state: Capture) -> bool:
    """True when the flow ended by handing over to the root file system's init."""
    return bool(state.journal.entries) and state.journal.entries[-1].state is State.ROOT_INIT


def last_resort() -> None:
    """Reboot without syncing: a file system that hung the actions may hang a sync too."""
    log.error("every action failed; rebooting")
    system.power(system.Power.REBOOT, sync=False)
