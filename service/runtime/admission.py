"""How long work will take: a worker's measured seconds per pixel, by image size.

The cost per pixel depends on the size (fixed costs weigh more on small
images, caches hold less of large ones), so the rate is learnt per size class
(a power of two of pixels) as a moving average of the worker's own runs; a
size not seen yet borrows the rate of the nearest class that was, and is
``known`` only when a class next to it was measured. Work stopped at its
deadline counts too, as a lower bound. The average is pessimistic: a slower
run counts at once, faster ones only bit by bit, because an estimate that is
too low costs a 504 and one that is too high only a 503.

The engine adds up these estimates to know how long a queue takes to drain,
and refuses work that could not finish in time (:func:`judge`); a lane looks
again before each batch and refuses the queued work that no longer would
(:func:`overdue`), so that it gets 503 while there is time, not 504 later.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from .jobs import Ticket

#: Weight of the newest run in the moving average when it was faster than the average (a slower one counts in full).
SMOOTHING = 0.3
#: Work is admitted, and kept queued, only while expected to finish within this share of the time it has left:
#: contention between the lanes (and with other processes) and the style encodings make single runs vary.
HEADROOM = 0.8


class CostModel:
    """Seconds per pixel of one worker, by size class; thread-safe."""

    def __init__(self) -> None:
        self._rates: dict[int, float] = {}
        self._lock = threading.Lock()

    def observe(self, pixels: int, seconds: float) -> None:
        """Record a run: ``seconds`` per image of ``pixels`` pixels."""
        if pixels <= 0 or seconds <= 0:
            return
        key, rate = pixels.bit_length(), seconds / pixels
        with self._lock:
            old = self._rates.get(key)
            self._rates[key] = rate if old is None or rate > old else (1 - SMOOTHING) * old + SMOOTHING * rate

    def at_least(self, pixels: int, seconds: float) -> None:
        """Record work stopped after ``seconds`` per image of ``pixels`` pixels: it takes at least that long."""
        if pixels <= 0 or seconds <= 0:
            return
        key = pixels.bit_length()
        with self._lock:
            self._rates[key] = max(self._rates.get(key, 0.0), seconds / pixels)

    def knows(self, pixels: int) -> bool:
        """Was work of this size class, or of one next to it, measured?"""
        key = pixels.bit_length()
        with self._lock:
            return any(abs(k - key) <= 1 for k in self._rates)

    def estimate(self, pixels: int) -> float:
        """Seconds one image of ``pixels`` pixels should take; 0 before any run was observed."""
        key = pixels.bit_length()
        with self._lock:
            if not self._rates:
                return 0.0
            nearest = min(self._rates, key=lambda k: (abs(k - key), -k))
            return self._rates[nearest] * pixels


class Refused(Exception):
    """Work refused before it was queued. ``reason`` is ``too_slow`` (it alone takes longer than its time: 504)
    or ``overloaded`` (the work ahead of it does: 503, retry after ``retry_s``)."""

    def __init__(self, reason: str, message: str, retry_s: float = 0.0) -> None:
        super().__init__(message)
        self.reason, self.message, self.retry_s = reason, message, retry_s

    def __reduce__(self) -> tuple:  # pickled between Ray replicas
        return Refused, (self.reason, self.message, self.retry_s)


def judge(cost_model: CostModel, wait: float, pixels: int, budget: float, batch: int) -> None:
    """Raise :class:`Refused` when work of ``pixels`` pixels could not finish within ``budget`` seconds behind
    ``wait`` seconds of work queued or running, in a lane that runs up to ``batch`` requests at once:
    ``too_slow`` when it alone takes longer (as measured for its size), ``overloaded`` when the work ahead and
    its own batch (filled up with work like it: it is done when the whole batch is) make it miss
    :data:`HEADROOM` of its time, or when work is ahead and this size has not been measured yet. With nothing
    ahead, any other work is taken: running it is how the cost model learns."""
    cost, known = cost_model.estimate(pixels), cost_model.knows(pixels)
    if known and cost > budget:
        raise Refused("too_slow", f"this request takes about {cost:.0f} s here, more than its {budget:g} s; "
                      "ask for a smaller size or allow more time")
    if wait > 0 and (not known or wait + batch * cost > HEADROOM * budget):
        ahead = f"the queue needs about {wait:.1f} s before this request"
        why = (f"{ahead}, whose batch takes about {batch * cost:.1f} s: too long for its {budget:g} s" if known
               else f"{ahead}, and requests of this size have not been measured yet")
        raise Refused("overloaded", f"{why}; retry later", wait)


def overdue(queued: Iterable[Ticket], cost: Callable[[int], float], now: float, batch: int) -> list[Ticket]:
    """The tickets of a queue (in its order) that would no longer finish within :data:`HEADROOM` of the time they
    have left if the lane, free at ``now``, ran them in batches of ``batch`` at ``cost(pixels)`` seconds each;
    each batch is counted full (later work may join it) and every ticket found late is left out of the others'
    wait, as it will be refused."""
    late: list[Ticket] = []
    start, members, spent = now, 0, 0.0  # the batch being filled: when it starts, its members and their seconds
    for ticket in queued:
        seconds = cost(ticket.pixels)
        finish = start + spent + (batch - members) * seconds
        if finish - now > HEADROOM * (ticket.deadline - now):
            late.append(ticket)
            continue
        members, spent = members + 1, spent + seconds
        if members == batch:
            start, members, spent = start + spent, 0, 0.0
    return late
