"""Video jobs: POST /v1/videos (202 and a job id), GET /v1/videos/{id} (state and progress), GET
/v1/videos/{id}/result (the clip, once done), DELETE /v1/videos/{id} (cancel, or delete a finished job)."""

from __future__ import annotations

import secrets
import shutil
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from ...errors import ErrorResponse, ServiceError
from ...runtime.videos import RESULT, VideoRunner
from ...store.video_jobs import VideoJob
from ..access import PrincipalDep, charge_megapixels
from ..dependencies import PoolDep, SettingsDep, StoreDep, in_pool
from ..forms import VideoForm, video_form
from ..video_intake import plan_video, write_job

router = APIRouter(tags=["videos"])
ERRORS = {status: {"model": ErrorResponse, "description": text} for status, text in (
    (404, "no such job (or another key's)"), (409, "the job is not done"), (413, "clip too large or too long"),
    (415, "not a video FFmpeg reads, or a style that is not an accepted image"),
    (422, "invalid arguments, or a style_id this key may not use"),
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


@router.post("/v1/videos", status_code=202, summary="Stylize a video clip (a job)",
             responses={202: {"description": "Accepted: the job's state (`url` to poll, `Location` too)."}, **ERRORS})
async def create_video(request: Request, who: PrincipalDep, form: Annotated[VideoForm, Depends(video_form)],
                       settings: SettingsDep, store: StoreDep, pool: PoolDep) -> JSONResponse:
    """Stylize `clip` with the styles (uploaded files and/or stored style ids) as `adain video` does; poll the job,
    then fetch its result."""
    runner = _runner(request)
    if form.clip.size is not None and form.clip.size > settings.max_video_bytes:
        raise ServiceError(413, "video_too_large", f"the clip has {form.clip.size} bytes, more than the limit of "
                           f"{settings.max_video_bytes}")
    styles = [await f.read() for f in form.styles]
    masks = [await f.read() for f in form.masks]
    plan = await in_pool(pool, plan_video, form, styles, masks, settings, store)
    if runner.journal.active_count(who.name) >= settings.max_video_jobs:
        raise ServiceError(429, "too_many_jobs", f"{settings.max_video_jobs} video jobs are queued or running for "
                           "this key; wait for one to finish or cancel one")
    job_id = secrets.token_hex(8)
    folder = runner.job_dir(job_id)
    try:
        frames, frame_pixels = await in_pool(pool, write_job, folder, form.clip.file, form.clip.filename or "clip",
                                             plan, settings)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    charge_megapixels(request, frames * frame_pixels)
    job = VideoJob(job_id, who.name, frames, plan.options)
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
