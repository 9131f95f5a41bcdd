"""Styles as resources: upload once, then refer to them by id (their statistics are stored with them).

With API keys a client sees its own styles and the public ones (an admin key sees all); another key's private
style is 404, as if it did not exist."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from adain.errors import clip

from ...errors import ErrorResponse, ServiceError
from ...runtime import memory
from ...runtime.jobs import StatsJob, prepared_pixels, stats_pixels
from ...store.interface import NewStyle, QuotaExceeded, StyleInfo
from .. import intake
from ..access import admin, charge_megapixels, writer
from ..dependencies import EngineDep, PoolDep, SettingsDep, StoreDep, TimeoutDep, in_pool
from ..disconnect import hang_up
from ..forms import checked_form

router = APIRouter(prefix="/v1/styles", tags=["styles"])
NOT_FOUND = {404: {"model": ErrorResponse, "description": "no such style (or another key's private one)"}}
FORBIDDEN = {403: {"model": ErrorResponse, "description": "the key may not do this (read-only, or not admin)"}}
PRECOMPUTED_MODES = ("none", "luminance")
T = TypeVar("T")  # coral depends on the content: encoded per request


class StyleList(BaseModel):
    """Every stored style the client sees, oldest first."""

    styles: list[StyleInfo]


class StylePatch(BaseModel):
    """What an admin key may change about a style."""

    public: bool


def _within_quota(store_call: Callable[..., T], *args: object) -> T:
    """``store_call(*args)``, with QuotaExceeded as the 429 ``quota_exceeded`` it is to the client."""
    try:
        return store_call(*args)
    except QuotaExceeded as exc:
        raise ServiceError(429, "quota_exceeded", str(exc)) from None


def _not_found(style_id: str) -> ServiceError:
    return ServiceError(404, "not_found", f"there is no stored style {clip(style_id)!r}")


@router.post("", status_code=201, summary="Store a style", response_model=StyleInfo,
             dependencies=[Depends(writer), Depends(checked_form("image", "name"))],
             responses={**FORBIDDEN, 413: {"model": ErrorResponse}, 415: {"model": ErrorResponse},
                        422: {"model": ErrorResponse}, 429: {"model": ErrorResponse, "description": "rate limit "
                        "(with Retry-After) or quota (quota_exceeded) reached"}, 503: {"model": ErrorResponse},
                        507: {"model": ErrorResponse}})
async def create_style(request: Request, response: Response, settings: SettingsDep,
                       engine: EngineDep, store: StoreDep, pool: PoolDep, timeout: TimeoutDep,
                       image: Annotated[UploadFile, File(description="The style image.")],
                       name: Annotated[str | None, Form(description="Display name (default: the file name "
                                                        "without its extension).")] = None
                       ) -> StyleInfo:
    """Upload a style image; it is encoded now (at the server's style size), so requests using its id skip that."""
    t0 = time.perf_counter()
    src = await in_pool(pool, intake.source, await image.read(), "image", settings.style_size, settings)
    await run_in_threadpool(_within_quota, store.check_quota, len(src.data))  # before the work of encoding it
    charge_megapixels(request, src.pixels)
    engine.admit(stats_pixels(src.hw, settings.style_size, PRECOMPUTED_MODES), timeout - (time.perf_counter() - t0))
    with engine.holding(memory.style_upload_bytes(src.decoded, prepared_pixels(src.hw, settings.style_size))):
        decoded = await in_pool(pool, intake.style_upload, src, settings)
        async with hang_up(request) as gone:
            ticket = await engine.run(StatsJob(decoded.image, settings.style_size, PRECOMPUTED_MODES),
                                      timeout - (time.perf_counter() - t0), gone)
    stats = {engine.stats_key(settings.style_size, mode): s for mode, s in ticket.future.result().items()}
    style = NewStyle(intake.style_name(name, image.filename), decoded.width, decoded.height, src.data,
                     decoded.thumbnail, stats)
    info = await run_in_threadpool(_within_quota, store.add, style)
    response.headers["Location"] = f"/v1/styles/{info.id}"
    return info


@router.get("", summary="List the stored styles")
async def list_styles(store: StoreDep) -> StyleList:
    """Names, sizes and creation times of the stored styles the client sees."""
    return StyleList(styles=await run_in_threadpool(store.list))


@router.get("/{style_id}", summary="Describe a stored style", responses=NOT_FOUND)
async def get_style(style_id: str, store: StoreDep) -> StyleInfo:
    """One stored style."""
    info = await run_in_threadpool(store.get, style_id)
    if info is None:
        raise _not_found(style_id)
    return info


@router.get("/{style_id}/thumbnail", summary="A stored style's thumbnail", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}, **NOT_FOUND})
async def get_thumbnail(request: Request, style_id: str, store: StoreDep) -> Response:
    """A JPEG of at most 256 pixels on either side. It never changes (a style's id is never reused): a public style's
    may be kept by shared caches when the server has no keys; any other only by the client's own cache."""
    info = await run_in_threadpool(store.get, style_id)
    data = await run_in_threadpool(store.thumbnail, style_id) if info else None
    if data is None:
        raise _not_found(style_id)
    shared = info.public and request.app.state.guard.keys is None
    return Response(data, media_type="image/jpeg",
                    headers={"Cache-Control": f"{'public' if shared else 'private'}, max-age=31536000, immutable"})


@router.patch("/{style_id}", summary="Make a style public, or private again (admin keys)",
              responses={**NOT_FOUND, **FORBIDDEN}, dependencies=[Depends(admin)])
async def patch_style(style_id: str, patch: StylePatch, store: StoreDep) -> StyleInfo:
    """A public style is listed for, and usable by, every key; only admin keys may change this."""
    info = await run_in_threadpool(store.set_public, style_id, patch.public)
    if info is None:
        raise _not_found(style_id)
    return info


@router.delete("/{style_id}", status_code=204, summary="Delete a stored style", response_class=Response,
               responses={**NOT_FOUND, **FORBIDDEN}, dependencies=[Depends(writer)])
async def delete_style(style_id: str, store: StoreDep) -> Response:
    """Remove a style of the client's (any style with an admin key), its statistics and its thumbnail."""
    if not await run_in_threadpool(store.delete, style_id):
        raise _not_found(style_id)
    return Response(status_code=204)
