"""POST /v1/stylize."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response

from adain.images import OUTPUT_FORMATS, encode_image

from ...errors import ErrorResponse
from .. import intake, media
from ..access import charge_megapixels
from ..dependencies import EngineDep, PoolDep, SettingsDep, StoreDep, TimeoutDep, in_pool
from ..disconnect import hang_up
from ..forms import StylizeForm, stylize_form

router = APIRouter(tags=["stylize"])

ERRORS = {status: {"model": ErrorResponse, "description": text} for status, text in (
    (401, "no valid API key (when the server has keys)"),
    (413, "body, image (pixels) or request too large for the server's memory or the device"),
    (415, "not an image in an accepted format"),
    (422, "invalid arguments or unknown style_id"), (429, "rate limit (see Retry-After)"),
    (499, "the client hung up before the answer (its work was dropped)"),
    (503, "queue full or not ready (see Retry-After)"),
    (504, "deadline exceeded; the work was dropped"))}


def server_timing(timings: dict[str, float]) -> str:
    """A Server-Timing header value from stage durations in seconds."""
    return ", ".join(f"{name};dur={seconds * 1000:.1f}" for name, seconds in timings.items())


@router.post("/v1/stylize", summary="Stylize an image", response_class=Response,
             responses={200: {"description": "The stylized image; headers X-Request-ID and Server-Timing "
                              "(decode, queue, model, encode; and `tiled` with the tile size when the image "
                              "ran in tiles).",
                              "content": {mime: {} for _, mime in OUTPUT_FORMATS.values()}}, **ERRORS})
async def stylize(request: Request, form: Annotated[StylizeForm, Depends(stylize_form)], settings: SettingsDep,
                  engine: EngineDep, store: StoreDep, pool: PoolDep, timeout: TimeoutDep,
                  accept: Annotated[str | None, Header()] = None) -> Response:
    """Stylize `content` with one or more styles (uploaded files and/or stored style ids), as `adain stylize` does."""
    t0 = time.perf_counter()
    content = await form.content.read()
    styles = [await f.read() for f in form.styles]
    masks = [await f.read() for f in form.masks]
    plan = await in_pool(pool, intake.plan_job, form, content, styles, masks, settings, store, engine.stats_key)
    charge_megapixels(request, plan.decoded_pixels)
    engine.admit(plan.pixels, timeout - (time.perf_counter() - t0))  # refused work is never decoded
    with engine.holding(plan.memory):
        job = await in_pool(pool, intake.render_job, plan, form, settings)
        decode_s = time.perf_counter() - t0
        async with hang_up(request) as gone:
            ticket = await engine.run(job, timeout - decode_s, gone)
        t1 = time.perf_counter()
        fmt = form.format or media.negotiate(accept)
        data = await in_pool(pool, encode_image, ticket.future.result(), fmt, form.quality)
    timings = {"decode": decode_s, "queue": ticket.queue_s, "model": ticket.model_s, "encode": time.perf_counter() - t1}
    for stage, seconds in timings.items():
        engine.metrics.stage.labels(stage).observe(seconds)
    timing = server_timing(timings) + (f', tiled;desc="{job.tile}px"' if job.tile else "")
    return Response(data, media_type=media.media_type(fmt),
                    headers={"Server-Timing": timing, "Cache-Control": "no-store"})
