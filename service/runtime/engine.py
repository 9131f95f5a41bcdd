"""The engine: the workers (one per device, or several), admission and dispatch, readiness.

``Engine.load(settings)`` loads the model on every device; ``start()`` starts
the workers and warms each up in the background (``ready`` turns true when all
are warm); ``run(work, timeout)`` queues work and awaits it, turning the ways it
can fail into HTTP errors (and refuses, with 503, work that its queue could not
finish in time); ``stop()`` finishes what is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

import torch

from adain.bundles.cache import resolve
from adain.bundles.download import sha256_file
from adain.errors import InputError
from adain.stylizer import ColorMode, Stylizer, prepare_content, resolve_device

from ..errors import ServiceError, retry_after
from ..metrics import Metrics
from ..settings import Settings
from .admission import Refused, judge
from .collector import WorkerCollector
from .jobs import DeadlineExceeded, OutOfDeviceMemory, RenderJob, StatsJob, StyleRef, Ticket, WorkerFailed
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


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.0f} MiB"


def warm_up_job() -> RenderJob:
    """A small stylization that makes a worker initialise what it does lazily, before the first request."""
    content, weights, _ = prepare_content(torch.rand(3, 64, 64), 1)
    return RenderJob(content, [StyleRef(image=torch.rand(3, 64, 64))], weights, 1.0, None, "none", 64)


class Engine:
    """Every worker of the process, and the way requests reach them."""

    def __init__(self, stylizers: Sequence[Stylizer], settings: Settings, fingerprint: str) -> None:
        self.settings = settings
        self.fingerprint = fingerprint  # encoder and decoder inputs: stored statistics are valid for them only
        self.metrics = Metrics()
        per_device: Counter[str] = Counter()
        self.workers: list[Worker] = []
        for st in stylizers:
            # tiling is the service's choice: above settings.tile_pixels pixels (0: never)
            st.tiling = "auto" if settings.tile_pixels else "never"
            st.tile_pixels, st.tile_size = max(1, settings.tile_pixels), settings.tile_size
            st.limits = settings.limits
            name = f"{st.device}#{per_device[str(st.device)]}"  # cpu#0, cpu#1, cuda:0#0...
            per_device[str(st.device)] += 1
            self.workers.append(Worker(name, st, self.metrics, settings.batch_size, settings.batch_window_ms / 1000,
                                       settings.queue_size, on_death=lambda worker: self._fatal(),
                                       large_pixels=settings.large_pixels))
        self.on_fatal: Callable[[], None] = lambda: None
        self.held_bytes = 0  # reserved by the requests admitted (see holding)
        self.failed = False
        self.closing = False
        self._warm = False
        self._warm_up_task: asyncio.Task | None = None
        self.metrics.registry.register(WorkerCollector(self.workers, lambda: self.ready, lambda: self.held_bytes))

    @classmethod
    def load(cls, settings: Settings) -> Engine:
        """Resolve the weights (bundle or files) and load one model per worker."""
        found = resolve(settings.model, settings.encoder, settings.decoder, settings.arch)
        arch = settings.arch or found.arch
        stylizers = [Stylizer.from_files(found.encoder, found.decoder, arch=arch, device=dev,
                                         precision=settings.precision, cache_size=settings.style_cache)
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
    def state(self) -> str:
        """'ready', 'warming up', 'failed' (a worker died: the process is going down) or 'shutting down'."""
        if self.closing:
            return "shutting down"
        if self.failed:
            return "failed"
        if not self._warm:
            return "warming up"
        return "ready" if all(w.alive for w in self.workers) else "failed"

    @property
    def ready(self) -> bool:
        """Loaded, warmed up, every worker alive, not shutting down."""
        return self.state == "ready"

    def stats_key(self, style_size: int, mode: ColorMode) -> str:
        """Key of stored style statistics: they depend on the encoder, the layers the decoder takes, the style size
        and the colour mode."""
        return f"{self.fingerprint}/{style_size}/{mode}"

    # ---- life cycle -------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker; warm them up in the background."""
        for w in self.workers:
            w.start()
        self._warm_up_task = asyncio.create_task(self._warm_up())

    async def stop(self) -> None:
        """Refuse new work, finish what is queued, stop the workers."""
        self.closing = True
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
            self._fatal()

    def _fatal(self) -> None:
        if not self.failed:
            self.failed = True
            self.on_fatal()

    # ---- requests -------------------------------------------------------------------

    def _check_open(self, timeout: float) -> None:
        """503 while shutting down or not ready, 504 when no time is left."""
        if self.closing:
            self.metrics.dropped.labels("shutting_down").inc()
            raise ServiceError(503, "shutting_down", "the service is shutting down", retry_after())
        if not self.ready:
            raise ServiceError(503, "not_ready", f"not ready: {self.state}", retry_after())
        if timeout <= 0:
            raise ServiceError(504, "deadline_exceeded", "the request ran out of time before reaching the model")

    def _lanes(self, pixels: int) -> list[Lane]:
        """The lanes work of ``pixels`` pixels may go to, the one that drains first first."""
        return sorted((w.lane_for(pixels) for w in self.workers), key=lambda lane: lane.backlog_s)

    def _judge(self, pixels: int, budget: float, lane: Lane) -> None:
        """Refuse work that ``lane`` could not finish within ``budget`` (see :func:`.admission.judge`)."""
        try:
            judge(lane.worker.cost, lane.backlog_s, pixels, budget, lane.batch_size)
        except Refused as exc:
            raise self.refusal(exc) from None

    def refusal(self, refused: Refused) -> ServiceError:
        """The HTTP error for refused work (504 too slow, 503 overloaded with Retry-After), counted by reason."""
        self.metrics.dropped.labels(refused.reason).inc()
        if refused.reason == "too_slow":
            return ServiceError(504, "deadline_exceeded", refused.message)
        return ServiceError(503, "overloaded", refused.message, retry_after(refused.retry_s))

    def admit(self, pixels: int, timeout: float) -> None:
        """Refuse now, before anything is decoded, work of ``pixels`` pixels (as prepared: see ``RenderJob.pixels``)
        that :meth:`run` would refuse: the same checks, on the lane it would go to."""
        self._check_open(timeout)
        lanes = self._lanes(pixels)
        self._judge(pixels, timeout, lanes[0])
        if all(lane.full for lane in lanes):
            raise self._queues_full(lanes[0].backlog_s)

    @contextlib.contextmanager
    def holding(self, nbytes: int) -> Iterator[None]:
        """Reserve ``nbytes`` of ``--max-work-bytes`` for a request's images while the block runs (runtime.memory):
        413 ``request_too_large`` when it alone needs more, 503 ``overloaded`` (counted as ``memory``) while the
        requests admitted before it hold too much. Called before anything is decoded."""
        limit = self.settings.max_work_bytes
        if nbytes > limit:
            raise ServiceError(413, "request_too_large", f"the images of this request need about {_mib(nbytes)} "
                               f"of memory, more than the server allows ({_mib(limit)}, --max-work-bytes); ask for "
                               "a smaller content_size or style_size, or send smaller images")
        if self.held_bytes + nbytes > limit:
            self.metrics.dropped.labels("memory").inc()
            wait = min((lane.backlog_s for w in self.workers for lane in w.lanes), default=1.0)
            raise ServiceError(503, "overloaded", f"the requests in progress hold {_mib(self.held_bytes)} of the "
                               f"{_mib(limit)} their images may take, and this one needs {_mib(nbytes)}; retry "
                               "later", retry_after(wait))
        self.held_bytes += nbytes
        try:
            yield
        finally:
            self.held_bytes -= nbytes

    def _client_gone(self, count: bool) -> ServiceError:
        """499 for a request whose client hung up before its work was done; ``count``: as ``given_up`` here (else
        the worker counts it when it finds the ticket given up)."""
        if count:
            self.metrics.dropped.labels("given_up").inc()
        return ServiceError(499, "client_gone", "the client closed the connection; its work was dropped")

    async def _outcome(self, ticket: Ticket, gone: asyncio.Event | None) -> object:
        """The ticket's result (or its exception, raised), unless ``gone`` is set first: then the ticket is given up
        (the worker counts it as ``given_up``, or ``abandoned`` if it was running) and 499 is raised."""
        if gone is None:
            return await ticket.future
        hung_up = asyncio.ensure_future(gone.wait())
        try:
            await asyncio.wait((ticket.future, hung_up), return_when=asyncio.FIRST_COMPLETED)
        finally:
            hung_up.cancel()
        if not ticket.future.done():
            ticket.future.cancel()
            raise self._client_gone(count=False)
        return ticket.future.result()

    def _queues_full(self, wait: float) -> ServiceError:
        self.metrics.dropped.labels("queue_full").inc()
        return ServiceError(503, "overloaded", "every queue is full; retry later", retry_after(wait))

    def _submit(self, ticket: Ticket) -> None:
        """Queue ``ticket`` in the lane for its size, on the worker whose lane drains first, if it can finish
        there before its deadline (service.ray_app sends it to Ray instead)."""
        lanes = self._lanes(ticket.pixels)
        self._judge(ticket.pixels, ticket.deadline - ticket.enqueued, lanes[0])
        wait = lanes[0].backlog_s
        for lane in lanes:
            try:
                lane.submit(ticket)
                return
            except asyncio.QueueFull:
                continue
        raise self._queues_full(wait)

    async def run(self, work: RenderJob | StatsJob, timeout: float, gone: asyncio.Event | None = None) -> Ticket:
        """Queue ``work`` on the least loaded worker and await it; the ticket holds the result and timings. When
        ``gone`` is set first (the client hung up), the work is given up: dropped if still queued, stopped at the
        next safe point if running, and the request ends with 499 ``client_gone``."""
        self._check_open(timeout)
        if gone is not None and gone.is_set():
            raise self._client_gone(count=True)
        loop = asyncio.get_running_loop()
        now = loop.time()
        ticket = Ticket(work, loop.create_future(), now, now + timeout)
        self._submit(ticket)
        try:
            async with asyncio.timeout(timeout):
                await self._outcome(ticket, gone)
        except (TimeoutError, DeadlineExceeded):
            ticket.future.cancel()
            raise ServiceError(504, "deadline_exceeded", f"no result within {timeout:g} s; the work was dropped "
                               "(at the next safe point if it had started)") from None
        except OutOfDeviceMemory as exc:
            raise ServiceError(413, "too_large_for_device",
                               f"the request needs more memory than {exc.device} has: {exc.pixels} pixels; "
                               f"ask for a smaller content_size/style_size (images may have up to "
                               f"{self.settings.max_pixels} pixels, but not every size fits this device)") from None
        except Refused as exc:  # by a model replica (service.ray_app)
            raise self.refusal(exc) from None
        except WorkerFailed:
            raise ServiceError(503, "worker_failed", "the worker failed; the service is restarting",
                               retry_after()) from None
        return ticket
