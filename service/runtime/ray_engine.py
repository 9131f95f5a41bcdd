"""The engine of a Ray Serve ingress replica (``service.ray_app``): no workers of its own, the work goes to the
``Model`` deployment's replicas.

Admission, memory held, deadlines and errors are those of ``adain serve`` (``BaseEngine``); each model replica
judges the cost of the work it gets (the ingress cannot know which one Serve will pick) and refuses it with
``Refused``, which the ingress answers as ``adain serve`` does. A call whose replica died is tried once more, on
another. The engine is ready once a model replica has answered; it then knows the encoder's fingerprint (which
keys the stored style statistics) and the precision the replicas run.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging

from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from ..settings import Settings
from .base_engine import BaseEngine
from .jobs import DeadlineExceeded, RenderJob, Ticket, WorkerFailed

log = logging.getLogger("adain.service")

MODEL_HEADER = "X-Adain-Replica"
#: The response headers of the request being served (set by ``service.ray_app.ServedBy``): the model replica that
#: computed its work is added as ``MODEL_HEADER``.
served_by: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("adain_served_by", default=None)


class RayEngine(BaseEngine):
    """Sends each piece of work to ``model`` (a handle on the ``Model`` deployment)."""

    def __init__(self, settings: Settings, model: DeploymentHandle) -> None:
        super().__init__(settings, fingerprint="")
        self.model = model
        self._calls: set[asyncio.Task] = set()
        self._precision = ""  # the model replicas', once one has answered
        self._connected = False
        self._connecting: asyncio.Task | None = None

    @property
    def precision(self) -> str:
        return self._precision

    @property
    def warm(self) -> bool:
        """Has a model replica answered?"""
        return self._connected

    async def start(self) -> None:
        """Ask for a model replica in the background, until one answers."""
        self._connecting = asyncio.create_task(self._connect())

    async def _connect(self) -> None:
        while True:
            try:
                info = await self.model.info.remote()
                self.fingerprint, self._precision = info["fingerprint"], info["precision"]
                self._connected = True
                return
            except Exception as exc:
                log.warning("waiting for a model replica: %s", exc)
                await asyncio.sleep(1)

    async def drain(self) -> None:
        """Stop asking for a replica; wait for the calls in flight."""
        if self._connecting is not None:
            self._connecting.cancel()
        await asyncio.gather(*filter(None, [self._connecting]), *self._calls, return_exceptions=True)

    def judge(self, pixels: int, budget: float) -> None:
        """Nothing to judge here: the model replica that gets the work judges it, after decoding."""

    def submit(self, ticket: Ticket) -> None:
        """Call a model replica for ``ticket`` in the background; the replica's name goes to the response."""
        call = asyncio.create_task(self._call(ticket, served_by.get()))
        self._calls.add(call)
        call.add_done_callback(self._calls.discard)

    async def _call(self, ticket: Ticket, headers: dict[str, str] | None) -> None:
        loop = asyncio.get_running_loop()
        outcome: object = DeadlineExceeded()
        for attempt in range(2):  # a replica that died during the call: once more, on another one
            left = ticket.deadline - loop.time()
            if left <= 0:
                break
            try:
                outcome, ticket.queue_s, ticket.model_s, tile, replica = await self.model.run.remote(ticket.work, left)
            except RayActorError as exc:
                log.warning("model replica lost (attempt %d): %s", attempt + 1, exc)
                outcome = WorkerFailed(f"the model replica was lost: {exc}")
                continue
            except Exception as exc:
                outcome = exc
                break
            if isinstance(ticket.work, RenderJob):
                ticket.work.tile = tile
            if headers is not None:
                headers[MODEL_HEADER] = replica
            break
        ticket.settle(outcome)
