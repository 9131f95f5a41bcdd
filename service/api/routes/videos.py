"""Video jobs: POST /v1/videos (202 and a job id), GET /v1/videos/{id} (state and progress), GET
/v1/videos/{id}/result (the clip, once done), DELETE /v1/videos/{id} (cancel, or delete a finished job)."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from fastapi.responses import FileResponse, JSONResponse

from adain.errors import AdainError, VideoError, VideoTooLarge
from adain.images import prepared_size, read_resized, save_image
from adain.options import check_alpha, normalised_weights
from adain.video import ClipReader, stability_level
from adain.video.temporal import DEFAULT_LEVEL

from ...errors import ErrorResponse, ServiceError, from_adain
from ...runtime.videos import INPUT, RESULT, VideoRunner, video_limits
from ...settings import Settings
from ...store.video_jobs import VideoJob
from ..access import PrincipalDep, charge_megapixels
from ..dependencies import PoolDep, SettingsDep, in_pool
from ..forms import parse_weights

router = APIRouter(tags=["videos"])
ERRORS = {status: {"model": ErrorResponse, "description": text} for status, text in (
    (404, "no such job (or another key's)"), (409, "the job is not done"), (413, "clip too large or too long"),
    (415, "not a video FFmpeg reads, or a style that is not an accepted image"), (422, "invalid arguments"),
    (429, "too many video jobs at once, or a rate limit"))}


def _runner(request: Request) -> VideoRunner:
    runner = request.app.state.videos
    if runner is None:
        raise ServiceError(503, "unavailable", "video jobs run on a local worker, and this server has none (Ray Serve)")
    return runner


def _view(job: VideoJob) -> dict:
    view = {"id": job.id, "state": job.state, "frames_done": job.frames_done, "frames": job.frames,
            "progress": round(job.frames_done / job.frames, 4) if job.frames else None, "error": job.error,
            "url": f"/v1/videos/{job.id}"}
    if job.state == "done":
        view["result_url"] = f"/v1/videos/{job.id}/result"
    return view


def _accept(folder: Path, clip: UploadFile, styles: list[UploadFile], options: dict,
            settings: Settings) -> tuple[int, int]:
    """Copy the clip, check it from its header, read the styles at their size and save them; the clip's frames and
    the pixels of one frame as stylized."""
    folder.mkdir(parents=True)
    with open(folder / INPUT, "wb") as out:
        shutil.copyfileobj(clip.file, out, 2**20)
    try:
        with ClipReader(folder / INPUT, video_limits(settings), label=clip.filename or "clip") as reader:
            info = reader.info
    except VideoTooLarge as exc:
        raise ServiceError(413, "video_too_large", str(exc)) from None
    except VideoError as exc:
        raise ServiceError(415, "unsupported_video", str(exc)) from None
    h, w = prepared_size((info.height, info.width), options["content_size"], False)
    if h * w > settings.max_pixels:
        raise ServiceError(413, "video_too_large", f"frames of {w}x{h} pixels as resized, more than the limit of "
                           f"{settings.max_pixels}")
    for i, style in enumerate(styles):
        image = read_resized(style.file.read(), settings.style_size, settings.max_pixels, name=f"style {i + 1}",
                             formats=settings.pil_formats, limits=settings.limits).image
        save_image(image, folder / options["styles"][i])
    return info.frames, h * w


@router.post("/v1/videos", status_code=202, summary="Stylize a video clip (a job)",
             responses={202: {"description": "Accepted: the job's state (`url` to poll, `Location` too)."}, **ERRORS})
async def create_video(request: Request, who: PrincipalDep, settings: SettingsDep, pool: PoolDep,
                       clip: Annotated[UploadFile, File(description="the clip (any format FFmpeg reads)")],
                       style: Annotated[list[UploadFile], File(description="style images (repeatable: a blend)")],
                       weights: Annotated[list[str] | None, Form()] = None,
                       alpha: Annotated[float, Form(ge=0, le=1)] = 1.0,
                       preserve_color: Annotated[Literal["none", "coral", "luminance"], Form()] = "none",
                       content_size: Annotated[int | None, Form(ge=0)] = None,
                       stability: Annotated[int, Form(description="0 per frame .. 3 most stable")] = DEFAULT_LEVEL,
                       audio: Annotated[bool, Form()] = True) -> JSONResponse:
    """Stylize `clip` with the `style` images as `adain video` does; poll the job, then fetch its result."""
    runner = _runner(request)
    if clip.size is not None and clip.size > settings.max_video_bytes:
        raise ServiceError(413, "video_too_large", f"the clip has {clip.size} bytes, more than the limit of "
                           f"{settings.max_video_bytes}")
    if len(style) > settings.max_styles:
        raise ServiceError(422, "invalid_request", f"{len(style)} styles, more than the limit of {settings.max_styles}")
    size = settings.content_size if content_size is None else content_size
    if size > settings.max_size:
        raise ServiceError(422, "invalid_request", f"content_size {size} is more than the limit of {settings.max_size}")
    w = parse_weights(weights)
    try:
        normalised_weights(w, len(style))
        check_alpha(alpha)
        stability_level(stability)
    except AdainError as exc:
        raise from_adain(exc) from None
    if runner.journal.active_count(who.name) >= settings.max_video_jobs:
        raise ServiceError(429, "too_many_jobs", f"{settings.max_video_jobs} video jobs are queued or running for "
                           "this key; wait for one to finish or cancel one")
    job_id = secrets.token_hex(8)
    options = {"styles": [f"style_{i}.png" for i in range(len(style))], "weights": w, "alpha": alpha,
               "preserve_color": preserve_color, "content_size": size, "stability": stability, "audio": audio}
    folder = runner.job_dir(job_id)
    try:
        frames, frame_pixels = await in_pool(pool, _accept, folder, clip, style, options, settings)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    charge_megapixels(request, frames * frame_pixels)
    job = VideoJob(job_id, who.name, frames, options)
    runner.journal.add(job)
    runner.submit(job)
    return JSONResponse(_view(job), status_code=202, headers={"Location": f"/v1/videos/{job_id}"})


def _owned(request: Request, who, job_id: str) -> VideoJob:
    job = _runner(request).get(job_id) if job_id.isalnum() else None
    if job is None or (job.owner != who.name and not who.admin):
        raise ServiceError(404, "not_found", f"no video job {job_id!r}")
    return job


@router.get("/v1/videos/{job_id}", summary="A video job's state and progress", responses=ERRORS)
async def video_state(request: Request, who: PrincipalDep, job_id: str) -> dict:
    return _view(_owned(request, who, job_id))


@router.get("/v1/videos/{job_id}/result", summary="A finished job's clip (H.264 in MP4)", response_class=FileResponse,
            responses={200: {"content": {"video/mp4": {}}}, **ERRORS})
async def video_result(request: Request, who: PrincipalDep, job_id: str) -> FileResponse:
    job = _owned(request, who, job_id)
    if job.state != "done":
        raise ServiceError(409, "not_done", f"the job is {job.state}" + (f": {job.error}" if job.error else ""))
    return FileResponse(_runner(request).job_dir(job_id) / RESULT, media_type="video/mp4",
                        filename=f"{job_id}.mp4", headers={"Cache-Control": "no-store"})


@router.delete("/v1/videos/{job_id}", status_code=204, summary="Cancel a job, or delete a finished one",
               responses=ERRORS)
async def delete_video(request: Request, who: PrincipalDep, job_id: str) -> Response:
    _runner(request).cancel(_owned(request, who, job_id))
    return Response(status_code=204)
