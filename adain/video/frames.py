"""One clip's frames, in order, through a :class:`adain.stylizer.Stylizer`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..options import check_alpha, check_grain, check_style_scale
from ..stylizer import ColorMode, ImageLike, Stylizer, Target, finish, model_input, prepare_content, stack_stats
from .temporal import DEFAULT_LEVEL, LEVELS, FlowBlend, RunningStats, Stability


class FrameStylizer:
    """Stylize the frames of one clip, one call each, in order.

    The style statistics are taken once, at the first frame (``coral`` matches the styles to that frame's colours,
    so the palette holds still); each frame's content statistics run through :class:`RunningStats` and its output
    through :class:`FlowBlend`, as ``stability`` says. ``mask`` (S, H, W) is fitted to the frames already.
    """

    def __init__(self, stylizer: Stylizer, styles: Sequence[ImageLike], weights: Sequence[float] | None = None,
                 alpha: float = 1.0, preserve_color: ColorMode = "none", mask: Tensor | None = None,
                 style_size: int = 0, style_scale: float = 1.0, stability: Stability = LEVELS[DEFAULT_LEVEL],
                 grain: float | None = None) -> None:
        self.stylizer, self.styles, self.weights, self.mask = stylizer, list(styles), weights, mask
        self.alpha, self.style_scale = check_alpha(alpha), check_style_scale(style_scale)
        self.grain = None if grain is None else check_grain(grain)  # None: the stylizer's
        self.preserve_color, self.style_size = preserve_color, style_size
        self.running = RunningStats(stability.stats_momentum)
        self.blend = FlowBlend(stability.flow_blend)
        self.target: Target | None = None

    def _target(self, frame: Tensor) -> Target:
        c, w, masks = prepare_content(frame, len(self.styles), self.weights, self.preserve_color, self.mask, 0, False,
                                      self.stylizer.limits)
        stats = stack_stats([self.stylizer.style_stats(s, self.preserve_color, c, self.style_size, False,
                                                       self.style_scale) for s in self.styles])
        return Target(stats, w, self.alpha, masks, self.grain)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """A stylized frame, float32 (H, W, 3) in [0, 1], of an RGB uint8 frame (H, W, 3)."""
        frame = torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255)
        if self.target is None:
            self.target = self._target(frame)
        out = self.stylizer.render(model_input(frame, self.preserve_color), [self.target], self.running)[0].cpu()
        out = finish(out, frame, self.preserve_color)
        return self.blend(pixels, out.permute(1, 2, 0).numpy())
