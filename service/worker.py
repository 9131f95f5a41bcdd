"""A worker owns one model on one device.

An asyncio task takes tickets from a bounded queue, gathers those that arrive
within a short window into a batch, drops the ones past their deadline, groups
the rest by content size and runs each group on the worker's own thread
(``Stylizer.render`` runs under inference_mode and autocast). Style statistics
come from the store or from the stylizer's LRU cache, so each distinct style of
a batch is encoded at most once. A group that runs out of device memory is
split in two and retried; a single request that still does not fit fails
alone. Errors of a group fail that group's requests; only a broken worker (its
loop failed, or the device reported a fatal error) dies, failing everything
queued and calling ``on_death``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from adain import ops
from adain.errors import AdainError
from adain.stylizer import Stylizer, Target, stack_stats

from .jobs import DeadlineExceeded, OutOfDeviceMemory, RenderJob, StatsJob, StyleRef, Ticket, WorkerFailed
from .metrics import Metrics

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
    """Queue, batching loop and compute thread for one :class:`~adain.stylizer.Stylizer`."""

    def __init__(self, name: str, stylizer: Stylizer, metrics: Metrics, batch_size: int, window_s: float,
                 queue_size: int, on_death: Callable[[Worker], None]) -> None:
        self.name, self.stylizer, self.metrics = name, stylizer, metrics
        self.batch_size, self.window_s = batch_size, window_s
        self.error: BaseException | None = None
        self._queue: asyncio.Queue = asyncio.Queue(queue_size)
        self._current: list[Ticket] = []
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"adain-worker-{name}")
        self._on_death = on_death

    # ---- life cycle ---------------------------------------------------------

    def start(self) -> None:
        """Start the loop on the running event loop."""
        self._task = asyncio.create_task(self._loop(), name=f"adain-worker-{self.name}")

    async def stop(self) -> None:
        """Finish everything queued so far, then stop the loop and the thread."""
        if self.alive:
            await self._queue.put(STOP)
            await self._task
        self._executor.shutdown(wait=True)

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done() and self.error is None

    @property
    def depth(self) -> int:
        """Tickets waiting in the queue."""
        return self._queue.qsize()

    @property
    def load(self) -> int:
        """Tickets waiting or running: what dispatch balances."""
        return self.depth + len(self._current)

    def submit(self, ticket: Ticket) -> None:
        """Queue a ticket; raises ``asyncio.QueueFull`` when the queue is full."""
        self._queue.put_nowait(ticket)

    # ---- the loop (event loop side) ---------------------------------------------

    async def _loop(self) -> None:
        try:
            stop = False
            while not stop:
                batch, stop = await self._gather()
                self._current = batch
                await self.run_batch(batch)
                self._current = []
        except Exception as exc:  # the worker itself broke: fail everything, report, exit
            self._die(exc)

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
        """Run a gathered batch (by this worker's loop, or by service.ray_app's @serve.batch): each style upload
        alone, stylize requests grouped by content size. Settles every ticket; raises only if the device broke."""
        groups: dict[object, list[Ticket]] = defaultdict(list)
        for i, ticket in enumerate(batch):
            work = ticket.work
            groups[work.batch_key if isinstance(work, RenderJob) else ("stats", i)].append(ticket)
        loop = asyncio.get_running_loop()
        for group in groups.values():
            live = self._live(group, loop.time())
            if not live:
                continue
            start = loop.time()
            outcomes = await loop.run_in_executor(self._executor, self._compute, [t.work for t in live])
            model_s = loop.time() - start
            self.metrics.batch_size.labels(self.name).observe(len(live))
            for ticket, outcome in zip(live, outcomes, strict=True):
                ticket.queue_s, ticket.model_s, ticket.batch = start - ticket.enqueued, model_s, len(live)
                ticket.settle(outcome)

    def _live(self, group: list[Ticket], now: float) -> list[Ticket]:
        """The tickets still worth computing; the others (past their deadline, or given up) are dropped."""
        live = []
        for ticket in group:
            if ticket.future.done() or now > ticket.deadline:
                ticket.settle(DeadlineExceeded())
                self.metrics.dropped.labels("deadline").inc()
            else:
                live.append(ticket)
        return live

    def _die(self, exc: BaseException) -> None:
        self.error = exc
        log.critical("worker %s died: %s", self.name, exc, exc_info=exc)
        failed = WorkerFailed(f"worker {self.name} failed")
        for ticket in self._current:
            ticket.settle(failed)
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not STOP:
                item.settle(failed)
        self._on_death(self)

    # ---- compute (worker thread) ---------------------------------------------------

    def _compute(self, works: list[RenderJob | StatsJob]) -> list[object]:
        """Outcomes (results or exceptions) for a group; raises only when the worker must die."""
        try:
            return self._attempt(works)
        except Exception as exc:
            if is_fatal(exc):
                raise
            log.exception("worker %s: a group of %d failed", self.name, len(works))
            return [exc] * len(works)

    def _attempt(self, works: list[RenderJob | StatsJob]) -> list[object]:
        try:
            if isinstance(works[0], StatsJob):
                return [self._encode_style(works[0])]
            return list(self._render(works))
        except AdainError as exc:
            return [exc] * len(works)
        except Exception as exc:
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
        return self._attempt(works[:half]) + self._attempt(works[half:])

    def _render(self, works: list[RenderJob]) -> Tensor:
        targets = [Target(stack_stats([self._style_stats(job, ref) for ref in job.styles]), job.weights, job.alpha,
                          job.masks) for job in works]
        passes = self.stylizer.tiled_passes  # only this thread runs this stylizer
        out = self.stylizer.render(torch.stack([job.model_input for job in works]), targets).cpu()
        if self.stylizer.tiled_passes != passes:
            size = works[0].model_input.shape
            log.debug("worker %s: %d image(s) of %dx%d in tiles of %d px", self.name, len(works), size[-1], size[-2],
                      self.stylizer.tile_size)
            for job in works:
                job.tile = self.stylizer.tile_size
        return out

    def _style_stats(self, job: RenderJob, ref: StyleRef) -> ops.Stats:
        if ref.stats is not None:
            return ops.Stats(ref.stats.mean.to(self.stylizer.device), ref.stats.std.to(self.stylizer.device))
        return self.stylizer.style_stats(ref.image, job.preserve_color, job.content, job.style_size)

    def _encode_style(self, job: StatsJob) -> dict[str, ops.Stats]:
        stats = {mode: self.stylizer.style_stats(job.image, mode, None, job.style_size) for mode in job.modes}
        return {mode: ops.Stats(s.mean.cpu(), s.std.cpu()) for mode, s in stats.items()}
