"""FAILURE_ACTION, the states it branches to, and FINAL_ACTION.

FAILURE_ACTION records the failed attempt, runs the hooks, lets go of the target and
then names the configured action, which the transition table follows to a state of its
own (machine.py): REBOOT, HALT and POWEROFF call reboot(2); SHELL opens the kdump shell;
DUMP_TO_ROOTFS points the capture at the root file system, and the dump states run again
against it; MOUNT_ROOT_RUN_INIT hands over to the root file system's /sbin/init. Whatever
returns, fails or overruns ends in FINAL_ACTION: the machine never stays stuck in the
capture kernel.
"""

from __future__ import annotations

import logging

from .. import system
from ..config import Config
from ..context import Capture
from ..deadlines import HOOKS_SECONDS, SHELL_SECONDS, disk_timeout
from ..layout import FAILURE, SUCCESS
from ..machine import Outcome, State
from ..runner import Branch
from ..targets import registry
from ..targets.base import DumpState
from . import hooks
from .record import write_record

log = logging.getLogger("kdump-agent")

# States in which a failure means the dump was attempted (kdump_post then sees it fail).
DUMP_STATES = frozenset({State.NETWORK_UP, State.MOUNT_TARGET, State.PREPARE_DIR,
                         State.SAVE_DMESG, State.COLLECT, State.FINALIZE})

_POWER = {"reboot": system.Power.REBOOT, "halt": system.Power.HALT, "poweroff": system.Power.POWEROFF}


def failure_reason(capture: Capture) -> str:
    """Why the dump failed, from the journal: the first state that did not end well."""
    failure = capture.journal.first_failure()
    return f"{failure.state.value} {failure.outcome.value}: {failure.detail}" if failure else "unknown"


def run_failure_hooks(capture: Capture, failed_in: State | None) -> None:
    """kdump_post with the dump's failing status, if the dump was attempted (a failing
    kdump_pre means it was not), then kdump_emergency. Their failures are only logged."""
    config = capture.config
    if config is None:
        return
    if failed_in in DUMP_STATES:
        status = capture.dump.collector_returncode or 1
        post = hooks.run_post(config, status, HOOKS_SECONDS, capture.paths.hooks)
        capture.notes.append(f"post hooks: {post}")
    emergency = hooks.run_emergency(config, HOOKS_SECONDS, capture.paths.hooks)
    capture.notes.append(f"emergency hooks: {emergency}")


def record_and_release(capture: Capture, result: str) -> None:
    """Write the record and let go of the target. Nothing here may stop the action that
    follows: an error is logged and the machine still reboots (or halts, or powers off)."""
    try:
        write_record(capture, result, capture.action_taken)
    except Exception as error:  # noqa: BLE001 - the action must run whatever went wrong
        log.error("could not write the dump's record: %s", error)
    if capture.destination is not None:
        capture.destination.release(capture.dump)


def final_action(capture: Capture) -> str:
    action = capture.final_action
    result = SUCCESS if capture.vmcore_saved else FAILURE
    if capture.vmcore_saved:
        described = capture.destination.describe() if capture.destination else "the target"
        log.info("dump saved in %s", capture.where_saved or described)
    capture.action_taken = f"final_action {action.value}"
    record_and_release(capture, result)
    log.info("final action: %s", action.value)
    system.power(_POWER.get(action.value, system.Power.REBOOT))
    return action.value


def failure_action(capture: Capture) -> Branch:
    """The seed's steps 7-10: record the failed attempt and branch by the configured action.

    The record comes first: a shell may never be left, and the root's init or a dump to
    the root file system may not come back.
    """
    action = capture.failure_action
    failure = capture.journal.first_failure()
    log.error("dump failed (%s)", failure_reason(capture))
    if capture.where_saved is not None:
        log.error("what was saved is in %s", capture.where_saved)
    run_failure_hooks(capture, failure.state if failure else None)
    capture.action_taken = f"failure_action {action.value}"
    record_and_release(capture, FAILURE)
    return Branch(Outcome(action.value), f"failure_action {action.value}")


def power(capture: Capture, action: str) -> str:
    """REBOOT, HALT, POWEROFF: reboot(2). It returns only if the kernel refused."""
    log.info("failure action: %s", action)
    system.power(_POWER[action])
    return action


def shell(capture: Capture) -> str:
    """The seed's step 15: a shell on the console; final_action when it exits."""
    log.info("failure action: shell")
    where = f"What was saved is in {capture.where_saved} (released now).\n" if capture.where_saved else ""
    banner = (f"\n*** kdump-agent: the dump failed: {failure_reason(capture)}\n{where}"
              f"*** This is the kdump shell. /proc/vmcore is the crashed kernel's memory.\n"
              f"*** Type 'exit' to leave; then final_action {capture.final_action.value} runs.\n\n")
    status = system.interactive_shell(banner, SHELL_SECONDS)
    return f"shell exited {status}"


def dump_to_rootfs(capture: Capture) -> str:
    """RHEL's dump_to_rootfs: after the target failed, the dump states run again (ROOTFS_*)
    against `path` on the root file system mkinitrd recorded, in a fresh DumpState that
    keeps only the panic already read (ROOTFS_SAVE_DMESG reads it again if it gets there)."""
    config = loaded(capture)
    root = registry.recorded_root(capture.paths.recorded_rootfs, config.path,
                                  capture.paths.recorded_storage)
    log.info("failure action: dump_to_rootfs (%s)", root.describe())
    reason = failure_reason(capture)
    capture.destination, capture.dump = root, DumpState(panic=capture.dump.panic)
    capture.notes.append(f"dump_to_rootfs: the dump again, to {root.describe()}, after {reason}")
    return f"saving to {root.describe()}"


def mount_root_run_init(capture: Capture) -> Branch:
    """The seed's steps 10-11: mount the root file system where dracut's init switches to
    it, and hand over; there our service saves the dump (steps 12-13) and reboots (14)."""
    root = registry.recorded_root(capture.paths.recorded_rootfs, "/", capture.paths.recorded_storage)
    log.info("failure action: mount_root_run_init (%s on %s)", root.describe(), capture.paths.newroot)
    return Branch(Outcome.HANDED_OVER, root.mount_for_init(capture.paths.newroot, disk_timeout(capture)))


def loaded(capture: Capture) -> Config:
    assert capture.config is not None, "a failure action other than reboot needs the config"
    return capture.config
