"""A worker owns one model on one device, and runs it in two lanes.

Each lane is an asyncio task that takes tickets from a bounded queue, gathers
those that arrive within a short window into a batch, drops the ones past
their deadline, groups the rest by content size and runs each group on the
lane's own thread (``Stylizer.render`` runs under inference_mode and autocast).
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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from adain import ops
from adain.errors import AdainError
from adain.stylizer import Stylizer, Target, stack_stats

from ..metrics import Metrics
from .admission import CostModel, Refused, judge, overdue
from .jobs import (
    Abandoned,
    DeadlineExceeded,
    OutOfDeviceMemory,
    RenderJob,
    StatsJob,
    StyleRef,
    Ticket,
    WorkerFailed,
)

log = logging.getLogger("adain.service")

STOP = object()  # queue sentinel: finish what is queued before it, then exit


def is_oom(exc: BaseException) -> bool:
    """Did the device (or the host allocator) run out of memory?"""
    text = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text))


def is_fatal(exc: BaseException) -> bool:
    """Errors after which the device cannot be trusted (a broken CUDA context): the process must restart."""
    return isinstance(exc, torch.AcceleratorError) or (isinstance(exc, RuntimeError) and "CUDA error" in str(exc))


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
        """Admission for work gathered elsewhere and run by :meth:`run_batch` (see :meth:`Lane.admitted`)."""
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
        self.stylizer, self.metrics, self.name = worker.stylizer, worker.metrics, worker.name
        self.batch_size, self.window_s = batch_size, window_s
        self._queue: asyncio.Queue = asyncio.Queue(queue_size)
        self._current: list[Ticket] = []
        self._outstanding: set[Ticket] = set()  # queued or running
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"adain-worker-{self.name}-{kind}",
                                            initializer=torch.set_num_threads if threads else None,
                                            initargs=(threads,) if threads else ())

    # ---- life cycle ---------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"adain-worker-{self.name}-{self.kind}")

    async def stop(self) -> None:
        if self.alive:
            await self._queue.put(STOP)
            await self._task
        self._executor.shutdown(wait=True)

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    @property
    def full(self) -> bool:
        """Would :meth:`submit` raise ``asyncio.QueueFull`` now?"""
        return self._queue.full()

    @property
    def backlog_s(self) -> float:
        """Estimated seconds until the work queued or running now is done."""
        return sum(self.worker.cost.estimate(t.pixels) for t in self._outstanding)

    def submit(self, ticket: Ticket) -> None:
        """Queue a ticket; raises ``asyncio.QueueFull`` when the queue is full."""
        self._queue.put_nowait(ticket)
        self._outstanding.add(ticket)

    @contextlib.contextmanager
    def admitted(self, ticket: Ticket) -> Iterator[None]:
        """For work that does not come through :meth:`submit`: raise ``admission.Refused`` when this lane could
        not finish it before its deadline (:func:`~service.runtime.admission.judge`), else count it in the backlog while
        the block runs."""
        judge(self.worker.cost, self.backlog_s, ticket.pixels, ticket.deadline - ticket.enqueued, self.batch_size)
        self._outstanding.add(ticket)
        try:
            yield
        finally:
            self._outstanding.discard(ticket)

    def fail_all(self, failed: WorkerFailed) -> None:
        for ticket in self._current:
            ticket.settle(failed)
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not STOP:
                item.settle(failed)
        self._outstanding.clear()

    # ---- the loop (event loop side) ---------------------------------------------

    async def _loop(self) -> None:
        try:
            stop = False
            while not stop:
                self._shed()
                batch, stop = await self._gather()
                self._current = batch
                await self.run_batch(batch)
                self._current = []
        except Exception as exc:  # the worker itself broke: fail everything, report, exit
            self.worker.die(exc)

    def _shed(self) -> None:
        """Refuse the queued tickets that could no longer finish in time (:func:`~service.runtime.admission.overdue`);
        the others stay queued, in their order."""
        items = [self._queue.get_nowait() for _ in range(self._queue.qsize())]
        waiting = [t for t in items if t is not STOP and not t.future.done()]
        now = asyncio.get_running_loop().time()
        late = set(overdue(waiting, self.worker.cost.estimate, now, self.batch_size))
        for item in items:
            if item not in late:
                self._queue.put_nowait(item)
        self._outstanding -= late
        for ticket in late:
            ticket.settle(Refused("shed", f"the queue fell behind: this request could no longer finish within its "
                                  f"{ticket.deadline - ticket.enqueued:.3g} s; retry later", self.backlog_s))

    async def _gather(self) -> tuple[list[Ticket], bool]:
        """The next batch: the first ticket, plus whatever arrives within the window (up to batch_size)."""
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
            self._outstanding.difference_update(batch)

    async def _run_group(self, live: list[Ticket], loop: asyncio.AbstractEventLoop) -> None:
        def check() -> None:  # on the lane's thread, at each safe point
            now = loop.time()
            if all(t.future.done() or now > t.deadline for t in live):
                raise Abandoned

        pixels = sum(t.pixels for t in live) // len(live)
        expected = self.worker.cost.estimate(pixels) * len(live)
        start = loop.time()
        outcomes = await loop.run_in_executor(self._executor, self._compute, [t.work for t in live], check)
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

    # ---- compute (worker thread) ---------------------------------------------------

    def _compute(self, works: list[RenderJob | StatsJob], check: Callable[[], None]) -> list[object]:
        """Outcomes (results or exceptions) for a group; raises only when the worker must die. ``check`` runs
        at every safe point and raises Abandoned when nobody waits for the group any more."""
        try:
            with self.stylizer.safe_points(check):
                return self._attempt(works, check)
        except Abandoned:
            self.metrics.dropped.labels("abandoned").inc(len(works))
            log.info("worker %s: abandoned a group of %d past its deadline", self.name, len(works))
            return [DeadlineExceeded()] * len(works)
        except Exception as exc:
            if is_fatal(exc):
                raise
            log.exception("worker %s: a group of %d failed", self.name, len(works))
            return [exc] * len(works)

    def _attempt(self, works: list[RenderJob | StatsJob], check: Callable[[], None]) -> list[object]:
        check()
        try:
            if isinstance(works[0], StatsJob):
                return [self._encode_style(works[0])]
            return list(self._render(works))
        except AdainError as exc:
            return [exc] * len(works)
        except Exception as exc:  # Abandoned too: it is not an out-of-memory error
            if not is_oom(exc):
                raise
        if self.stylizer.device.type == "cuda":
            torch.cuda.empty_cache()
        if len(works) == 1:
            self.metrics.oom.labels("rejected").inc()
            image = works[0].content if isinstance(works[0], RenderJob) else works[0].image
            return [OutOfDeviceMemory(str(self.stylizer.device), image.shape[-1] * image.shape[-2])]
        self.metrics.oom.labels("split").inc()
        half = len(works) // 2
        return self._attempt(works[:half], check) + self._attempt(works[half:], check)

    def _render(self, works: list[RenderJob]) -> Tensor:
        targets = [Target(stack_stats([self._style_stats(job, ref) for ref in job.styles]), job.weights, job.alpha,
                          job.masks) for job in works]
        out = self.stylizer.render(torch.stack([job.model_input for job in works]), targets).cpu()
        size = works[0].model_input.shape
        tile = self.stylizer.tile_for((size[-2], size[-1]))
        if tile:
            log.debug("worker %s: %d image(s) of %dx%d in tiles of %d px", self.name, len(works), size[-1], size[-2],
                      tile)
            for job in works:
                job.tile = tile
        return out

    def _style_stats(self, job: RenderJob, ref: StyleRef) -> ops.Stats:
        if ref.stats is not None:
            return ops.Stats(ref.stats.mean.to(self.stylizer.device), ref.stats.std.to(self.stylizer.device))
        return self.stylizer.style_stats(ref.image, job.preserve_color, job.content, job.style_size,
                                         style_scale=job.style_scale)

    def _encode_style(self, job: StatsJob) -> dict[str, ops.Stats]:
        stats = {mode: self.stylizer.style_stats(job.image, mode, None, job.style_size) for mode in job.modes}
        return {mode: ops.Stats(s.mean.cpu(), s.std.cpu()) for mode, s in stats.items()}
