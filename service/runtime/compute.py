"""What a lane's thread runs: a group of work on the worker's model, every way it can fail turned into outcomes.

A stylization group runs as one batch (``Stylizer.stylize_batch``); a style upload is encoded once per colour
mode. The model stops at every safe point once nobody waits for the group (``Abandoned``: its requests get
``DeadlineExceeded``). A group that runs out of device memory is split in two and retried; a single request
that still does not fit fails alone (``OutOfDeviceMemory``). Other errors fail the group's requests, except
those after which the device cannot be trusted: they propagate, and the worker dies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor

from adain import ops
from adain.errors import AdainError
from adain.stylizer import Stylizer

from ..metrics import Metrics
from .jobs import Abandoned, DeadlineExceeded, OutOfDeviceMemory, RenderJob, StatsJob

log = logging.getLogger("adain.service")

Work = RenderJob | StatsJob


def is_oom(exc: BaseException) -> bool:
    """Did the device (or the host allocator) run out of memory?"""
    text = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text))


def is_fatal(exc: BaseException) -> bool:
    """Errors after which the device cannot be trusted (a broken CUDA context): the process must restart."""
    return isinstance(exc, torch.AcceleratorError) or (isinstance(exc, RuntimeError) and "CUDA error" in str(exc))


class GroupRunner:
    """Runs groups of work of one worker (named ``name``) on its stylizer, on the calling thread."""

    def __init__(self, name: str, stylizer: Stylizer, metrics: Metrics) -> None:
        self.name, self.stylizer, self.metrics = name, stylizer, metrics

    def outcomes(self, works: list[Work], check: Callable[[], None]) -> list[object]:
        """Outcomes (results or exceptions) for a group; raises only when the worker must die. ``check`` runs
        at every safe point and raises Abandoned when nobody waits for the group any more."""
        try:
            with self.stylizer.safe_points(check):
                return self._attempt(works, check)
        except Abandoned:
            self.metrics.dropped.labels("abandoned").inc(len(works))
            log.info("worker %s: abandoned a group of %d past its deadline", self.name, len(works))
            return [DeadlineExceeded()] * len(works)
        except Exception as exc:
            if is_fatal(exc):
                raise
            log.exception("worker %s: a group of %d failed", self.name, len(works))
            return [exc] * len(works)

    def _attempt(self, works: list[Work], check: Callable[[], None]) -> list[object]:
        """Run ``works``; out of device memory, each half alone (one request that does not fit fails alone)."""
        check()
        try:
            if isinstance(works[0], StatsJob):
                return [self._encode_style(works[0])]
            return self._stylize(works)
        except AdainError as exc:
            return [exc] * len(works)
        except Exception as exc:  # Abandoned too: it is not an out-of-memory error
            if not is_oom(exc):
                raise
        if self.stylizer.device.type == "cuda":
            torch.cuda.empty_cache()
        if len(works) == 1:
            self.metrics.oom.labels("rejected").inc()
            image = works[0].content if isinstance(works[0], RenderJob) else works[0].image
            return [OutOfDeviceMemory(str(self.stylizer.device), image.shape[-1] * image.shape[-2])]
        self.metrics.oom.labels("split").inc()
        half = len(works) // 2
        return self._attempt(works[:half], check) + self._attempt(works[half:], check)

    def _stylize(self, jobs: list[RenderJob]) -> list[Tensor]:
        """The stylized images of jobs of one content size; each job learns the tile side it ran with."""
        out = self.stylizer.stylize_batch(jobs)
        h, w = jobs[0].content.shape[-2:]
        tile = self.stylizer.tile_for((h, w))
        if tile:
            log.debug("worker %s: %d image(s) of %dx%d in tiles of %d px", self.name, len(jobs), w, h, tile)
            for job in jobs:
                job.tile = tile
        return out

    def _encode_style(self, job: StatsJob) -> dict[str, ops.Stats]:
        """A style upload's statistics for each colour mode, on the CPU (to store)."""
        stats = {mode: self.stylizer.style_stats(job.image, mode, None, job.style_size) for mode in job.modes}
        return {mode: ops.Stats(s.mean.cpu(), s.std.cpu()) for mode, s in stats.items()}
