"""A lane's queue: the tickets waiting for its thread, gathered into batches, with the work they add up to.

Tickets come in through :meth:`LaneQueue.submit` (the engine's dispatch) or :meth:`LaneQueue.admitted` (work
gathered elsewhere, by Ray Serve's ``@serve.batch``); either way they count in the backlog, the seconds the
lane needs to drain (``service.runtime.admission.CostModel``), until the lane has run them. Before each batch
the queue refuses (503, ``shed``) the tickets that the latest estimates say could no longer finish in time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator

from .admission import CostModel, Refused, judge, overdue
from .jobs import Ticket, WorkerFailed

STOP = object()  # queue sentinel: finish what is queued before it, then exit


class LaneQueue:
    """A bounded queue of tickets, and the tickets queued or running (the backlog) of one lane."""

    def __init__(self, size: int, batch_size: int, window_s: float, cost: CostModel) -> None:
        self.batch_size, self.window_s, self.cost = batch_size, window_s, cost
        self._queue: asyncio.Queue = asyncio.Queue(size)
        self._outstanding: set[Ticket] = set()  # queued or running

    @property
    def depth(self) -> int:
        """Tickets waiting."""
        return self._queue.qsize()

    @property
    def full(self) -> bool:
        """Would :meth:`submit` raise ``asyncio.QueueFull`` now?"""
        return self._queue.full()

    @property
    def backlog_s(self) -> float:
        """Estimated seconds until the work queued or running now is done."""
        return sum(self.cost.estimate(t.pixels) for t in self._outstanding)

    def submit(self, ticket: Ticket) -> None:
        """Queue a ticket; raises ``asyncio.QueueFull`` when the queue is full."""
        self._queue.put_nowait(ticket)
        self._outstanding.add(ticket)

    @contextlib.contextmanager
    def admitted(self, ticket: Ticket) -> Iterator[None]:
        """For work that does not come through :meth:`submit`: raise ``admission.Refused`` when the lane could not
        finish it before its deadline (:func:`~service.runtime.admission.judge`), else count it in the backlog while
        the block runs."""
        judge(self.cost, self.backlog_s, ticket.pixels, ticket.deadline - ticket.enqueued, self.batch_size)
        self._outstanding.add(ticket)
        try:
            yield
        finally:
            self._outstanding.discard(ticket)

    def done(self, tickets: Iterable[Ticket]) -> None:
        """The lane has run ``tickets``: they no longer count in the backlog."""
        self._outstanding.difference_update(tickets)

    async def stop(self) -> None:
        """Queue the sentinel: :meth:`gather` returns what is queued before it, then says stop."""
        await self._queue.put(STOP)

    def fail_all(self, failed: WorkerFailed) -> None:
        """Settle every queued ticket with ``failed``, and forget the backlog."""
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not STOP:
                item.settle(failed)
        self._outstanding.clear()

    def shed(self, now: float) -> None:
        """Refuse the queued tickets that could no longer finish in time (:func:`~service.runtime.admission.overdue`);
        the others stay queued, in their order."""
        items = [self._queue.get_nowait() for _ in range(self._queue.qsize())]
        waiting = [t for t in items if t is not STOP and not t.future.done()]
        late = set(overdue(waiting, self.cost.estimate, now, self.batch_size))
        for item in items:
            if item not in late:
                self._queue.put_nowait(item)
        self._outstanding -= late
        for ticket in late:
            ticket.settle(Refused("shed", f"the queue fell behind: this request could no longer finish within its "
                                  f"{ticket.deadline - ticket.enqueued:.3g} s; retry later", self.backlog_s))

    async def gather(self) -> tuple[list[Ticket], bool]:
        """The next batch: the first ticket, plus whatever arrives within the window (up to batch_size); and whether
        the queue was stopped."""
        first = await self._queue.get()
        if first is STOP:
            return [], True
        batch = [first]
        loop = asyncio.get_running_loop()
        closes = loop.time() + self.window_s
        while len(batch) < self.batch_size:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                try:
                    async with asyncio.timeout(closes - loop.time()):
                        item = await self._queue.get()
                except TimeoutError:
                    break
            if item is STOP:
                return batch, True
            batch.append(item)
        return batch, False
