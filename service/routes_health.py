"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from .dependencies import EngineDep
from .errors import ErrorResponse, ServiceError, retry_after

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    """200 as long as the process answers."""
    return {"status": "ok"}


@router.get("/readyz", summary="The model is loaded and warmed up", responses={503: {"model": ErrorResponse}})
async def readyz(engine: EngineDep) -> dict[str, object]:
    """200 when every worker is warmed up and alive; 503 while loading, after a worker died, or when stopping."""
    if not engine.ready:
        raise ServiceError(503, "not_ready", f"not ready: {engine.state}", retry_after())
    return {"status": "ready", "workers": [w.name for w in engine.workers]}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(engine: EngineDep) -> Response:
    """Metrics in the Prometheus text format (docs/service.md lists them)."""
    return Response(engine.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
