"""The capture flow as an explicit state machine: states, outcomes and the transition table.

This module does no I/O. The flow is the seed article's numbered operation flow
(panic -> capture kernel -> initramfs -> dump to the target -> vmcore by core_collector ->
success: reboot / failure: the configured default action: reboot, halt, a shell, or the
root file system's init), with RHEL's later actions (poweroff, dump_to_rootfs) beside them.
All transition logic lives in the table below; `Machine` only walks it, and an illegal
step raises without changing the state (the model is h11's state machine). `kdump-agent
states` prints the table, and the README's picture is drawn from it.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterator
from dataclasses import dataclass


class State(enum.Enum):
    """Where the capture is. The comments give the seed flow's step numbers."""

    START = "START"  # 1-3: panic, capture kernel boots, initramfs runs the agent
    LOAD_CONFIG = "LOAD_CONFIG"  # read /etc/kdump.conf as packed by mkinitrd
    RUN_PRE = "RUN_PRE"  # kdump_pre hooks
    NETWORK_UP = "NETWORK_UP"  # network targets only
    MOUNT_TARGET = "MOUNT_TARGET"  # 4: the target named in kdump.conf, or the default
    PREPARE_DIR = "PREPARE_DIR"  # <path>/<ip>-<date>/, 0700
    SAVE_DMESG = "SAVE_DMESG"  # the crashed kernel's log, saved before the big file
    COLLECT = "COLLECT"  # 5: the vmcore made by core_collector
    FINALIZE = "FINALIZE"  # sync, rename vmcore-incomplete -> vmcore
    RUN_POST = "RUN_POST"  # kdump_post hooks
    FINAL_ACTION = "FINAL_ACTION"  # 6 -> 14: final_action (reboot by default)
    FAILURE_ACTION = "FAILURE_ACTION"  # 6 -> 7..10: record, hooks, branch by the configured action
    REBOOT = "REBOOT"  # 8 -> 14: default reboot
    HALT = "HALT"  # 7 -> 16: default halt
    POWEROFF = "POWEROFF"  # RHEL's addition: 16, with the power off
    SHELL = "SHELL"  # 9 -> 15: a shell; final_action when it exits
    DUMP_TO_ROOTFS = "DUMP_TO_ROOTFS"  # RHEL 7's addition: the dump again, onto the root file system
    ROOTFS_MOUNT = "ROOTFS_MOUNT"  # the dump states again, against the root file system
    ROOTFS_PREPARE = "ROOTFS_PREPARE"
    ROOTFS_DMESG = "ROOTFS_DMESG"
    ROOTFS_COLLECT = "ROOTFS_COLLECT"
    ROOTFS_FINALIZE = "ROOTFS_FINALIZE"
    MOUNT_ROOT_RUN_INIT = "MOUNT_ROOT_RUN_INIT"  # 10 -> 11: mount the root file system on /sysroot
    ROOT_INIT = "ROOT_INIT"  # 11: hand over to the root file system's /sbin/init (12-14 there)


class Outcome(enum.Enum):
    """How a state's work ended. FAILURE_ACTION ends by naming the configured action,
    which is how the table branches to it."""

    DONE = "done"  # the work succeeded, or there was nothing to do
    FAILED = "failed"  # the work raised an error
    TIMED_OUT = "timed_out"  # the work overran the state's deadline
    HANDED_OVER = "handed_over"  # mount_root_run_init: the root's init carries on from here
    REBOOT = "reboot"
    HALT = "halt"
    POWEROFF = "poweroff"
    SHELL = "shell"
    DUMP_TO_ROOTFS = "dump_to_rootfs"
    MOUNT_ROOT_RUN_INIT = "mount_root_run_init"


SUCCESS_PATH: tuple[State, ...] = (
    State.START,
    State.LOAD_CONFIG,
    State.RUN_PRE,
    State.NETWORK_UP,
    State.MOUNT_TARGET,
    State.PREPARE_DIR,
    State.SAVE_DMESG,
    State.COLLECT,
    State.FINALIZE,
    State.RUN_POST,
    State.FINAL_ACTION,
)

# dump_to_rootfs runs these states again, each doing what its twin on the success path does.
ROOTFS_DUMP: dict[State, State] = {
    State.ROOTFS_MOUNT: State.MOUNT_TARGET,
    State.ROOTFS_PREPARE: State.PREPARE_DIR,
    State.ROOTFS_DMESG: State.SAVE_DMESG,
    State.ROOTFS_COLLECT: State.COLLECT,
    State.ROOTFS_FINALIZE: State.FINALIZE,
}

# The failure action's branch for each configured action (failure_action / default).
ACTION_BRANCHES: dict[Outcome, State] = {
    Outcome.REBOOT: State.REBOOT,
    Outcome.HALT: State.HALT,
    Outcome.POWEROFF: State.POWEROFF,
    Outcome.SHELL: State.SHELL,
    Outcome.DUMP_TO_ROOTFS: State.DUMP_TO_ROOTFS,
    Outcome.MOUNT_ROOT_RUN_INIT: State.MOUNT_ROOT_RUN_INIT,
}

# The agent's work ends in these: final_action ends the capture kernel (reboot(2)), and
# ROOT_INIT leaves it to dracut's init to switch to the root file system.
TERMINAL: frozenset[State] = frozenset({State.FINAL_ACTION, State.ROOT_INIT})

_ENDINGS = (Outcome.DONE, Outcome.FAILED, Outcome.TIMED_OUT)


def _chain(states: tuple[State, ...], on_failure: State) -> dict[tuple[State, Outcome], State]:
    """Each state leads to the next when done, and to on_failure otherwise."""
    table: dict[tuple[State, Outcome], State] = {}
    for here, after in itertools.pairwise(states):
        table[(here, Outcome.DONE)] = after
        table[(here, Outcome.FAILED)] = on_failure
        table[(here, Outcome.TIMED_OUT)] = on_failure
    return table


def _build_table() -> dict[tuple[State, Outcome], State]:
    table = _chain(SUCCESS_PATH, State.FAILURE_ACTION)
    # The failure action records the attempt and runs the hooks, then branches by the
    # configured action; if that work itself breaks, final_action runs.
    table |= {(State.FAILURE_ACTION, outcome): branch for outcome, branch in ACTION_BRANCHES.items()}
    # A failure action that names none (no config was read) takes the seed's default.
    table[(State.FAILURE_ACTION, Outcome.DONE)] = State.REBOOT
    table |= {(State.FAILURE_ACTION, outcome): State.FINAL_ACTION
              for outcome in (Outcome.FAILED, Outcome.TIMED_OUT)}
    # reboot, halt and poweroff end the machine; a shell hands back control; if any of them
    # returns, fails or overruns, final_action runs: the machine never stays stuck.
    for action in (State.REBOOT, State.HALT, State.POWEROFF, State.SHELL):
        table |= {(action, outcome): State.FINAL_ACTION for outcome in _ENDINGS}
    # dump_to_rootfs: the dump states again against the root file system, then final_action
    # whatever happens on the way.
    rootfs = (State.DUMP_TO_ROOTFS, *ROOTFS_DUMP, State.FINAL_ACTION)
    table |= _chain(rootfs, State.FINAL_ACTION)
    # mount_root_run_init mounted the root and found its init: the seed's step 11.
    table |= {(State.MOUNT_ROOT_RUN_INIT, outcome): State.FINAL_ACTION for outcome in _ENDINGS}
    table[(State.MOUNT_ROOT_RUN_INIT, Outcome.HANDED_OVER)] = State.ROOT_INIT
    return table


TRANSITIONS: dict[tuple[State, Outcome], State] = _build_table()


class IllegalTransition(Exception):
    """A step the table does not allow; raised before anything changes."""


@dataclass
class Machine:
    """Walks TRANSITIONS; knows the current state and nothing else."""

    state: State = State.START

    def advance(self, outcome: Outcome) -> State:
        """Move on from the current state by its outcome and return the new state."""
        try:
            following = TRANSITIONS[(self.state, outcome)]
        except KeyError:
            raise IllegalTransition(f"no transition from {self.state.value} on {outcome.value}") from None
        self.state = following
        return following


def table_rows() -> Iterator[tuple[State, Outcome, State]]:
    """The table in a stable order, for `kdump-agent states` and the docs."""
    order = list(State)
    for (here, outcome), after in sorted(
        TRANSITIONS.items(), key=lambda item: (order.index(item[0][0]), list(Outcome).index(item[0][1]))
    ):
        yield here, outcome, after


def _edges() -> dict[tuple[State, State], list[str]]:
    """Transitions grouped by (from, to): outcomes that lead to the same place share one edge."""
    edges: dict[tuple[State, State], list[str]] = {}
    for here, outcome, after in table_rows():
        edges.setdefault((here, after), []).append(outcome.value)
    return edges


def dot() -> str:
    """The table as a Graphviz digraph (`kdump-agent states --dot | dot -Tsvg`)."""
    lines = ["digraph kdump_agent {", "    rankdir=TB;"]
    for (here, after), outcomes in _edges().items():
        lines.append(f'    {here.value} -> {after.value} [label="{", ".join(outcomes)}"];')
    return "\n".join([*lines, "}"])


def mermaid() -> str:
    """The table as a mermaid flowchart, so pictures of the flow are drawn from the data.

    Outcomes that lead to the same place share one edge ("failed, timed_out").
    """
    lines = ["flowchart TD"]
    for (here, after), outcomes in _edges().items():
        label = ", ".join(outcomes)
        lines.append(f"    {here.value} -->|{label}| {after.value}")
    return "\n".join(lines)
