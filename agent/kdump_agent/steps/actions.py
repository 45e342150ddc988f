"""FINAL_ACTION and FAILURE_ACTION: record the dump, release the target, act.

reboot, halt and poweroff go through reboot(2) after a sync. Actions this version does not
carry out yet return, and the state machine then runs final_action: the machine never
stays stuck in the capture kernel.
"""

from __future__ import annotations

import logging

from .. import system
from ..config import Action
from ..context import Capture
from ..machine import State
from . import hooks
from .record import write_record

log = logging.getLogger("kdump-agent")

# States in which a failure means the dump was attempted (kdump_post then sees it fail).
DUMP_STATES = frozenset({State.NETWORK_UP, State.MOUNT_TARGET, State.PREPARE_DIR,
                         State.SAVE_DMESG, State.COLLECT, State.FINALIZE})

_POWER = {Action.REBOOT: system.Power.REBOOT, Action.HALT: system.Power.HALT,
          Action.POWEROFF: system.Power.POWEROFF}


def run_failure_hooks(capture: Capture, failed_in: State | None) -> None:
    """kdump_post with the dump's failing status, if the dump was attempted (a failing
    kdump_pre means it was not), then kdump_emergency. Their failures are only logged."""
    config = capture.config
    if config is None:
        return
    if failed_in in DUMP_STATES:
        status = capture.collector_returncode or 1
        capture.notes.append(f"post hooks: {hooks.run_post(config, status, hooks.HOOKS_SECONDS, capture.paths.hooks)}")
    capture.notes.append(f"emergency hooks: {hooks.run_emergency(config, hooks.HOOKS_SECONDS, capture.paths.hooks)}")


def record_and_release(capture: Capture, result: str) -> None:
    """Write the record and unmount. Nothing here may stop the action that follows: an
    error is logged and the machine still reboots (or halts, or powers off)."""
    try:
        write_record(capture, result, capture.action_taken)
    except Exception as error:  # noqa: BLE001 - the action must run whatever went wrong
        log.error("could not write the dump's record: %s", error)
    release_target(capture)


def release_target(capture: Capture) -> None:
    """Sync and unmount what we mounted; a busy mount is left as it is (it is synced)."""
    system.sync()
    while capture.mounted:
        mountpoint = capture.mounted.pop()
        try:
            system.umount(mountpoint)
        except OSError as error:
            log.warning("%s", error)


def final_action(capture: Capture) -> str:
    action = capture.final_action
    failed = capture.journal.first_failure() is not None
    result = "failure" if failed else "success"
    if not failed:
        log.info("dump saved in %s", capture.dump_dir)
    capture.action_taken = f"final_action {action.value}"
    record_and_release(capture, result)
    log.info("final action: %s", action.value)
    system.power(_POWER.get(action, system.Power.REBOOT))
    return action.value


def failure_action(capture: Capture) -> str:
    action = capture.failure_action
    failure = capture.journal.first_failure()
    reason = f"{failure.state.value} {failure.outcome.value}: {failure.detail}" if failure else "unknown"
    log.error("dump failed (%s)", reason)
    if capture.dump_dir is not None:
        log.error("what was saved is in %s", capture.dump_dir)
    run_failure_hooks(capture, failure.state if failure else None)
    capture.action_taken = f"failure_action {action.value}"
    if action not in _POWER:
        log.error("failure action %s is not carried out by this version; running final_action",
                  action.value)
        capture.notes.append(f"failure_action {action.value} not carried out by this version")
        return "not carried out"
    record_and_release(capture, "failure")
    log.info("failure action: %s", action.value)
    system.power(_POWER[action])
    return action.value
