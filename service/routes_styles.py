"""Styles as resources: upload once, then refer to them by id (their statistics are stored with them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from adain.errors import clip

from . import prepare
from .dependencies import EngineDep, PoolDep, SettingsDep, StoreDep, TimeoutDep, in_pool
from .errors import ErrorResponse, ServiceError
from .forms import given_once
from .jobs import StatsJob
from .store import NewStyle, StyleInfo

router = APIRouter(prefix="/v1/styles", tags=["styles"])
NOT_FOUND = {404: {"model": ErrorResponse, "description": "no such style"}}
PRECOMPUTED_MODES = ("none", "luminance")  # coral depends on the content: encoded per request


class StyleList(BaseModel):
    """Every stored style, oldest first."""

    styles: list[StyleInfo]


def _not_found(style_id: str) -> ServiceError:
    return ServiceError(404, "not_found", f"there is no stored style {clip(style_id)!r}")


@router.post("", status_code=201, summary="Store a style", response_model=StyleInfo,
             responses={413: {"model": ErrorResponse}, 415: {"model": ErrorResponse},
                        422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
             dependencies=[Depends(given_once("image", "name"))])
async def create_style(response: Response, settings: SettingsDep, engine: EngineDep, store: StoreDep, pool: PoolDep,
                       timeout: TimeoutDep,
                       image: Annotated[UploadFile, File(description="The style image.")],
                       name: Annotated[str | None, Form(description="Display name (default: the file name).")] = None
                       ) -> StyleInfo:
    """Upload a style image; it is encoded now (at the server's style size), so requests using its id skip that."""
    data = await image.read()
    decoded = await in_pool(pool, prepare.style_upload, data, settings)
    ticket = await engine.run(StatsJob(decoded.image, settings.style_size, PRECOMPUTED_MODES), timeout)
    stats = {engine.stats_key(settings.style_size, mode): s for mode, s in ticket.future.result().items()}
    style = NewStyle(prepare.style_name(name, image.filename), decoded.width, decoded.height, data,
                     decoded.thumbnail, stats)
    info = await run_in_threadpool(store.add, style)
    response.headers["Location"] = f"/v1/styles/{info.id}"
    return info


@router.get("", summary="List the stored styles")
async def list_styles(store: StoreDep) -> StyleList:
    """Names, sizes and creation times of every stored style."""
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
async def get_thumbnail(style_id: str, store: StoreDep) -> Response:
    """A JPEG of at most 256 pixels on either side."""
    data = await run_in_threadpool(store.thumbnail, style_id)
    if data is None:
        raise _not_found(style_id)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=31536000, immutable"})


@router.delete("/{style_id}", status_code=204, summary="Delete a stored style", response_class=Response,
               responses=NOT_FOUND)
async def delete_style(style_id: str, store: StoreDep) -> Response:
    """Remove a style, its statistics and its thumbnail."""
    if not await run_in_threadpool(store.delete, style_id):
        raise _not_found(style_id)
    return Response(status_code=204)
