"""Runs the state machine: one step per state, each under a deadline, every step journaled.

A step runs in a worker thread and the runner waits for it at most the state's deadline.
A step that overruns (an NFS server gone, a disk that never answers) becomes a TIMED_OUT
outcome and its commands are killed; the flow moves on to the failure action instead of
hanging, which is the one thing a capture kernel must never do.

Python cannot stop a thread, so a step that overran may still be running while the next
state runs. It must not change what the next states see: a step works on a copy of the
capture and hands the runner, through `on_commit`, what applies its changes. The runner
applies them when the step ends in time (done or failed: a failure's partial facts, such
as the collector's exit status, are what the failure record needs) and never once the
state has timed out: then the step's changes stay in its copy, and go nowhere.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from . import system
from .machine import TERMINAL, Machine, Outcome, State

log = logging.getLogger("kdump-agent")


@dataclass(frozen=True)
class Branch:
    """What a step returns when its outcome is a choice, not just "done": the failure
    action's branch for the configured action, or HANDED_OVER to the root's init."""

    outcome: Outcome
    note: str = ""


# A step does its state's work; it may return a short note for the journal, or a Branch.
Step = Callable[[], "str | Branch | None"]


@dataclass(frozen=True)
class JournalEntry:
    """One state as it happened: what ran, how it ended, how long it took, and why."""

    state: State
    outcome: Outcome
    seconds: float
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"state": self.state.value, "outcome": self.outcome.value,
                "seconds": round(self.seconds, 3), "detail": self.detail}


@dataclass
class Journal:
    """Every state entered, in order; the manifest and the kernel log are written from it."""

    entries: list[JournalEntry] = field(default_factory=list)

    def record(self, entry: JournalEntry) -> None:
        self.entries.append(entry)
        line = f"state {entry.state.value}: {entry.outcome.value} in {entry.seconds:.2f} s"
        log.info("%s%s", line, f" ({entry.detail})" if entry.detail else "")

    def first_failure(self) -> JournalEntry | None:
        """The entry that sent the flow to the failure action, if any."""
        return next((e for e in self.entries if e.outcome is not Outcome.DONE), None)


class _Fence:
    """One state's worker and the runner agree here, under a lock, on which of the two
    happened first: the step ended (its result counts and its changes are applied), or
    the deadline passed (nothing the step does afterwards counts)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.finished = False
        self.abandoned = False
        self.commit: Callable[[], None] | None = None
        self.note: object = None
        self.error: BaseException | None = None

    def finish(self, note: object, error: BaseException | None) -> None:
        """The worker's last act: apply the step's changes unless the runner gave up on it."""
        with self.lock:
            if self.abandoned:
                return
            self.note, self.error = note, error
            if self.commit is not None:
                try:
                    self.commit()
                except BaseException as failure:  # noqa: BLE001 - reported as the state's failure
                    self.error = self.error or failure
            self.finished = True

    def give_up(self) -> bool:
        """The runner's side: True if the step had not finished, which now it never will."""
        with self.lock:
            if not self.finished:
                self.abandoned = True
            return self.abandoned


_current = threading.local()


def on_commit(apply: Callable[[], None]) -> None:
    """Called by a step (in its worker thread): run `apply` when the state ends in time.

    Outside the runner (a step called directly) there is no deadline to race, so `apply`
    runs at once.
    """
    fence: _Fence | None = getattr(_current, "fence", None)
    if fence is None:
        apply()
        return
    fence.commit = apply


@dataclass
class Runner:
    """Walks the machine from START until the terminal state, running each state's step."""

    steps: Mapping[State, Step]
    deadline_for: Callable[[State], float]  # asked on entry: some depend on the config
    journal: Journal = field(default_factory=Journal)
    clock: Callable[[], float] = time.monotonic
    on_enter: Callable[[State], None] = lambda state: None  # e.g. the memory report

    def run(self) -> Journal:
        """Run every state to a terminal one. Returns after ROOT_INIT (the caller lets the
        root's init take over) or when the final action returned (it normally does not:
        reboot(2) ends the process), so the caller's last resort can act."""
        machine = Machine()
        while True:
            state = machine.state
            self.on_enter(state)
            outcome, detail, seconds = self._execute(state)
            self.journal.record(JournalEntry(state, outcome, seconds, detail))
            if state in TERMINAL:
                return self.journal
            machine.advance(outcome)

    def _execute(self, state: State) -> tuple[Outcome, str, float]:
        step = self.steps.get(state)
        started = self.clock()
        if step is None:
            return Outcome.DONE, "nothing to do", 0.0
        fence = _Fence()

        def work() -> None:
            _current.fence = fence
            try:
                note, error = step(), None
            except BaseException as raised:  # noqa: BLE001 - every error is a failure outcome
                note, error = None, raised
            fence.finish(note, error)

        worker = threading.Thread(target=work, name=f"state-{state.value}", daemon=True)
        worker.start()
        deadline = self.deadline_for(state)
        worker.join(deadline)
        seconds = self.clock() - started
        if worker.is_alive() and fence.give_up():
            system.kill_children()
            return Outcome.TIMED_OUT, f"overran its deadline of {deadline:g} s", seconds
        worker.join()  # it finished as the deadline passed: only its return is left
        if fence.error is not None:
            error = fence.error
            log.error("%s failed: %s", state.value, error)
            return Outcome.FAILED, str(error) or type(error).__name__, seconds
        note = fence.note
        if isinstance(note, Branch):
            return note.outcome, note.note, seconds
        return Outcome.DONE, note if isinstance(note, str) else "", seconds
