"""Balanced style mixing: per-style factors that give every style the influence its weight promises.

With raw weights a style far from the content dominates a mix. A style's *relative improvement* is its
style loss at the content image divided by its style loss at the result. Balancing finds positive
per-style factors b such that, at equal weights, all styles improve by the same relative amount:

* optimisation mode: the style losses are scaled, L = sum_i gamma_i * b_i * L_style_i;
* AdaIN mode: the blend weights are scaled, w_i proportional to gamma_i * b_i.

The factors are found by secant steps on log b against the spread of the log relative improvements;
each step costs one stylisation (a whole optimisation run, or one decoder pass).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..errors import InputError
from ..stylizer import (
    ColorMode,
    ImageLike,
    Stylizer,
    Target,
    check_weights,
    model_input,
    prepare_content,
    prepare_style,
    stack_stats,
)
from .gatys import Callback, Objective, OptimizeOptions, descend

Measure = Callable[[Tensor], Tensor]  # factors (S,) -> relative improvements (S,)
MAX_STEP = math.log(8.0)  # largest change of one factor per step
MAX_RANGE = math.log(16.0)  # factors stay within 1/16..16 times where they started
BALANCE_RUNS = 3  # most calibration runs in optimisation mode, each of the run's iterations


def relative_improvements(start: Tensor, end: Tensor) -> Tensor:
    """Per-style loss at the start divided by the loss at the end (> 1: the style got closer)."""
    return start / end.clamp_min(torch.finfo(end.dtype).tiny)


def spread(improvements: Tensor) -> float:
    """Largest over smallest relative improvement: 1 when balanced."""
    return (improvements.max() / improvements.min()).item()


def _gap(improvements: Tensor) -> Tensor:
    log_r = improvements.double().log()
    return log_r - log_r.mean()


def equalise(measure: Measure, factors: Tensor, rounds: int, tol: float, slope: float) -> Tensor:
    """Factors (S,) > 0 whose relative improvements ``measure(factors)`` agree within ``1 + tol``, if found.

    Starts from ``factors``, keeps them within 1/16..16 times that, and makes at most ``rounds`` measurements;
    returns the best factors measured.
    ``slope`` is the first guess of d log(improvement_i) / d log(b_i), both taken against their means;
    each measurement refines it (a secant step), and a step that shows no such response halves the next.
    """
    origin = best_b = factors.double().log()
    best_gap = _gap(measure(best_b.exp()))
    for _ in range(rounds - 1):
        if (best_gap.max() - best_gap.min()).item() <= math.log1p(tol):
            break
        log_b = best_b - (best_gap / slope).clamp(-MAX_STEP, MAX_STEP)
        log_b = torch.minimum(torch.maximum(log_b, origin - MAX_RANGE), origin + MAX_RANGE)
        gap = _gap(measure(log_b.exp()))
        d_b, d_gap = log_b - best_b, gap - best_gap
        estimate = ((d_b * d_gap).sum() / (d_b * d_b).sum().clamp_min(1e-12)).item()
        slope = estimate if estimate > 0 else 2 * slope
        if (gap.max() - gap.min()).item() < (best_gap.max() - best_gap.min()).item():
            best_b, best_gap = log_b, gap
    return best_b.exp().float()


# ---- optimisation mode --------------------------------------------------------


def refuse_mask(mask: Tensor | None) -> None:
    """Balancing weighs the styles of a blend; with a mask each style has its own region instead."""
    if mask is not None:
        raise InputError("balance applies to blends of styles by weight; with a mask each style keeps its own region")


def optimize_improvements(objective: Objective, content: Tensor, factors: Tensor,
                          callback: Callback | None = None) -> Tensor:
    """Relative improvements (S,) of one optimisation from ``content`` (1, C, H, W) with style-loss ``factors``
    (the objective's weights as they are)."""
    with torch.no_grad():
        start = objective.style_losses(objective.features(content.expand(-1, 3, -1, -1)))
    objective.factors = factors.to(start)
    image, _ = descend(objective, content, callback)
    with torch.no_grad():
        end = objective.style_losses(objective.features(image.expand(-1, 3, -1, -1)))
    return relative_improvements(start, end).cpu()


def balance_factors(objective: Objective, content: Tensor, rounds: int = BALANCE_RUNS, tol: float = 0.05,
                    callback: Callback | None = None) -> Tensor:
    """Factors b (S,) for the style losses of ``objective``, calibrated on runs from ``content`` (1, C, H, W).

    The first guess b_i ~ L_style_i(content)^(-1/2) is usually close; each round is one optimisation at
    equal weights. The factors are scaled so that, at equal weights, the style loss of the content image
    is what it is unbalanced. ``callback`` sees every log entry of the runs, with its "round".
    """
    weights = objective.weights
    objective.weights = torch.full_like(weights, 1.0 / len(weights))
    rounds_done = 0
    with torch.no_grad():
        start = objective.style_losses(objective.features(content.expand(-1, 3, -1, -1)))

    def scaled(factors: Tensor) -> Tensor:
        factors = factors.to(start)
        return factors * start.mean() / (factors * start).mean()

    def measure(factors: Tensor) -> Tensor:
        nonlocal rounds_done
        rounds_done += 1
        tagged = None if callback is None else (lambda entry, k=rounds_done: callback({**entry, "round": k}))
        return optimize_improvements(objective, content, scaled(factors), tagged)

    try:
        return scaled(equalise(measure, start.cpu().rsqrt(), rounds, tol, slope=2.0))
    finally:
        objective.weights = weights


# ---- AdaIN mode ----------------------------------------------------------------


class AdainMixer:
    """Stylizes one content with a blend of styles and measures each style's relative improvement."""

    def __init__(self, stylizer: Stylizer, content: ImageLike, styles: Sequence[ImageLike],
                 preserve_color: ColorMode = "none", content_size: int = 0, style_size: int = 0,
                 crop: bool = False, options: OptimizeOptions | None = None, style_scale: float = 1.0) -> None:
        c, _, _ = prepare_content(content, len(styles), None, preserve_color, None, content_size, crop)
        self.stylizer = stylizer
        self.content = model_input(c, preserve_color)
        self.stats = stack_stats([stylizer.style_stats(s, preserve_color, c, style_size, crop, style_scale)
                                  for s in styles])
        images = [prepare_style(s, preserve_color, c, style_size, crop, style_scale=style_scale) for s in styles]
        self.objective = Objective(stylizer.encoder, self.content, images, torch.ones(len(styles)), None,
                                   options or OptimizeOptions())
        with torch.no_grad():
            self.start = self.objective.style_losses(self.objective.features(self.content))

    def improvements(self, weights: Tensor) -> Tensor:
        """Relative improvements (S,) of the AdaIN result at blend ``weights`` (S,) summing to one."""
        image = self.stylizer.render(self.content, [Target(self.stats, weights)])
        with torch.no_grad():
            end = self.objective.style_losses(self.objective.features(image))
        return relative_improvements(self.start, end).cpu()


def balanced_weights(stylizer: Stylizer, content: ImageLike, styles: Sequence[ImageLike],
                     weights: Sequence[float] | None = None, *, preserve_color: ColorMode = "none",
                     content_size: int = 0, style_size: int = 0, crop: bool = False,
                     mask: Tensor | None = None, options: OptimizeOptions | None = None, rounds: int = 8,
                     tol: float = 0.02, style_scale: float = 1.0) -> Tensor:
    """Blend weights (S,) for ``Stylizer.stylize`` that give each style the influence ``weights`` promise.

    Factors b are calibrated so that the equal blend improves every style's loss (``options``' style loss,
    Gram matrices by default) by the same relative amount; the result is gamma_i * b_i, normalised.
    A ``mask`` is refused: there is no blend to balance.
    """
    refuse_mask(mask)
    gamma = check_weights(weights, len(styles))
    if len(styles) == 1:
        return gamma.float()
    mixer = AdainMixer(stylizer, content, styles, preserve_color, content_size, style_size, crop, options, style_scale)
    factors = equalise(lambda b: mixer.improvements(b / b.sum()), torch.ones(len(styles)), rounds, tol, slope=1.0)
    mixed = gamma.float() * factors
    return mixed / mixed.sum()
