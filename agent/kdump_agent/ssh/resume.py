"""How long and how often a broken SSH connection is made anew during one transfer.

A network blip, a switch failover or an sshd restart breaks the connection for seconds; a
server that is gone for good never comes back. So reconnecting is bounded twice: all the
outages of one transfer together may cost at most `budget` seconds (and COLLECT's deadline
grows by that much for an SSH target, deadlines.py), and at most `max_outages` breaks are
survived. Between attempts the wait doubles, from FIRST_WAIT up to LONGEST_WAIT, so a
restarting sshd is found within a second or two and a dead server is not hammered.

A refusal that no retry mends (a host key that is not the pinned one, a connection closed
on purpose) ends the transfer at once: `Refused`.

This module imports nothing of paramiko: deadlines.py reads RESUME_SECONDS from it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from ..errors import TransferError

log = logging.getLogger("kdump-agent")

RESUME_SECONDS = 120.0  # all outages of one transfer together
MAX_OUTAGES = 10
FIRST_WAIT = 0.5
LONGEST_WAIT = 10.0

T = TypeVar("T")


class Refused(TransferError):
    """Reconnecting cannot succeed by trying again (a host key mismatch, the connection closed)."""


class Resumer(Generic[T]):
    """Calls `connect(timeout)` until it returns, within the transfer's outage budget.

    `connect` raises TransferError for an attempt that failed (tried again after a wait) and
    Refused for one that must not be tried again. The Resumer is called with the error that
    broke the connection; it returns what `connect` returned, or raises TransferError naming
    that error and the last attempt's.
    """

    def __init__(self, connect: Callable[[float], T], where: str, timeout: float, *,
                 budget: float = RESUME_SECONDS, max_outages: int = MAX_OUTAGES,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.connect = connect
        self.where = where
        self.timeout = timeout
        self.budget = budget
        self.max_outages = max_outages
        self.sleep = sleep
        self.clock = clock
        self.spent = 0.0  # seconds all outages so far cost
        self.outages = 0

    def __call__(self, broken_by: str) -> T:
        self.outages += 1
        if self.outages > self.max_outages:
            raise TransferError(f"{broken_by}; the connection broke {self.outages} times, "
                                f"more than the {self.max_outages} a transfer survives")
        started, wait, attempts = self.clock(), FIRST_WAIT, 0
        last = "no attempt"
        try:
            while True:
                remaining = self.budget - self.spent - (self.clock() - started)
                if remaining <= 0:
                    raise TransferError(
                        f"{broken_by}; no new connection within {self.budget:g} s "
                        f"({attempts} attempt{'' if attempts == 1 else 's'}; the last: {last})")
                attempts += 1
                try:
                    connected = self.connect(max(1.0, min(self.timeout, remaining)))
                except Refused as refusal:
                    raise TransferError(f"{broken_by}; reconnecting refused: {refusal}") from refusal
                except TransferError as failure:
                    last = str(failure)
                    log.info("reconnecting to %s: attempt %d failed: %s", self.where, attempts, failure)
                    self.sleep(max(0.0, min(wait, self.budget - self.spent - (self.clock() - started))))
                    wait = min(wait * 2, LONGEST_WAIT)
                    continue
                log.warning("reconnected to %s after %d attempt%s in %.1f s", self.where, attempts,
                            "" if attempts == 1 else "s", self.clock() - started)
                return connected
        finally:
            self.spent += self.clock() - started
