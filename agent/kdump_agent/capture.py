"""`kdump-agent capture`: the whole capture, from the config to the final action.

This module binds each state of the machine to its step and its deadline. It is the only
place that knows both, so the flow reads top to bottom here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import partial

from . import memory, system
from .config import Config
from .context import Capture, Paths
from .deadlines import HOOKS_SECONDS, deadline_for
from .errors import KdumpError
from .machine import ROOTFS_DUMP, State
from .runner import Branch, Journal, Runner, Step, on_commit
from .steps import actions, collect, dmesg, dumpdir, finalize, hooks, mount, setup

log = logging.getLogger("kdump-agent")


def loaded(capture: Capture) -> Config:
    """The config, for states that run only after LOAD_CONFIG succeeded."""
    assert capture.config is not None, "LOAD_CONFIG ran"
    return capture.config


CaptureStep = Callable[[Capture], "str | Branch | None"]


def isolated(capture: Capture, work: CaptureStep) -> Step:
    """The state's step: `work` fills in a fork of the capture, which the runner adopts
    only if the state ends within its deadline (runner.on_commit)."""
    def step() -> str | Branch | None:
        fork = capture.fork()
        on_commit(partial(capture.adopt, fork))
        return work(fork)
    return step


def bring_network_up(capture: Capture, timeout: float) -> str:
    """NETWORK_UP, whose modules (the network stack's, pyroute2) a capture imports only when
    it has a server to reach: at panic time every import is paid for in start-up time."""
    if capture.destination is None or capture.destination.server is None:
        return "no network target"
    from .steps import network_up
    return network_up.network_up(capture, timeout)


def steps_for(capture: Capture) -> dict[State, Step]:
    """Each state's work. States without an entry have nothing to do in this version."""
    def timeout(state: State) -> float:
        return deadline_for(capture, state)

    dump_steps: dict[State, CaptureStep] = {
        State.MOUNT_TARGET: mount.mount,
        State.PREPARE_DIR: dumpdir.prepare,
        State.SAVE_DMESG: lambda c: dmesg.save_dmesg(c, timeout(State.SAVE_DMESG)),
        State.COLLECT: lambda c: collect.collect(c, timeout(State.COLLECT)),
        State.FINALIZE: lambda c: finalize.finalize(c, timeout(State.FINALIZE)),
    }
    work: dict[State, CaptureStep] = {
        State.LOAD_CONFIG: setup.load_config,
        State.RUN_PRE: lambda c: hooks.run_pre(loaded(c), HOOKS_SECONDS, c.paths.hooks),
        State.NETWORK_UP: lambda c: bring_network_up(c, timeout(State.NETWORK_UP)),
        **dump_steps,
        State.RUN_POST: lambda c: hooks.run_post(loaded(c), 0, HOOKS_SECONDS, c.paths.hooks),
        State.FINAL_ACTION: actions.final_action,
        State.FAILURE_ACTION: actions.failure_action,
        State.REBOOT: lambda c: actions.power(c, "reboot"),
        State.HALT: lambda c: actions.power(c, "halt"),
        State.POWEROFF: lambda c: actions.power(c, "poweroff"),
        State.SHELL: actions.shell,
        State.DUMP_TO_ROOTFS: actions.dump_to_rootfs,
        **{again: dump_steps[twin] for again, twin in ROOTFS_DUMP.items()},
        State.MOUNT_ROOT_RUN_INIT: actions.mount_root_run_init,
    }
    return {state: isolated(capture, step) for state, step in work.items()}


def report_memory(capture: Capture, state: State) -> None:
    """debug_mem_level (the seed's knob): memory at each state, to size crashkernel by."""
    level = capture.config.debug_mem_level if capture.config else 0
    line = memory.snapshot(level)
    if line:
        log.info("%s: %s", state.value, line)


def require_vmcore(vmcore: str) -> None:
    """Refuse to run anywhere but after a crash.

    Every path through the flow ends in an action that takes the machine down (reboot,
    halt, a shell on the console), so `kdump-agent capture` typed on a running server would
    be an outage. Only a kernel booted by kexec after a panic has /proc/vmcore.
    """
    if not os.path.exists(vmcore):
        raise KdumpError(f"{vmcore} does not exist: this is not a capture kernel after a crash, and "
                         "`capture` would end in the failure action (a reboot); nothing was done. "
                         "To test the dump, run `kdump-agent test` (it crashes the machine on purpose)")


def capture(paths: Paths, *, from_rootfs: bool = False) -> Capture:
    """Run the capture. On a real capture kernel this ends in reboot(2) and never returns.
    It returns when mount_root_run_init handed over (`handed_over`), or when every action
    failed, and the caller then reboots as the last resort."""
    require_vmcore(paths.vmcore)
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
