"""The transition table against the seed article's numbered operation flow (its section 5)."""

from pathlib import Path

import pytest

from kdump_agent.config import Action
from kdump_agent.machine import (
    ACTION_BRANCHES,
    ROOTFS_DUMP,
    SUCCESS_PATH,
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    Machine,
    Outcome,
    State,
    dot,
    mermaid,
    table_rows,
)


def walk(outcomes: dict[State, Outcome]) -> list[State]:
    machine = Machine()
    seen = [machine.state]
    while machine.state not in TERMINAL:
        seen.append(machine.advance(outcomes.get(machine.state, Outcome.DONE)))
    return seen


def test_success_path_follows_seed_steps_4_5_6_14() -> None:
    # 4: dump to the target, 5: vmcore by core_collector, 6 success -> 14: final action.
    path = walk({})
    assert path == list(SUCCESS_PATH)
    assert path.index(State.MOUNT_TARGET) < path.index(State.COLLECT) < path.index(State.FINALIZE)
    assert State.FAILURE_ACTION not in path


@pytest.mark.parametrize("failing", SUCCESS_PATH[:-1])
@pytest.mark.parametrize("outcome", [Outcome.FAILED, Outcome.TIMED_OUT])
def test_any_failure_goes_to_failure_action_then_the_default_action(failing: State, outcome: Outcome) -> None:
    # 6 failure -> 7..10, and with no action named, the seed's default: reboot (14).
    path = walk({failing: outcome})
    assert path[-3:] == [State.FAILURE_ACTION, State.REBOOT, State.FINAL_ACTION]
    assert path.index(failing) == len(path) - 4


@pytest.mark.parametrize(("action", "branch"), [
    (Outcome.HALT, [State.HALT]),  # 7 -> 16
    (Outcome.REBOOT, [State.REBOOT]),  # 8 -> 14
    (Outcome.SHELL, [State.SHELL]),  # 9 -> 15, then final_action
    (Outcome.POWEROFF, [State.POWEROFF]),
    (Outcome.DUMP_TO_ROOTFS, [State.DUMP_TO_ROOTFS, *ROOTFS_DUMP]),
])
def test_the_failure_action_branches_by_the_configured_action(action: Outcome, branch: list[State]) -> None:
    path = walk({State.COLLECT: Outcome.FAILED, State.FAILURE_ACTION: action})
    assert path[path.index(State.FAILURE_ACTION) + 1:] == [*branch, State.FINAL_ACTION]


def test_mount_root_run_init_hands_over_to_the_root_init() -> None:
    # Seed steps 10-11: mount_root_run_init mounts the root and runs its /sbin/init.
    path = walk({State.MOUNT_TARGET: Outcome.FAILED, State.FAILURE_ACTION: Outcome.MOUNT_ROOT_RUN_INIT,
                 State.MOUNT_ROOT_RUN_INIT: Outcome.HANDED_OVER})
    assert path[-3:] == [State.FAILURE_ACTION, State.MOUNT_ROOT_RUN_INIT, State.ROOT_INIT]
    handing_over = [state for (state, outcome) in TRANSITIONS if outcome is Outcome.HANDED_OVER]
    assert handing_over == [State.MOUNT_ROOT_RUN_INIT]
    assert State.ROOT_INIT in TERMINAL


def test_every_configured_action_has_its_branch() -> None:
    assert {action.value for action in Action} == {outcome.value for outcome in ACTION_BRANCHES}
    for outcome, branch in ACTION_BRANCHES.items():
        assert TRANSITIONS[(State.FAILURE_ACTION, outcome)] is branch


@pytest.mark.parametrize("failing", list(ROOTFS_DUMP))
def test_a_dump_to_the_root_file_system_that_fails_ends_in_final_action(failing: State) -> None:
    path = walk({State.COLLECT: Outcome.FAILED, State.FAILURE_ACTION: Outcome.DUMP_TO_ROOTFS,
                 failing: Outcome.FAILED})
    assert path[-2:] == [failing, State.FINAL_ACTION]
    assert path.count(State.FAILURE_ACTION) == 1, "the failure action runs once"


def test_dump_state_never_follows_a_failure() -> None:
    path = walk({State.MOUNT_TARGET: Outcome.FAILED})
    assert State.COLLECT not in path


def test_every_state_but_the_terminal_ones_has_a_way_out_on_every_outcome() -> None:
    for state in State:
        if state in TERMINAL:
            continue
        for outcome in (Outcome.DONE, Outcome.FAILED, Outcome.TIMED_OUT):
            assert (state, outcome) in TRANSITIONS


def test_illegal_transition_raises_and_leaves_state_unchanged() -> None:
    machine = Machine(State.FINAL_ACTION)
    with pytest.raises(IllegalTransition):
        machine.advance(Outcome.DONE)
    assert machine.state is State.FINAL_ACTION


def test_table_rows_and_mermaid_are_drawn_from_the_table() -> None:
    rows = list(table_rows())
    assert len(rows) == len(TRANSITIONS)
    graph = mermaid()
    assert "COLLECT -->|done| FINALIZE" in graph
    assert "COLLECT -->|failed, timed_out| FAILURE_ACTION" in graph
    assert "FAILURE_ACTION -->|shell| SHELL" in graph
    assert "SHELL -->|done, failed, timed_out| FINAL_ACTION" in graph
    assert "MOUNT_ROOT_RUN_INIT -->|handed_over| ROOT_INIT" in graph


def test_readme_diagram_is_the_one_drawn_from_the_table() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("<!-- states:begin -->\n```mermaid\n")[1].split("\n```\n<!-- states:end -->")[0]
    assert block == mermaid(), "README is stale: paste `kdump-agent states --mermaid`"


def test_dot_graph_has_one_edge_per_destination() -> None:
    graph = dot()
    assert graph.startswith("digraph kdump_agent {")
    assert 'COLLECT -> FAILURE_ACTION [label="failed, timed_out"];' in graph
    assert 'MOUNT_ROOT_RUN_INIT -> ROOT_INIT [label="handed_over"];' in graph
