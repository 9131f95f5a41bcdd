"""The video jobs' journal: one SQLite table (SQLAlchemy Core) in the video folder, written when a job is accepted
and whenever its state changes, so that a server killed halfway finds its accepted jobs again on start."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

metadata = sa.MetaData()
video_jobs = sa.Table(
    "video_jobs", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("owner", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),  # queued, running, done, failed, cancelled
    sa.Column("frames_done", sa.Integer, nullable=False),
    sa.Column("frames", sa.Integer, nullable=False),
    sa.Column("options", sa.Text, nullable=False),  # JSON: what stylize_video is called with
    sa.Column("error", sa.Text),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("finished", sa.Float),
    sa.Index("video_jobs_owner", "owner"),
)

#: the states a job ends in
FINISHED = ("done", "failed", "cancelled")


@dataclass
class VideoJob:
    """One accepted video job as the journal holds it."""

    id: str
    owner: str
    frames: int
    options: dict
    state: str = "queued"
    frames_done: int = 0
    error: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None


class VideoJournal:
    """The jobs table in ``folder/jobs.db`` (created when missing); thread-safe."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.engine = sa.create_engine(f"sqlite:///{folder / 'jobs.db'}")
        metadata.create_all(self.engine)
        self._lock = threading.Lock()

    def add(self, job: VideoJob) -> None:
        with self._lock, self.engine.begin() as c:
            c.execute(video_jobs.insert().values(**_row(job)))

    def save(self, job: VideoJob) -> None:
        """Write the job's state, progress, error and finishing time."""
        with self._lock, self.engine.begin() as c:
            c.execute(video_jobs.update().where(video_jobs.c.id == job.id).values(**_row(job)))

    def get(self, job_id: str) -> VideoJob | None:
        with self._lock, self.engine.connect() as c:
            row = c.execute(video_jobs.select().where(video_jobs.c.id == job_id)).mappings().first()
        return None if row is None else _job(row)

    def select(self, *where: sa.ColumnElement[bool]) -> list[VideoJob]:
        with self._lock, self.engine.connect() as c:
            rows = c.execute(video_jobs.select().where(*where).order_by(video_jobs.c.created)).mappings().all()
        return [_job(r) for r in rows]

    def unfinished(self) -> list[VideoJob]:
        """Jobs queued or running, oldest first (on start: those a killed server left)."""
        return self.select(video_jobs.c.state.not_in(FINISHED))

    def active_count(self, owner: str) -> int:
        with self._lock, self.engine.connect() as c:
            return c.execute(sa.select(sa.func.count()).select_from(video_jobs).where(
                video_jobs.c.owner == owner, video_jobs.c.state.not_in(FINISHED))).scalar_one()

    def expired(self, before: float) -> list[VideoJob]:
        """Finished jobs that finished before ``before``."""
        return self.select(video_jobs.c.state.in_(FINISHED), video_jobs.c.finished < before)

    def delete(self, job_id: str) -> None:
        with self._lock, self.engine.begin() as c:
            c.execute(video_jobs.delete().where(video_jobs.c.id == job_id))

    def close(self) -> None:
        self.engine.dispose()


def _row(job: VideoJob) -> dict:
    return {"id": job.id, "owner": job.owner, "state": job.state, "frames_done": job.frames_done,
            "frames": job.frames, "options": json.dumps(job.options), "error": job.error, "created": job.created,
            "finished": job.finished}


def _job(row) -> VideoJob:
    return VideoJob(row["id"], row["owner"], row["frames"], json.loads(row["options"]), row["state"],
                    row["frames_done"], row["error"], row["created"], row["finished"])
