"""The engine of ``adain serve``: the workers of this process (one per device, or several), dispatch, warm-up.

``Engine.load(settings)`` loads the model on every device; ``start()`` starts
the workers and warms each up in the background (``ready`` turns true when all
are warm); work goes to the lane, of the worker whose lane drains first, for
its size, and is refused (503) when no lane could finish it in time. What the
routes use (admission, memory held, ``run``, readiness) is
``service.runtime.base_engine.BaseEngine``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Sequence

import torch

from adain.bundles.cache import resolve
from adain.bundles.download import sha256_file
from adain.devices import resolve_device
from adain.errors import InputError
from adain.stylizer import StyleRef, Stylizer

from ..errors import ServiceError, retry_after
from ..settings import Settings
from .admission import Refused, judge
from .base_engine import BaseEngine
from .jobs import RenderJob, Ticket
from .worker import Lane, Worker

log = logging.getLogger("adain.service")


def devices(spec: str) -> list[torch.device]:
    """'auto' (every visible GPU, else the CPU) or a comma-separated list such as 'cuda:0,cuda:1'."""
    if spec == "auto":
        if torch.cuda.is_available():
            return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
        return [torch.device("cpu")]
    found = [resolve_device(name.strip()) for name in spec.split(",") if name.strip()]
    if not found:
        raise InputError(f"--device {spec!r} names no device")
    return found


def warm_up_job() -> RenderJob:
    """A small stylization that makes a worker initialise what it does lazily, before the first request."""
    return RenderJob.checked(torch.rand(3, 64, 64), [StyleRef(image=torch.rand(3, 64, 64))], style_size=64)


class Engine(BaseEngine):
    """The workers of this process, and the lanes requests reach them through."""

    def __init__(self, stylizers: Sequence[Stylizer], settings: Settings, fingerprint: str) -> None:
        super().__init__(settings, fingerprint)
        per_device: Counter[str] = Counter()
        for st in stylizers:
            # tiling is the service's choice: above settings.tile_pixels pixels (0: never)
            st.set_tiling("auto" if settings.tile_pixels else "never", max(1, settings.tile_pixels),
                          settings.tile_size)
            st.limits = settings.limits
            name = f"{st.device}#{per_device[str(st.device)]}"  # cpu#0, cpu#1, cuda:0#0...
            per_device[str(st.device)] += 1
            self.workers.append(Worker(name, st, self.metrics, settings.batch_size, settings.batch_window_ms / 1000,
                                       settings.queue_size, on_death=lambda worker: self.fail(),
                                       large_pixels=settings.large_pixels))
        self._warm = False
        self._warm_up_task: asyncio.Task | None = None

    @classmethod
    def load(cls, settings: Settings) -> Engine:
        """Resolve the weights (bundle or files) and load one model per worker."""
        found = resolve(settings.model, settings.encoder, settings.decoder, settings.arch)
        arch = settings.arch or found.arch
        stylizers = [Stylizer.from_files(found.encoder, found.decoder, arch=arch, device=dev,
                                         precision=settings.precision, cache_size=settings.style_cache,
                                         grain=settings.grain)
                     for dev in devices(settings.device) for _ in range(settings.workers)]
        engine = cls(stylizers, settings, "")
        inputs = "+".join(stylizers[0].decoder.inputs)  # the layers style statistics are taken at
        engine.fingerprint = f"{arch}-{engine.precision}-{sha256_file(found.encoder)[:16]}-{inputs}"
        log.info("precision %s%s", engine.precision, " (auto)" if settings.precision == "auto" else "")
        return engine

    @property
    def precision(self) -> str:
        """The precision the workers run (``settings.precision`` with auto resolved), e.g. 'bf16'."""
        return ",".join(sorted({w.stylizer.precision for w in self.workers}))

    @property
    def warm(self) -> bool:
        """Has every worker run its warm-up stylization?"""
        return self._warm

    # ---- life cycle -------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker; warm them up in the background."""
        for w in self.workers:
            w.start()
        self._warm_up_task = asyncio.create_task(self._warm_up())

    async def drain(self) -> None:
        """Finish what is queued, stop the workers."""
        await self._warm_up_task
        for w in self.workers:
            await w.stop()

    async def _warm_up(self) -> None:
        """One small stylization per worker, so that the first request does not pay for lazy initialisation."""
        loop = asyncio.get_running_loop()
        try:
            for w in self.workers:
                ticket = Ticket(warm_up_job(), loop.create_future(), loop.time(), math.inf)
                w.submit(ticket)
                await ticket.future
            self._warm = True
            log.info("ready: %d worker(s) on %s", len(self.workers), ", ".join(w.name for w in self.workers))
        except Exception as exc:
            log.critical("warm-up failed: %s", exc)
            self.fail()

    # ---- dispatch -------------------------------------------------------------------

    def _lanes(self, pixels: int) -> list[Lane]:
        """The lanes work of ``pixels`` pixels may go to, the one that drains first first."""
        return sorted((w.lane_for(pixels) for w in self.workers), key=lambda lane: lane.backlog_s)

    def _judge_lane(self, pixels: int, budget: float, lane: Lane) -> None:
        """Refuse work that ``lane`` could not finish within ``budget`` (see :func:`.admission.judge`)."""
        try:
            judge(lane.worker.cost, lane.backlog_s, pixels, budget, lane.batch_size)
        except Refused as exc:
            raise self.refusal(exc) from None

    def judge(self, pixels: int, budget: float) -> None:
        """What :meth:`submit` would refuse: work the lane it would go to could not finish within ``budget``
        (504 or 503), or every queue full (503)."""
        lanes = self._lanes(pixels)
        self._judge_lane(pixels, budget, lanes[0])
        if all(lane.full for lane in lanes):
            raise self._queues_full(lanes[0].backlog_s)

    def _queues_full(self, wait: float) -> ServiceError:
        self.metrics.dropped.labels("queue_full").inc()
        return ServiceError(503, "overloaded", "every queue is full; retry later", retry_after(wait))

    def submit(self, ticket: Ticket) -> None:
        """Queue ``ticket`` in the lane for its size, on the worker whose lane drains first, if it can finish
        there before its deadline."""
        lanes = self._lanes(ticket.pixels)
        self._judge_lane(ticket.pixels, ticket.deadline - ticket.enqueued, lanes[0])
        wait = lanes[0].backlog_s
        for lane in lanes:
            try:
                lane.submit(ticket)
                return
            except asyncio.QueueFull:
                continue
        raise self._queues_full(wait)
