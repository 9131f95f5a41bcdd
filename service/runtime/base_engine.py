"""What the routes ask of an engine, whatever runs the model: admission, memory held, deadlines, readiness.

A request is admitted (``admit``: open, ready, time left, and the backend's own judgement) before anything is
decoded, holds the bytes of its images while it runs (``holding``), and its work runs with ``run(work, timeout)``,
which turns the ways it can fail into HTTP errors. Where the work runs is a subclass's business:
``service.runtime.engine.Engine`` queues it in this process's workers, ``service.runtime.ray_engine.RayEngine``
sends it to Ray Serve model replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

from adain.stylizer import ColorMode

from ..errors import ServiceError, retry_after
from ..metrics import Metrics
from ..settings import Settings
from .admission import Refused
from .collector import WorkerCollector
from .jobs import DeadlineExceeded, OutOfDeviceMemory, RenderJob, StatsJob, Ticket, WorkerFailed
from .worker import Worker


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.0f} MiB"


class BaseEngine(ABC):
    """The request contract of the service; subclasses run the work (``start``, ``judge``, ``submit``, ``drain``)
    and say when they can take it (``warm``) and at what precision."""

    def __init__(self, settings: Settings, fingerprint: str) -> None:
        self.settings = settings
        self.fingerprint = fingerprint  # encoder and decoder inputs: stored statistics are valid for them only
        self.metrics = Metrics()
        self.workers: list[Worker] = []  # this process's, added by the subclass (none when the model runs elsewhere)
        self.on_fatal: Callable[[], None] = lambda: None
        self.held_bytes = 0  # reserved by the requests admitted (see holding)
        self.failed = False
        self.closing = False
        self.metrics.registry.register(WorkerCollector(self.workers, lambda: self.ready, lambda: self.held_bytes))

    # ---- what a backend provides --------------------------------------------------

    @property
    @abstractmethod
    def precision(self) -> str:
        """The precision the model runs (``settings.precision`` with auto resolved), e.g. 'bf16'."""

    @property
    @abstractmethod
    def warm(self) -> bool:
        """Can the backend take work yet (warmed up, or connected)?"""

    @abstractmethod
    async def start(self) -> None:
        """Start the backend; get it warm in the background."""

    @abstractmethod
    async def drain(self) -> None:
        """After new work is refused: finish (or drop) the work in hand, and stop."""

    @abstractmethod
    def judge(self, pixels: int, budget: float) -> None:
        """Raise :class:`ServiceError` when work of ``pixels`` pixels could not be taken now and finished within
        ``budget`` seconds."""

    @abstractmethod
    def submit(self, ticket: Ticket) -> None:
        """Send ``ticket`` to be run: its future settles with the result or the exception. Raises
        :class:`ServiceError` when it cannot be taken."""

    # ---- readiness --------------------------------------------------------------

    @property
    def state(self) -> str:
        """'ready', 'warming up', 'failed' (a worker died: the process is going down) or 'shutting down'."""
        if self.closing:
            return "shutting down"
        if self.failed:
            return "failed"
        if not self.warm:
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

    async def stop(self) -> None:
        """Refuse new work, finish what is queued, stop."""
        self.closing = True
        await self.drain()

    def fail(self) -> None:
        """The backend broke: not ready from now on, and ``on_fatal`` is told (once)."""
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

    def refusal(self, refused: Refused) -> ServiceError:
        """The HTTP error for refused work (504 too slow, 503 overloaded with Retry-After), counted by reason."""
        self.metrics.dropped.labels(refused.reason).inc()
        if refused.reason == "too_slow":
            return ServiceError(504, "deadline_exceeded", refused.message)
        return ServiceError(503, "overloaded", refused.message, retry_after(refused.retry_s))

    def admit(self, pixels: int, timeout: float) -> None:
        """Refuse now, before anything is decoded, work of ``pixels`` pixels (as prepared: see ``RenderJob.pixels``)
        that :meth:`run` would refuse."""
        self._check_open(timeout)
        self.judge(pixels, timeout)

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

    async def run(self, work: RenderJob | StatsJob, timeout: float, gone: asyncio.Event | None = None) -> Ticket:
        """Send ``work`` to the model and await it; the ticket holds the result and timings. When ``gone`` is set
        first (the client hung up), the work is given up: dropped if still queued, stopped at the next safe point
        if running, and the request ends with 499 ``client_gone``."""
        self._check_open(timeout)
        if gone is not None and gone.is_set():
            raise self._client_gone(count=True)
        loop = asyncio.get_running_loop()
        now = loop.time()
        ticket = Ticket(work, loop.create_future(), now, now + timeout)
        self.submit(ticket)
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
        except Refused as exc:  # by a model replica (service.runtime.ray_engine)
            raise self.refusal(exc) from None
        except WorkerFailed:
            raise ServiceError(503, "worker_failed", "the worker failed; the service is restarting",
                               retry_after()) from None
        return ticket
