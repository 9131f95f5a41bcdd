"""The objective of Gatys et al. (CVPR 2016) on the AdaIN encoder, and the loop that minimises it.

An image x is scored as

    content_weight * sum_{l in content layers} MSE(phi_l(x), phi_l(c))
  + style_weight * sum_i gamma_i * b_i * L_style_i(x)
  + tv_weight * TV(x)

with L_style_i(x) = sum_l w_l * D(phi_l(x) over region i, phi_l(s_i)) over relu1_1..relu4_1: D is the MSE of
Gram matrices or of channel means plus that of channel stds. gamma_i are the normalised style weights, b_i
per-style factors (1 unless balanced), and region i the whole image unless a mask is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import ops
from ..errors import InputError
from ..masks import feature_masks
from ..net import FEATURE_LAYERS, MIN_SIDE, Encoder

InitMode = Literal["adain", "content", "noise"]
INITS: tuple[str, ...] = ("adain", "content", "noise")
OptimizerName = Literal["lbfgs", "adam"]
OPTIMIZERS: dict[str, float] = {"lbfgs": 1.0, "adam": 0.02}  # name -> default learning rate
StyleLoss = Literal["gram", "stats"]
STYLE_LOSSES: tuple[str, ...] = ("gram", "stats")
Callback = Callable[[dict], None]


@dataclass(frozen=True)
class OptimizeOptions:
    """Settings of one optimisation; ``iterations`` counts loss evaluations (one forward + backward each)."""

    iterations: int = 300
    optimizer: OptimizerName = "lbfgs"
    lr: float | None = None  # None: 1.0 for L-BFGS, 0.02 for Adam
    init: InitMode = "adain"
    seed: int = 0
    content_weight: float = 1.0
    style_weight: float = 10.0
    tv_weight: float = 10.0
    content_layers: tuple[str, ...] = ("relu4_1",)
    style_layer_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)  # relu1_1..relu4_1
    style_loss: StyleLoss = "gram"

    def __post_init__(self) -> None:
        if not isinstance(self.iterations, int) or self.iterations < 1:
            raise InputError(f"iterations must be a whole number >= 1, got {self.iterations!r}")
        for name, allowed in (("optimizer", OPTIMIZERS), ("init", INITS), ("style_loss", STYLE_LOSSES)):
            if getattr(self, name) not in allowed:
                raise InputError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        weights = {"lr": self.learning_rate, "content_weight": self.content_weight, "style_weight": self.style_weight,
                   "tv_weight": self.tv_weight}
        weights |= {f"style layer weight {i + 1}": w for i, w in enumerate(self.style_layer_weights)}
        for name, value in weights.items():
            if not math.isfinite(value) or value < 0 or (name == "lr" and value == 0):
                raise InputError(f"{name} must be a finite number {'>' if name == 'lr' else '>='} 0, got {value}")
        if len(self.style_layer_weights) != len(FEATURE_LAYERS):
            raise InputError(f"give {len(FEATURE_LAYERS)} style layer weights ({', '.join(FEATURE_LAYERS)}), "
                             f"got {len(self.style_layer_weights)}")
        unknown = sorted(set(self.content_layers) - set(FEATURE_LAYERS))
        if unknown or not self.content_layers:
            raise InputError(f"content layers must be among {', '.join(FEATURE_LAYERS)}, "
                             f"got {list(self.content_layers)}")

    @property
    def learning_rate(self) -> float:
        """``lr``, or the optimizer's default."""
        return OPTIMIZERS[self.optimizer] if self.lr is None else self.lr


def gram(feat: Tensor, masks: Tensor | None = None) -> Tensor:
    """Gram matrices of ``feat`` (1, C, H, W) normalised by C times the area: (K, C, C) over the soft regions
    ``masks`` (K, H, W), or (1, C, C) over the whole map."""
    f = feat.float().flatten(2)[0]  # C P
    c = f.shape[0]
    if masks is None:
        return (f @ f.T / (c * f.shape[1]))[None]
    m = masks.flatten(1)  # K P
    g = torch.stack([(f * mk) @ f.T for mk in m])
    return g / (c * m.sum(1).clamp_min(1e-8))[:, None, None]


def mean_std(feat: Tensor, masks: Tensor | None = None) -> Tensor:
    """Channel means and stds of ``feat`` (1, C, H, W) as (K, 2, C): per soft region of ``masks`` (K, H, W),
    or K = 1 over the whole map."""
    s = ops.channel_stats(feat) if masks is None else ops.masked_stats(feat, masks[None])
    mean, std = (s.mean, s.std) if masks is None else (s.mean[0], s.std[0])
    return torch.stack([mean, std], dim=1)


def _gram_distance(x: Tensor, target: Tensor) -> Tensor:
    return (x - target).square().flatten(1).mean(1)


def _stats_distance(x: Tensor, target: Tensor) -> Tensor:
    return (x - target).square().mean(2).sum(1)  # MSE of the means + MSE of the stds


_STYLE = {"gram": (gram, _gram_distance), "stats": (mean_std, _stats_distance)}


def total_variation(img: Tensor) -> Tensor:
    """Mean squared difference of vertically and of horizontally adjacent pixels, summed."""
    return (img[..., 1:, :] - img[..., :-1, :]).square().mean() + (img[..., 1:] - img[..., :-1]).square().mean()


@dataclass
class LossTerms:
    """The terms of the objective for one image; ``styles`` holds the raw per-style losses L_style_i."""

    total: Tensor
    content: Tensor
    style: Tensor  # sum_i gamma_i * b_i * L_style_i
    styles: Tensor  # (S,)
    tv: Tensor

    def record(self, iteration: int) -> dict:
        """A JSON-ready log entry."""
        return {"iteration": iteration, "loss": self.total.item(), "content": self.content.item(),
                "style": self.style.item(), "styles": self.styles.tolist(), "tv": self.tv.item()}


class Objective:
    """The loss of images the size of ``content``: its targets are computed once, on the encoder's device.

    ``content`` (3, H, W) and ``styles`` [(3, h, w)] are prepared images, ``weights`` (S,) the normalised
    style weights gamma, ``masks`` (S, H, W) optional soft regions, one per style.
    """

    def __init__(self, encoder: Encoder, content: Tensor, styles: Sequence[Tensor], weights: Tensor,
                 masks: Tensor | None, options: OptimizeOptions) -> None:
        for what, img in (("content image", content), *(("style image", s) for s in styles)):
            if min(img.shape[-2:]) < MIN_SIDE:
                raise InputError(f"the {what} is {img.shape[-1]}x{img.shape[-2]} pixels as prepared; "
                                 f"each side needs at least {MIN_SIDE}")
        self.encoder, self.options = encoder, options
        self.device = next(encoder.parameters()).device
        self.weights = weights.to(self.device, torch.float32)
        self.factors = torch.ones_like(self.weights)
        self._describe, self._distance = _STYLE[options.style_loss]
        self._style_layers = [(i, w) for i, w in enumerate(options.style_layer_weights) if w > 0]
        with torch.no_grad():
            feats = self.features(content)
            self._content_targets = [(i, feats[i]) for i in map(FEATURE_LAYERS.index, options.content_layers)]
            self._masks = [None if masks is None else feature_masks(masks.to(self.device).float(), f.shape[-2:])
                           for f in feats]
            style_feats = [self.features(s) for s in styles]
            self._style_targets = {i: torch.cat([self._describe(sf[i]) for sf in style_feats])
                                   for i, _ in self._style_layers}

    def features(self, img: Tensor) -> list[Tensor]:
        """relu1_1..relu4_1 of an image (3, H, W) or (1, 3, H, W)."""
        return self.encoder.features(img.reshape(1, *img.shape[-3:]).to(self.device))

    def style_losses(self, feats: Sequence[Tensor]) -> Tensor:
        """The raw per-style losses L_style_i (S,) of an image's features."""
        losses = torch.zeros_like(self.weights)
        for i, w in self._style_layers:
            losses = losses + w * self._distance(self._describe(feats[i], self._masks[i]), self._style_targets[i])
        return losses

    def __call__(self, img: Tensor) -> LossTerms:
        """All terms for an image (1, 3, H, W)."""
        feats = self.features(img)
        content = torch.stack([F.mse_loss(feats[i], t) for i, t in self._content_targets]).sum()
        styles = self.style_losses(feats)
        style = (self.weights * self.factors * styles).sum()
        tv = total_variation(img)
        o = self.options
        total = o.content_weight * content + o.style_weight * style + o.tv_weight * tv
        return LossTerms(total, content, style, styles, tv)


def descend(objective: Objective, start: Tensor, callback: Callback | None = None) -> tuple[Tensor, list[dict]]:
    """Minimise ``objective`` over the pixels, from ``start`` (1, 3 or 1, H, W: one channel is a grey image).

    Runs ``options.iterations`` loss evaluations (L-BFGS stops early only when the gradient vanishes),
    keeping the pixels in [0, 1]. Returns the image (1, 3 or 1, H, W) and one log entry per evaluation.
    """
    o = objective.options
    x = start.detach().to(objective.device, torch.float32).clone().requires_grad_(True)
    if o.optimizer == "lbfgs":
        opt: torch.optim.Optimizer = torch.optim.LBFGS([x], lr=o.learning_rate, max_iter=o.iterations,
                                                       history_size=50, tolerance_grad=0.0, tolerance_change=0.0)
    else:
        opt = torch.optim.Adam([x], lr=o.learning_rate)
    history: list[dict] = []

    def closure() -> Tensor:
        with torch.no_grad():
            x.clamp_(0, 1)
        opt.zero_grad()
        terms = objective(x.expand(-1, 3, -1, -1))
        terms.total.backward()
        x.grad = x.grad.contiguous()  # L-BFGS flattens it with view()
        history.append(terms.record(len(history)))
        if callback is not None:
            callback(history[-1])
        return terms.total.detach()

    with torch.enable_grad():
        for _ in range(1 if o.optimizer == "lbfgs" else o.iterations):
            opt.step(closure)
    return x.detach().clamp_(0, 1), history
