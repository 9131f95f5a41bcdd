"""Video jobs: one thread runs them in order, with the library's ``stylize_video``, beside the image workers (on the
first worker's model). Each job lives in a folder of its own (``input``, ``style_<i>.png``, ``mask_<i>``, written when
it is accepted, then ``result.mp4``); its state goes to a journal (``service.store.video_jobs``) on every change, so
that a restarted server resumes the jobs a killed one had accepted. Finished jobs are deleted, with their files,
``ttl`` seconds after they end."""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from adain.errors import AdainError
from adain.images import read_image
from adain.masks import read_masks
from adain.stylizer import Stylizer
from adain.video import stability_level, stylize_video
from adain.video.reader import VideoLimits
from adain.video.writer import DEFAULT_QUALITY

from ..settings import Settings

log = logging.getLogger("adain.service.videos")

#: seconds between two saves of a running job's progress, and between two sweeps for expired jobs
SAVE_EVERY, SWEEP_EVERY = 1.0, 30.0
INPUT, RESULT = "input", "result.mp4"


def video_limits(settings: Settings) -> VideoLimits:
    """The clips the service accepts, from its settings."""
    return VideoLimits(settings.max_video_seconds, settings.max_video_pixels, settings.max_video_bytes)


class _Stop(Exception):
    """Raised between frames: the job was cancelled, or the server is stopping (``requeue``: resume it later)."""

    def __init__(self, requeue: bool) -> None:
        self.requeue = requeue


class VideoRunner:
    """Runs accepted video jobs (``journal`` rows, ``service.store.video_jobs.VideoJob``) one at a time."""

    def __init__(self, stylizer: Stylizer, journal: Any, folder: Path, ttl: float, limits: VideoLimits) -> None:
        self.stylizer, self.journal, self.folder, self.ttl, self.limits = stylizer, journal, folder, ttl, limits
        self.live: dict[str, Any] = {}  # id -> job, for jobs queued or running (their progress, between saves)
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._cancelled: set[str] = set()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def job_dir(self, job_id: str) -> Path:
        return self.folder / job_id

    def start(self) -> None:
        """Take up the jobs a previous server left queued or running (from the start), then run new ones."""
        for job in self.journal.unfinished():
            if (self.job_dir(job.id) / INPUT).is_file():
                job.state, job.frames_done = "queued", 0
                self.journal.save(job)
                self.submit(job)
                log.info("video job %s resumed", job.id)
            else:
                self._finish(job, "failed", "the server stopped and the job's files are gone")
        self._thread = threading.Thread(target=self._run, name="adain-video", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the current frame; a running job goes back to queued, to resume on the next start."""
        self._stopping.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, job: Any) -> None:
        with self._lock:
            self.live[job.id] = job
        self._queue.put(job.id)

    def get(self, job_id: str) -> Any:
        """The job with its latest progress (from memory while it is live), or None."""
        with self._lock:
            live = self.live.get(job_id)
        return live if live is not None else self.journal.get(job_id)

    def cancel(self, job: Any) -> None:
        """Cancel a queued or running job (it stops after the current frame), or delete a finished one."""
        with self._lock:
            live = self.live.get(job.id)
            if live is not None:
                self._cancelled.add(job.id)
                if live.state == "queued":
                    self.live.pop(job.id)
                    self._finish(live, "cancelled", None)
                return
        self._delete(job)

    def _run(self) -> None:
        swept = 0.0
        while not self._stopping.is_set():
            if time.monotonic() - swept > SWEEP_EVERY:
                self.sweep()
                swept = time.monotonic()
            try:
                job_id = self._queue.get(timeout=SWEEP_EVERY)
            except queue.Empty:
                continue
            with self._lock:
                job = self.live.get(job_id)
            if job is not None:
                self._run_job(job)

    def _run_job(self, job: Any) -> None:
        job.state = "running"
        self.journal.save(job)
        saved = time.monotonic()

        def progress(done: int) -> None:
            nonlocal saved
            job.frames_done = done
            if job.id in self._cancelled or self._stopping.is_set():
                raise _Stop(requeue=job.id not in self._cancelled)
            if time.monotonic() - saved > SAVE_EVERY:
                self.journal.save(job)
                saved = time.monotonic()

        folder, o = self.job_dir(job.id), job.options
        try:
            styles = [read_image(folder / name) for name in o["styles"]]
            masks = o.get("masks")  # absent, like the four options below, from jobs journaled before they existed
            mask = read_masks([folder / name for name in masks], len(styles)) if masks else None
            stylize_video(self.stylizer, folder / INPUT, folder / RESULT, styles, weights=o["weights"],
                          alpha=o["alpha"], preserve_color=o["preserve_color"], mask=mask,
                          content_size=o["content_size"], style_size=o.get("style_size", 0),
                          style_scale=o.get("style_scale", 1.0), stability=stability_level(o["stability"]),
                          audio=o["audio"], quality=o.get("quality", DEFAULT_QUALITY), limits=self.limits,
                          grain=o.get("grain"), on_frame=progress)
        except _Stop as stop:
            if stop.requeue:
                job.state, job.frames_done = "queued", 0
                self.journal.save(job)
            else:
                self._finish(job, "cancelled", None)
            return
        except AdainError as exc:
            self._finish(job, "failed", str(exc))
            return
        except Exception as exc:  # a bug, or the disk: the job fails, the runner goes on
            log.exception("video job %s failed", job.id)
            self._finish(job, "failed", f"internal error ({type(exc).__name__})")
            return
        self._finish(job, "done", None)

    def _finish(self, job: Any, state: str, error: str | None) -> None:
        job.state, job.error, job.finished = state, error, time.time()
        self.journal.save(job)
        with self._lock:
            self.live.pop(job.id, None)
            self._cancelled.discard(job.id)
        folder = self.job_dir(job.id)
        for path in folder.glob("*") if folder.is_dir() else ():
            if path.name != RESULT or state != "done":
                path.unlink(missing_ok=True)

    def _delete(self, job: Any) -> None:
        shutil.rmtree(self.job_dir(job.id), ignore_errors=True)
        self.journal.delete(job.id)

    def sweep(self) -> int:
        """Delete the finished jobs (and results) older than ``ttl``; how many."""
        expired = self.journal.expired(time.time() - self.ttl)
        for job in expired:
            self._delete(job)
        return len(expired)
