"""FINAL_ACTION and FAILURE_ACTION: record the dump, release the target, act.

reboot, halt and poweroff go through reboot(2) after a sync. shell and dump_to_rootfs
return when done, and the state machine then runs final_action; so does any action that
fails part-way (no shell, no root file system, no init): the machine never stays stuck in
the capture kernel. mount_root_run_init hands over to the root file system's /sbin/init.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from .. import system
from ..config import Action, Config
from ..context import Capture
from ..deadlines import (
    BASE_DEADLINES,
    HOOKS_SECONDS,
    SHELL_SECONDS,
    collect_seconds,
    disk_timeout,
    finalize_seconds,
)
from ..errors import KdumpError
from ..machine import State
from ..runner import HandOver
from ..targets.local import FilesystemTarget, wait_for_device
from ..targets.nfs import NfsTarget
from . import collect, dmesg, dumpdir, finalize, hooks, mount
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
        post = hooks.run_post(config, status, HOOKS_SECONDS, capture.paths.hooks)
        capture.notes.append(f"post hooks: {post}")
    emergency = hooks.run_emergency(config, HOOKS_SECONDS, capture.paths.hooks)
    capture.notes.append(f"emergency hooks: {emergency}")


def record_and_release(capture: Capture, result: str) -> None:
    """Write the record and unmount. Nothing here may stop the action that follows: an
    error is logged and the machine still reboots (or halts, or powers off)."""
    try:
        write_record(capture, result, capture.action_taken)
    except Exception as error:  # noqa: BLE001 - the action must run whatever went wrong
        log.error("could not write the dump's record: %s", error)
    release_target(capture)


def release_target(capture: Capture) -> None:
    """Close the SSH connection, sync and unmount what we mounted; a busy mount is left as
    it is (it is synced). An NFS mount is let go of by force: its server may be dead."""
    if capture.remote is not None:
        capture.remote.close()
        capture.remote = None
    network = isinstance(capture.target, NfsTarget)
    if not network:
        system.sync()  # on a dead NFS server a sync would wait for good
    while capture.mounted:
        mountpoint = capture.mounted.pop()
        try:
            system.umount(mountpoint, force=network)
        except OSError as error:
            log.warning("%s", error)


def final_action(capture: Capture) -> str:
    action = capture.final_action
    result = "success" if capture.vmcore_saved else "failure"
    if capture.vmcore_saved:
        log.info("dump saved in %s", capture.where_saved or capture.target)
    capture.action_taken = f"final_action {action.value}"
    record_and_release(capture, result)
    log.info("final action: %s", action.value)
    system.power(_POWER.get(action, system.Power.REBOOT))
    return action.value


def failure_action(capture: Capture) -> str | HandOver:
    action = capture.failure_action
    failure = capture.journal.first_failure()
    reason = f"{failure.state.value} {failure.outcome.value}: {failure.detail}" if failure else "unknown"
    log.error("dump failed (%s)", reason)
    if capture.where_saved is not None:
        log.error("what was saved is in %s", capture.where_saved)
    run_failure_hooks(capture, failure.state if failure else None)
    capture.action_taken = f"failure_action {action.value}"
    # The record of this attempt first: a shell may never be left, and the root's init
    # or a dump to the root file system may not come back.
    record_and_release(capture, "failure")
    if action in _POWER:
        log.info("failure action: %s", action.value)
        system.power(_POWER[action])
        return action.value
    return _RETURNING_ACTIONS[action](capture, reason)


def shell(capture: Capture, reason: str) -> str:
    """The seed's step 15: a shell on the console; final_action when it exits."""
    log.info("failure action: shell")
    where = f"What was saved is in {capture.where_saved} (released now).\n" if capture.where_saved else ""
    banner = (f"\n*** kdump-agent: the dump failed: {reason}\n{where}"
              f"*** This is the kdump shell. /proc/vmcore is the crashed kernel's memory.\n"
              f"*** Type 'exit' to leave; then final_action {capture.final_action.value} runs.\n\n")
    status = system.interactive_shell(banner, SHELL_SECONDS)
    return f"shell exited {status}"


def dump_to_rootfs(capture: Capture, reason: str) -> str:
    """RHEL's dump_to_rootfs: after the target failed, save the dump to `path` on the root
    file system mkinitrd recorded, then final_action (the next state) runs."""
    config, root = loaded(capture), recorded_rootfs(capture)
    log.info("failure action: dump_to_rootfs (%s, %s)", root.spec, config.path)
    capture.target = FilesystemTarget(spec=root.spec, fstype=root.fstype, directory=config.path)
    capture.dump_dir, capture.files, capture.target_root = None, [], None
    capture.remote_dir, capture.transfer = None, {}
    capture.target_address = capture.local_address = None
    notes = [mount.mount(capture), dumpdir.prepare(capture),
             dmesg.save_dmesg(capture, BASE_DEADLINES[State.SAVE_DMESG]),
             collect.collect(capture, collect_seconds(capture.paths.vmcore)),
             finalize.finalize(capture, finalize_seconds(capture.paths.vmcore))]
    capture.notes.append(f"dump_to_rootfs: {'; '.join(notes)}")
    return f"saved to the root file system in {capture.dump_dir}"


def mount_root_run_init(capture: Capture, reason: str) -> HandOver:
    """The seed's steps 10-11: mount the root file system where dracut's init switches to
    it, and hand over; there our service saves the dump (steps 12-13) and reboots (14)."""
    root = recorded_rootfs(capture)
    newroot = capture.paths.newroot
    log.info("failure action: mount_root_run_init (%s on %s)", root.spec, newroot)
    device = wait_for_device(root.spec, disk_timeout(capture))
    system.mount(device, newroot, root.fstype)
    if not os.path.lexists(os.path.join(newroot, "sbin", "init")):
        system.umount(newroot)
        raise KdumpError(f"the root file system {root.spec} has no /sbin/init")
    return HandOver(f"{root.spec} mounted on {newroot}; its /sbin/init carries on")


def recorded_rootfs(capture: Capture) -> FilesystemTarget:
    """The root file system mkinitrd recorded for the actions that need it."""
    try:
        return FilesystemTarget.from_json(Path(capture.paths.recorded_rootfs).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError) as error:
        raise KdumpError(f"no root file system recorded by mkinitrd ({capture.paths.recorded_rootfs}: "
                         f"{error})") from error


def loaded(capture: Capture) -> Config:
    assert capture.config is not None, "a failure action other than reboot needs the config"
    return capture.config


_RETURNING_ACTIONS: dict[Action, Callable[[Capture, str], str | HandOver]] = {
    Action.SHELL: shell,
    Action.DUMP_TO_ROOTFS: dump_to_rootfs,
    Action.MOUNT_ROOT_RUN_INIT: mount_root_run_init,
}
