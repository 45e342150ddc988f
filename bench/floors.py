"""The end of every floor search, shared by the lean images (run.py) and the full systems
(peer.py): a floor counts only where CONFIRM_RUNS of CONFIRM_RUNS boots dumped, because one
lucky boot at the edge of memory is not a reservation an admin can rely on."""

from __future__ import annotations

from collections.abc import Callable

FINE_STEP_MIB = 8  # near the floor
CONFIRM_RUNS = 3


class Attempts:
    """The boots of one search by size; `boot(mib, nth)` boots once and says whether it dumped."""

    def __init__(self, boot: Callable[[int, int], bool]) -> None:
        self._boot = boot
        self.results: dict[int, list[bool]] = {}

    def __call__(self, mib: int) -> bool:
        ok = self._boot(mib, len(self.results.get(mib, [])))
        self.results.setdefault(mib, []).append(ok)
        return ok

    def confirmed(self, passing: int, lowest: int, highest: int) -> int | None:
        """From `passing`, the lowest size that dumped: one FINE_STEP_MIB below it, then boots
        at the lowest pass until it passed CONFIRM_RUNS times, one FINE_STEP_MIB up whenever
        a boot fails; None when nothing up to `highest` holds."""
        below = passing - FINE_STEP_MIB
        if below >= lowest and below not in self.results and self(below):
            passing = below
        while passing <= highest:
            while all(self.results.get(passing, [])) and len(self.results.get(passing, [])) < CONFIRM_RUNS:
                self(passing)
            if all(self.results[passing]):
                return passing
            passing += FINE_STEP_MIB
        return None
