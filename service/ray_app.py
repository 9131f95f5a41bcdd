"""The service on Ray Serve: ``serve run service.ray_app:app``, or ``serve deploy deploy/ray/serve.yaml``.

Two deployments, both the service's own code with a little glue (docs/scale.md):

* ``Ingress`` serves the FastAPI application of ``adain serve`` (same routes, validation, errors, style store
  and metrics); its engine (``service.runtime.ray_engine.RayEngine``) sends each model call to ``Model``
  instead of a local worker. Several ingress replicas share the style store when it is PostgreSQL.
* ``Model`` holds one model on one device (a GPU with ``num_gpus: 1``, else the CPU). Serve's ``@serve.batch``
  gathers the calls that reach a replica and the service's worker runs them (grouped by size, deadlines,
  out-of-memory splitting). Serve routes to a replica once it has loaded and warmed up; its health check fails
  once the device broke, and Serve replaces it. Each replica refuses work it could not finish in time
  (``Worker.admitted``): the ingress answers 503 ``overloaded`` or 504 as ``adain serve`` does.

Settings come from the ``ADAIN_*`` variables (deploy/ray/serve.yaml sets them through ``runtime_env``), or
as an argument of ``bind``. Responses carry ``X-Adain-Replica`` (the model replica) and ``X-Adain-Ingress``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .api.middleware import REQUEST_ID
from .app import create_app
from .runtime.admission import Refused
from .runtime.engine import Engine, devices, warm_up_job
from .runtime.jobs import RenderJob, StatsJob, Ticket, WorkerFailed
from .runtime.ray_engine import RayEngine, served_by
from .settings import Settings, load_settings

log = logging.getLogger("adain.service")

INGRESS_HEADER = "X-Adain-Ingress"


def _replica_name() -> str:
    return serve.get_replica_context().replica_id.unique_id


@serve.deployment(
    ray_actor_options={"num_cpus": 1, "num_gpus": 0},  # serve.yaml: num_gpus 1 on GPU nodes
    max_ongoing_requests=32,  # at least --batch-size, or batches cannot fill
    autoscaling_config={"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 16},
    health_check_period_s=5,
    health_check_timeout_s=30,
)
class Model:
    """One model on one device; ``run`` is called by the ingress for every stylization and style upload."""

    async def __init__(self, settings: Settings | None = None) -> None:
        settings = settings or load_settings([])
        device = devices(settings.device)[0]  # with num_gpus: 1, Ray makes the replica's GPU the only one visible
        engine = Engine.load(replace(settings, device=str(device), workers=1))
        self.worker, self.fingerprint, self.name = engine.workers[0], engine.fingerprint, _replica_name()
        self.precision = engine.precision
        self.error: BaseException | None = None
        self._batch.set_max_batch_size(settings.batch_size)
        self._batch.set_batch_wait_timeout_s(settings.batch_window_ms / 1000)
        loop = asyncio.get_running_loop()
        warm = Ticket(warm_up_job(), loop.create_future(), loop.time(), loop.time() + 600)
        await self.worker.run_batch([warm])
        warm.future.result()  # a failed warm-up fails the replica's start
        log.info("model replica %s ready on %s", self.name, device)

    def info(self) -> dict[str, str]:
        """What the ingress needs to know: the encoder's fingerprint keys the stored style statistics."""
        return {"fingerprint": self.fingerprint, "replica": self.name, "precision": self.precision}

    async def run(self, work: RenderJob | StatsJob, timeout: float) -> tuple[object, float, float, int, str]:
        """(result or exception, queue seconds, model seconds, tile size, replica) for one piece of work."""
        loop = asyncio.get_running_loop()
        ticket = Ticket(work, loop.create_future(), loop.time(), loop.time() + timeout)
        try:
            with self.worker.admitted(ticket):  # refused (and never queued) if it could not finish in time here
                await self._batch(ticket)
        except Refused as exc:
            return exc, 0.0, 0.0, 0, self.name
        outcome = ticket.future.exception() or ticket.future.result()
        return outcome, ticket.queue_s, ticket.model_s, getattr(work, "tile", 0), self.name

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)  # set from the settings in __init__
    async def _batch(self, tickets: list[Ticket]) -> list[None]:
        if self.error is None:
            try:
                await self.worker.run_batch(tickets)
            except Exception as exc:  # the device broke: fail what comes, let the health check replace us
                self.error = exc
                log.critical("model replica %s failed: %s", self.name, exc, exc_info=exc)
        for ticket in tickets:
            ticket.settle(WorkerFailed(f"model replica {self.name} failed"))  # no-op for settled tickets
        return [None] * len(tickets)

    def check_health(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"the model failed: {self.error}")


class ServedBy:
    """ASGI middleware: ``X-Adain-Ingress`` on every response, ``X-Adain-Replica`` on those a model computed;
    one ``X-Request-ID``."""

    def __init__(self, app: ASGIApp, ingress: str) -> None:
        self.app, self.ingress = app, ingress

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        served: dict[str, str] = {INGRESS_HEADER: self.ingress}
        token = served_by.set(served)

        async def send_with_replica(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                del headers[REQUEST_ID]  # Serve's proxy adds its own (it is the one the request arrived with)
                headers.update(served)
            await send(message)

        try:
            await self.app(scope, receive, send_with_replica)
        finally:
            served_by.reset(token)


@serve.deployment(
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=64,
    autoscaling_config={"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 32},
)
@serve.ingress()
class Ingress:
    """The HTTP routes of ``adain serve``, served by Ray Serve's proxy."""

    def __init__(self, model: DeploymentHandle, settings: Settings | None = None) -> None:
        self.model, self.settings = model, settings or load_settings([])

    def __serve_build_asgi_app__(self) -> FastAPI:
        settings = replace(self.settings, admin_port=None)  # adain serve's own: Serve has one port per app
        app = create_app(settings, RayEngine(settings, self.model))
        app.add_middleware(ServedBy, ingress=_replica_name())
        return app


app = Ingress.bind(Model.bind())
