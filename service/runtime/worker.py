"""A worker owns one model on one device, and runs it in two lanes.

Each lane is an asyncio task that takes tickets from a bounded queue, gathers
those that arrive within a short window into a batch, drops the ones past
their deadline, groups the rest by content size and runs each group on the
lane's own thread (``Stylizer.stylize_batch``, as ``Stylizer.stylize`` runs one).
Large work (more than ``large_pixels`` pixels) goes to the second lane, one
request at a time, so that it never holds up the small requests of the first:
the two threads share the model's weights and run side by side.

While a group runs, the model stops at every safe point (between encoder,
AdaIN and decoder, between tiles, between the halves of a split batch) once
no request of the group still waits for it: its deadline passed or it was
given up. The lane's thread is then free for the next group.

Style statistics come from the store or from the stylizer's LRU cache, so each
distinct style of a batch is encoded at most once. A group that runs out of
device memory is split in two and retried; a single request that still does
not fit fails alone. Errors of a group fail that group's requests; only a
broken worker (a lane's loop failed, or the device reported a fatal error)
dies, failing everything queued and calling ``on_death``.

Each worker learns how long its work takes (``service.runtime.admission.CostModel``),
so that the engine can tell how long a lane's queue takes to drain. Before
each batch, a lane refuses (503, ``shed``) the queued work that the latest
estimates say could no longer finish in time, rather than let it reach its
deadline (504).

The parts: ``lane_queue`` (the queue, batching, the backlog and shedding),
``compute`` (what the lane's thread runs, and how that fails), and here the
lane's loop between them, and the worker that owns the lanes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from adain.stylizer import Stylizer

from ..metrics import Metrics
from .admission import CostModel
from .compute import GroupRunner
from .jobs import Abandoned, DeadlineExceeded, RenderJob, Ticket, WorkerFailed
from .lane_queue import LaneQueue

log = logging.getLogger("adain.service")


class Worker:
    """One :class:`~adain.stylizer.Stylizer`, its cost model, and its lanes: small work, and large work."""

    def __init__(self, name: str, stylizer: Stylizer, metrics: Metrics, batch_size: int, window_s: float,
                 queue_size: int, on_death: Callable[[Worker], None], large_pixels: int = 0) -> None:
        self.name, self.stylizer, self.metrics = name, stylizer, metrics
        self.large_pixels = large_pixels  # 0: one lane for everything
        self.cost = CostModel()
        self.error: BaseException | None = None
        self.lanes = [Lane(self, "small", batch_size, window_s, queue_size)]
        if large_pixels:  # on half the CPU threads, so that the small lane keeps the others
            self.lanes.append(Lane(self, "large", 1, 0.0, queue_size, max(1, torch.get_num_threads() // 2)))
        self._on_death = on_death

    def start(self) -> None:
        """Start the lanes on the running event loop."""
        for lane in self.lanes:
            lane.start()

    async def stop(self) -> None:
        """Finish everything queued so far, then stop the lanes and their threads."""
        for lane in self.lanes:
            await lane.stop()

    @property
    def alive(self) -> bool:
        return self.error is None and all(lane.alive for lane in self.lanes)

    @property
    def depth(self) -> int:
        """Tickets waiting in the queues."""
        return sum(lane.depth for lane in self.lanes)

    def lane_for(self, pixels: int) -> Lane:
        """The lane for work of ``pixels`` pixels: the large one for more than ``large_pixels``."""
        return self.lanes[-1] if self.large_pixels and pixels > self.large_pixels else self.lanes[0]

    def submit(self, ticket: Ticket) -> None:
        """Queue a ticket in its lane; raises ``asyncio.QueueFull`` when that queue is full."""
        self.lane_for(ticket.pixels).submit(ticket)

    async def run_batch(self, batch: list[Ticket]) -> None:
        """Run a batch gathered elsewhere (by service.ray_app's @serve.batch) in the first lane."""
        await self.lanes[0].run_batch(batch)

    def admitted(self, ticket: Ticket) -> contextlib.AbstractContextManager[None]:
        """Admission for work gathered elsewhere and run by :meth:`run_batch` (see :meth:`LaneQueue.admitted`)."""
        return self.lanes[0].admitted(ticket)

    def die(self, exc: BaseException) -> None:
        """A lane broke: fail everything queued or running in every lane, and report."""
        if self.error is not None:
            return
        self.error = exc
        log.critical("worker %s died: %s", self.name, exc, exc_info=exc)
        failed = WorkerFailed(f"worker {self.name} failed")
        for lane in self.lanes:
            lane.fail_all(failed)
        self._on_death(self)


class Lane:
    """A queue, its batching loop and a compute thread of a :class:`Worker` (using ``threads`` CPU threads for
    its operators; 0: the process's number)."""

    def __init__(self, worker: Worker, kind: str, batch_size: int, window_s: float, queue_size: int,
                 threads: int = 0) -> None:
        self.worker, self.kind = worker, kind
        self.metrics, self.name = worker.metrics, worker.name
        self.batch_size = batch_size
        self.queue = LaneQueue(queue_size, batch_size, window_s, worker.cost)
        self.runner = GroupRunner(worker.name, worker.stylizer, worker.metrics)
        self._current: list[Ticket] = []
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"adain-worker-{self.name}-{kind}",
                                            initializer=torch.set_num_threads if threads else None,
                                            initargs=(threads,) if threads else ())

    # ---- life cycle ---------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"adain-worker-{self.name}-{self.kind}")

    async def stop(self) -> None:
        if self.alive:
            await self.queue.stop()
            await self._task
        self._executor.shutdown(wait=True)

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def depth(self) -> int:
        return self.queue.depth

    @property
    def full(self) -> bool:
        """Would :meth:`submit` raise ``asyncio.QueueFull`` now?"""
        return self.queue.full

    @property
    def backlog_s(self) -> float:
        """Estimated seconds until the work queued or running now is done."""
        return self.queue.backlog_s

    def submit(self, ticket: Ticket) -> None:
        """Queue a ticket; raises ``asyncio.QueueFull`` when the queue is full."""
        self.queue.submit(ticket)

    def admitted(self, ticket: Ticket) -> contextlib.AbstractContextManager[None]:
        """Admission for work that does not come through :meth:`submit` (see :meth:`LaneQueue.admitted`)."""
        return self.queue.admitted(ticket)

    def fail_all(self, failed: WorkerFailed) -> None:
        for ticket in self._current:
            ticket.settle(failed)
        self.queue.fail_all(failed)

    # ---- the loop (event loop side) ---------------------------------------------

    async def _loop(self) -> None:
        try:
            stop = False
            while not stop:
                self.queue.shed(asyncio.get_running_loop().time())
                batch, stop = await self.queue.gather()
                self._current = batch
                await self.run_batch(batch)
                self._current = []
        except Exception as exc:  # the worker itself broke: fail everything, report, exit
            self.worker.die(exc)

    async def run_batch(self, batch: list[Ticket]) -> None:
        """Run a gathered batch: each style upload alone, stylize requests grouped by content size. Settles
        every ticket; raises only if the device broke."""
        groups: dict[object, list[Ticket]] = defaultdict(list)
        for i, ticket in enumerate(batch):
            work = ticket.work
            groups[work.batch_key if isinstance(work, RenderJob) else ("stats", i)].append(ticket)
        loop = asyncio.get_running_loop()
        try:
            for group in groups.values():
                live = self._live(group, loop.time())
                if live:
                    await self._run_group(live, loop)
        finally:
            self.queue.done(batch)

    async def _run_group(self, live: list[Ticket], loop: asyncio.AbstractEventLoop) -> None:
        def check() -> None:  # on the lane's thread, at each safe point
            now = loop.time()
            if all(t.future.done() or now > t.deadline for t in live):
                raise Abandoned

        pixels = sum(t.pixels for t in live) // len(live)
        expected = self.worker.cost.estimate(pixels) * len(live)
        start = loop.time()
        outcomes = await loop.run_in_executor(self._executor, self.runner.outcomes, [t.work for t in live],
                                              check)
        model_s = loop.time() - start
        self.metrics.batch_size.labels(self.name).observe(len(live))
        log.debug("worker %s, %s lane: %d x %d pixels in %.2f s (estimated %.2f s)", self.name, self.kind, len(live),
                  pixels, model_s, expected)
        seconds = model_s / len(live)
        if not any(isinstance(o, BaseException) for o in outcomes):
            self.worker.cost.observe(pixels, seconds)
        elif all(isinstance(o, DeadlineExceeded) for o in outcomes):  # abandoned: it takes at least this long
            self.worker.cost.at_least(pixels, seconds)
        for ticket, outcome in zip(live, outcomes, strict=True):
            ticket.queue_s, ticket.model_s, ticket.batch = start - ticket.enqueued, model_s, len(live)
            if ticket.future.cancelled() and not isinstance(outcome, DeadlineExceeded):
                # its client hung up after the last safe point: computed in full for nobody
                self.metrics.dropped.labels("given_up").inc()
            ticket.settle(outcome)

    def _live(self, group: list[Ticket], now: float) -> list[Ticket]:
        """The tickets still worth computing; the others (past their deadline, or given up) are dropped."""
        live = []
        for ticket in group:
            if ticket.future.done() or now > ticket.deadline:
                ticket.settle(DeadlineExceeded())
                self.metrics.dropped.labels("deadline" if now > ticket.deadline else "given_up").inc()
            else:
                live.append(ticket)
        return live
