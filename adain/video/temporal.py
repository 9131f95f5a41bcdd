"""Temporal stability of a stylized clip: what keeps per-frame AdaIN from flickering (docs/video.md has the
measurements behind the levels).

* :class:`RunningStats`: the content statistics AdaIN normalises each frame by, as an exponential running mean over
  the frames so far instead of the frame's own (a :data:`adain.stylizer.ContentStatsHook`);
* :class:`FlowTracker`: optical flow between consecutive frames (OpenCV's DIS, no model weights), each pair's starting
  from the previous pair's, checked forwards and backwards;
* :class:`FlowBlend`: the previous stylized frame, warped to the current one by that flow, blended in where the flows
  agree and the warped previous content frame matches the current one (occlusions, moving edges and cuts are left
  alone), and taken unwarped where the content did not move (the static background beside a moving object).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .. import ops
from ..errors import InputError


@dataclass(frozen=True)
class Stability:
    """``stats_momentum``: weight of the running content statistics against the frame's own (0: per frame);
    ``flow_blend``: weight of the warped previous output where the flow is consistent (0: none)."""

    stats_momentum: float = 0.0
    flow_blend: float = 0.0


#: ``--stability`` levels, from per-frame AdaIN (0) to the most stable (3); chosen from bench/bench_video.py
#: (docs/video.md): the flow blend does the work on camera moves; smoothed statistics help a moving object but shift
#: the colours of a zoom, so only the last level adds them.
LEVELS = {
    0: Stability(),
    1: Stability(flow_blend=0.5),
    2: Stability(flow_blend=0.8),
    3: Stability(stats_momentum=0.9, flow_blend=0.8),
}
DEFAULT_LEVEL = 2


def stability_level(level: int) -> Stability:
    """The :class:`Stability` of a ``--stability`` level, or an InputError naming the levels."""
    if level not in LEVELS:
        raise InputError(f"stability must be one of {', '.join(map(str, LEVELS))}, got {level}")
    return LEVELS[level]


class RunningStats:
    """Content statistics smoothed over the frames, per decoder input: m x running + (1 - m) x this frame's.
    Call it with (level, the frame's Stats); the first frame's statistics start the running ones."""

    def __init__(self, momentum: float) -> None:
        if not 0.0 <= momentum < 1.0:
            raise InputError(f"the statistics momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self._running: dict[int, ops.Stats] = {}

    def __call__(self, level: int, stats: ops.Stats) -> ops.Stats:
        old = self._running.get(level)
        if old is not None and self.momentum:
            m = self.momentum
            stats = ops.Stats(m * old.mean + (1 - m) * stats.mean, m * old.std + (1 - m) * stats.std)
        self._running[level] = stats
        return stats


#: The flow runs on the grey frames at this shorter side at most (and is scaled back): DIS at 512 px costs about a
#: tenth of a frame's stylization at 512 px; at 320 px it lost more of a moving object's edges (docs/video.md).
FLOW_SIDE = 512
#: Photometric check: the previous grey content frame, warped by the flow, must be within this many grey levels of the
#: current one where the previous output is blended in (where the flow is wrong, at a moving object's edges, it is not).
MATCH_LEVELS = 10
#: Still pixels: where the previous grey content frame, not warped at all, matches the current one within this many
#: grey levels (mean over a STILL_PATCH x STILL_PATCH square), and better than the flow's warp does, the previous
#: output is taken from where it was: the static background beside a moving object, which the flow drags along.
STILL_LEVELS, STILL_PATCH = 4, 3
#: Forward-backward consistency (Sundaram et al. 2010, as in Ruder et al. 2016): a pixel is occluded where
#: |b + f(x + b)|^2 > CONSISTENCY * (|b|^2 + |f(x + b)|^2) + CONSISTENCY_PX.
CONSISTENCY, CONSISTENCY_PX = 0.01, 0.5


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))


class FlowTracker:
    """Dense optical flow between the consecutive grey frames of one clip: OpenCV's DIS (Kroeger et al. 2016, preset
    medium; no model weights), each pair's flows starting from the previous pair's, so that a motion that lasts is
    kept where DIS from scratch loses it (a 46 px move on some frames of the object clip, docs/video.md)."""

    def __init__(self) -> None:
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self._flows: tuple[np.ndarray, np.ndarray] | None = None  # the last (backward, forward), at the working size

    def backward_map(self, prev_grey: np.ndarray, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where each pixel of ``grey`` was in ``prev_grey`` (x and y maps, float32 (H, W)) and where that is to be
        trusted (float32 (H, W) in {0, 1}: inside the frame and consistent forwards and backwards)."""
        h, w = grey.shape
        scale = min(1.0, FLOW_SIDE / min(h, w))
        small = (max(1, round(w * scale)), max(1, round(h * scale)))
        a, b = (cv2.resize(g, small, interpolation=cv2.INTER_AREA) if scale < 1 else g for g in (prev_grey, grey))
        start = self._flows if self._flows is not None and self._flows[0].shape[:2] == a.shape else (None, None)
        back, fwd = self._dis.calc(b, a, start[0]), self._dis.calc(a, b, start[1])  # x moves to x + flow(x)
        self._flows = (back, fwd)
        if scale < 1:
            back, fwd = (cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) / scale for f in (back, fwd))
        xs, ys = _grid(h, w)
        map_x, map_y = xs + back[..., 0], ys + back[..., 1]
        fwd_there = cv2.remap(fwd, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        error = ((back + fwd_there) ** 2).sum(-1)
        bound = CONSISTENCY * ((back**2).sum(-1) + (fwd_there**2).sum(-1)) + CONSISTENCY_PX
        inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
        return map_x, map_y, ((error <= bound) & inside).astype(np.float32)


def grey_of(pixels: np.ndarray) -> np.ndarray:
    """Grey uint8 (H, W) of an RGB uint8 or float [0, 1] frame (H, W, 3)."""
    if pixels.dtype != np.uint8:
        pixels = (np.clip(pixels, 0, 1) * 255 + 0.5).astype(np.uint8)
    return cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)


def _patch_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean |a - b| (float32 (H, W)) over the STILL_PATCH square around each pixel."""
    return cv2.blur(np.abs(a - b), (STILL_PATCH, STILL_PATCH))


class FlowBlend:
    """out_t = (1 - w m) x out_t + w m x prev: the previous output (already blended, so stability carries over), warped
    by the content frames' flow, or where it was at still pixels (:data:`STILL_LEVELS`); ``m`` where the flow is
    consistent and the warped previous content matches (:data:`MATCH_LEVELS`), or the pixel is still; ``w`` the
    weight."""

    def __init__(self, weight: float) -> None:
        if not 0.0 <= weight < 1.0:
            raise InputError(f"the flow blend weight must be in [0, 1), got {weight}")
        self.weight = weight
        self._flow = FlowTracker()
        self._prev: tuple[np.ndarray, np.ndarray] | None = None  # grey content, output (H, W, 3) float32

    def __call__(self, content: np.ndarray, output: np.ndarray) -> np.ndarray:
        """The blended output (H, W, 3) float32 of a content frame (H, W, 3, RGB) and its stylization."""
        grey = grey_of(content)
        if self.weight and self._prev is not None and self._prev[0].shape == grey.shape:
            prev_grey, prev_out = self._prev
            map_x, map_y, mask = self._flow.backward_map(prev_grey, grey)
            warped_grey, warped_out = (cv2.remap(x, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                                       for x in self._prev)
            now, warped_grey, prev_grey = (g.astype(np.float32) for g in (grey, warped_grey, prev_grey))
            mask *= np.abs(warped_grey - now) < MATCH_LEVELS
            still_error = _patch_difference(prev_grey, now)
            still = (still_error < STILL_LEVELS) & (still_error < _patch_difference(warped_grey, now))
            mask[still] = 1.0
            keep = (self.weight * mask)[..., None]
            output = (1 - keep) * output + keep * np.where(still[..., None], prev_out, warped_out)
        self._prev = (grey, output)
        return output
