"""The runner: deadlines, exceptions and the journal."""

import threading

from kdump_agent.machine import Outcome, State
from kdump_agent.runner import Runner


def states_of(journal):  # type: ignore[no-untyped-def]
    return [(e.state, e.outcome) for e in journal.entries]


def test_runner_walks_success_path_and_journals_every_state() -> None:
    journal = Runner(steps={State.COLLECT: lambda: "collected"}, deadline_for=lambda s: 5).run()
    assert [s for s, _ in states_of(journal)][-1] is State.FINAL_ACTION
    assert all(o is Outcome.DONE for _, o in states_of(journal))
    collect = next(e for e in journal.entries if e.state is State.COLLECT)
    assert collect.detail == "collected"


def test_exception_in_a_step_becomes_failure_action() -> None:
    def broken() -> None:
        raise RuntimeError("disk on fire")

    journal = Runner(steps={State.MOUNT_TARGET: broken}, deadline_for=lambda s: 5).run()
    assert states_of(journal)[-4:] == [(State.MOUNT_TARGET, Outcome.FAILED),
                                      (State.FAILURE_ACTION, Outcome.DONE),
                                      (State.REBOOT, Outcome.DONE),  # no action named: the default
                                      (State.FINAL_ACTION, Outcome.DONE)]
    assert journal.first_failure().detail == "disk on fire"


def test_step_overrunning_its_deadline_times_out_instead_of_hanging() -> None:
    release = threading.Event()
    journal = Runner(steps={State.COLLECT: lambda: release.wait(30)},
                     deadline_for=lambda s: 0.2).run()
    release.set()
    failure = journal.first_failure()
    assert failure is not None
    assert (failure.state, failure.outcome) == (State.COLLECT, Outcome.TIMED_OUT)
    assert failure.seconds < 5
    assert "deadline of 0.2 s" in failure.detail


def test_overrun_kills_the_commands_the_step_started(mocker) -> None:  # type: ignore[no-untyped-def]
    kill = mocker.patch("kdump_agent.system.kill_children")
    release = threading.Event()
    Runner(steps={State.SAVE_DMESG: lambda: release.wait(30)}, deadline_for=lambda s: 0.1).run()
    release.set()
    kill.assert_called_once()
