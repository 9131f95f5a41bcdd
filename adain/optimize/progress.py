"""The time left of ``adain optimize``: every loss evaluation costs about the same, so the mean time of those done
so far, times the evaluations still to come (the rest of this run, and the runs after it), estimates it."""

from __future__ import annotations

import time
from collections.abc import Callable

from .balance import BALANCE_RUNS


class StepTimer:
    """Mean seconds per step, from the second step on (the first one carries the start-up)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock, self.start, self.steps = clock, None, 0

    def step(self) -> float | None:
        """Count a step done now; the mean seconds per step so far (None after the first)."""
        now = self.clock()
        if self.start is None:
            self.start = now
            return None
        self.steps += 1
        return (now - self.start) / self.steps


def steps_left(entry: dict, done: int, iterations: int) -> int:
    """Loss evaluations still to come after ``done`` of the run of the log ``entry`` ("phase" "balance" with its
    "round", or "optimize"): the rest of that run, then the final run after a calibration run and the calibration
    runs left (at most :data:`BALANCE_RUNS`; calibration may stop sooner, so this is an upper bound)."""
    later = BALANCE_RUNS + 1 - entry["round"] if entry["phase"] == "balance" else 0
    return iterations - done + later * iterations
