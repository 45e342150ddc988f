"""Polling the kernel until something is so, within what is left of the bring-up's one Budget."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from .dhcp import Budget

POLL_SECONDS = 0.1

T = TypeVar("T")


def wait_for(budget: Budget, what: str, probe: Callable[[], tuple[T | None, str]]) -> T:
    """Poll probe until it returns a value; it says why not otherwise, for the error.

    An overrun raises the budget's KdumpError naming `what` (the step) and the last reason.
    """
    while True:
        value, reason = probe()
        if value is not None:
            return value
        if budget.left() <= 0:
            raise budget.overrun(what, reason)
        time.sleep(min(POLL_SECONDS, budget.left()))
