"""Temporal stability of a stylized clip: what keeps per-frame AdaIN from flickering (docs/video.md has the
measurements behind the levels).

* :class:`RunningStats`: the content statistics AdaIN normalises each frame by, as an exponential running mean over
  the frames so far instead of the frame's own (a :data:`adain.stylizer.ContentStatsHook`);
* :class:`FlowBlend`: the previous stylized frame, warped to the current one by optical flow (OpenCV's Farneback,
  no model weights), blended in where the forward and backward flows agree and the warped previous content frame
  matches the current one (occlusions, moving edges and cuts are left alone).
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


#: Farneback runs on the grey frames at this shorter side at most (its flow is scaled back): flow is smooth, and
#: at 720p the full-size flow would cost a good part of a frame's stylization.
FLOW_SIDE = 320
#: Photometric check: the previous grey content frame, warped by the flow, must be within this many grey levels of the
#: current one where the previous output is blended in (where the flow is wrong, at a moving object's edges, it is not).
MATCH_LEVELS = 10
#: Forward-backward consistency (Sundaram et al. 2010, as in Ruder et al. 2016): a pixel is occluded where
#: |b + f(x + b)|^2 > CONSISTENCY * (|b|^2 + |f(x + b)|^2) + CONSISTENCY_PX.
CONSISTENCY, CONSISTENCY_PX = 0.01, 0.5


def farneback(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense flow (H, W, 2) from grey uint8 frame ``a`` to ``b``: a's pixel x moves to x + flow(x) in b."""
    return cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=4, winsize=15, iterations=3, poly_n=5,
                                        poly_sigma=1.2, flags=0)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))


def backward_map(prev_grey: np.ndarray, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each pixel of ``grey`` was in ``prev_grey`` (x and y maps, float32 (H, W)) and where that is to be
    trusted (float32 (H, W) in {0, 1}: inside the frame and consistent forwards and backwards)."""
    h, w = grey.shape
    scale = min(1.0, FLOW_SIDE / min(h, w))
    small = (max(1, round(w * scale)), max(1, round(h * scale)))
    a, b = (cv2.resize(g, small, interpolation=cv2.INTER_AREA) if scale < 1 else g for g in (prev_grey, grey))
    back, fwd = farneback(b, a), farneback(a, b)
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


class FlowBlend:
    """out_t = (1 - w m) x out_t + w m x warp(out_{t-1}): the previous output (already blended, so stability carries
    over) warped by the content frames' flow, ``m`` where the flow is consistent and the warped previous content
    matches (:data:`MATCH_LEVELS`), ``w`` the weight."""

    def __init__(self, weight: float) -> None:
        if not 0.0 <= weight < 1.0:
            raise InputError(f"the flow blend weight must be in [0, 1), got {weight}")
        self.weight = weight
        self._prev: tuple[np.ndarray, np.ndarray] | None = None  # grey content, output (H, W, 3) float32

    def __call__(self, content: np.ndarray, output: np.ndarray) -> np.ndarray:
        """The blended output (H, W, 3) float32 of a content frame (H, W, 3, RGB) and its stylization."""
        grey = grey_of(content)
        if self.weight and self._prev is not None and self._prev[0].shape == grey.shape:
            map_x, map_y, mask = backward_map(self._prev[0], grey)
            prev_grey, prev_out = (cv2.remap(x, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                                   for x in self._prev)
            mask *= np.abs(prev_grey.astype(np.float32) - grey) < MATCH_LEVELS
            keep = (self.weight * mask)[..., None]
            output = (1 - keep) * output + keep * prev_out
        self._prev = (grey, output)
        return output
