"""Liveness, readiness and metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from ...errors import ErrorResponse, ServiceError, retry_after
from ...store.interface import StoreError
from ..dependencies import EngineDep

log = logging.getLogger("adain.service")

router = APIRouter(tags=["operations"])
metrics_router = APIRouter(tags=["operations"])  # off with --metrics false


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    """200 as long as the process answers."""
    return {"status": "ok"}


@router.get("/readyz", summary="The model is loaded and warmed up, the style store usable",
            responses={503: {"model": ErrorResponse}})
async def readyz(request: Request, engine: EngineDep) -> dict[str, object]:
    """200 when every worker is warmed up and alive and the style store answers and takes writes (with the workers'
    names, their precision, and the store's state: 'ok', or 'full' when uploads would get 507); 503 while loading,
    after a worker died, when stopping, or when the store is unavailable (its database file deleted or read-only,
    say)."""
    if not engine.ready:
        raise ServiceError(503, "not_ready", f"not ready: {engine.state}", retry_after())
    try:
        store = await run_in_threadpool(request.app.state.store.check)
    except StoreError as exc:
        log.error("request %s (readiness): %s", request.state.request_id, exc)
        raise ServiceError(503, "not_ready", f"not ready: the style store is unavailable: {exc}") from None
    return {"status": "ready", "workers": [w.name for w in engine.workers], "precision": engine.precision,
            "store": store}


@metrics_router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(engine: EngineDep) -> Response:
    """Metrics in the Prometheus text format (docs/service.md lists them)."""
    return Response(engine.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
