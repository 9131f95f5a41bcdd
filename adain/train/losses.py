"""The training losses of the paper (Sec. 6.2), and their evaluation on held-out pairs.

For a content image c and a style image s, with f the encoder up to relu4_1 (or
the shallower layer a decoder is trained at) and t = AdaIN(f(c), f(s)) the
decoder's input:

* content loss: MSE(f(output), t);
* style loss: sum over relu1_1..relu4_1 of MSE(channel means) + MSE(channel stds)
  between the output and the style image;
* total: content + style_weight * style.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import ops
from ..net import FEATURE_LAYERS, Decoder, Encoder
from .appearance import colour_distance, patch_distance, random_directions, sorted_projections, texture_energies

COLOUR_LOSS_DIRECTIONS = 32  # random projections per step
COLOUR_LOSS_PIXELS = 4096  # random pixels of each image per step
FEATURE_LOSS_DIRECTIONS = 32  # random projections per layer and step
PATCH_LOSS_DIRECTIONS = 64  # random projections of the patches per size and step
#: Added to each texture energy in the loss: a flat style crop (a sky, blank paper) has energies near 0, whose logs
#: (down to -28) no output reaches: one such crop made a 10-step window's mean loss 14 times its usual size. Crops
#: of the training paintings have log energies of -10.6 and up (median about -7), which this raises by 0.34 at
#: most and by about 0.01 at the median.
TEXTURE_LOSS_FLOOR = 1e-5


def decoder_targets(decoder: Decoder, content_feats: Sequence[Tensor], style_feats: Sequence[Tensor],
                    alpha: float = 1.0) -> list[Tensor]:
    """AdaIN at each of the ``decoder``'s inputs, from relu1_1, relu2_1, ... feature lists; its skips times
    :meth:`Decoder.skip_gains` of ``alpha`` (1: a style step; 0: a reconstruction step, skips at full strength)."""
    targets = [ops.adain(content_feats[i], ops.channel_stats(style_feats[i]))
               for i in (FEATURE_LAYERS.index(name) for name in decoder.inputs)]
    gains = decoder.skip_gains(alpha)
    return [t * gain if gain != 1.0 else t for t, gain in zip(targets[:-1], gains, strict=True)] + targets[-1:]


def colour_loss(output: Tensor, style: Tensor) -> Tensor:
    """Sliced Wasserstein distance between the CIELAB pixel colours of output and style image, batch mean
    (random directions and pixels drawn from the global RNG: a resumed run draws the same)."""
    directions = random_directions(COLOUR_LOSS_DIRECTIONS)
    return colour_distance(output.float(), style.float(), directions, COLOUR_LOSS_PIXELS).mean()


def texture_loss(output: Tensor, style: Tensor) -> Tensor:
    """MSE between the log oriented derivative-of-Gaussian energies of output and style image
    (:func:`adain.train.appearance.texture_energies`, on BT.601 luminance), each energy plus
    :data:`TEXTURE_LOSS_FLOOR`."""
    def energies(img: Tensor) -> Tensor:
        return texture_energies(ops.rgb_to_ycbcr(img.float())[:, :1], TEXTURE_LOSS_FLOOR)

    with torch.no_grad():
        reference = energies(style)
    return F.mse_loss(energies(output), reference)


def patch_loss(output: Tensor, style: Tensor) -> Tensor:
    """Sliced Wasserstein distance between the output's and the style image's 7 x 7 RGB patches at full, half and
    quarter size (:func:`adain.train.appearance.patch_distance`), batch mean (directions from the global RNG: a
    resumed run draws the same)."""
    return patch_distance(output, style.detach(), PATCH_LOSS_DIRECTIONS).mean()


def feature_distribution_loss(out_feats: Sequence[Tensor], style_feats: Sequence[Tensor],
                              directions: int = FEATURE_LOSS_DIRECTIONS) -> Tensor:
    """Sliced Wasserstein-2 distance between the output's and the style image's feature distributions at each
    layer given (every pixel a point in channel space; Heitz et al., CVPR 2021), each over the mean square of
    the style's projections; summed over layers, batch mean. Where the mean/std style loss matches two moments
    per channel, this matches the whole distribution: which features occur together, i.e. the strokes. Random
    directions come from the global RNG (a resumed run draws the same)."""
    total = out_feats[0].new_zeros((), dtype=torch.float32)
    for o, s in zip(out_feats, style_feats, strict=True):
        o, s = o.float().flatten(2).transpose(1, 2), s.float().flatten(2).transpose(1, 2)  # (N, pixels, C)
        d = torch.randn(o.shape[-1], directions).to(o)
        po, ps = sorted_projections(o, s, (d / d.norm(dim=0, keepdim=True)).T)
        total = total + ((po - ps) ** 2).mean() / (ps.square().mean() + 1e-8)
    return total


def content_loss(out_feat: Tensor, target: Tensor) -> Tensor:
    """MSE between the output's features at the AdaIN layer and the AdaIN target t."""
    return F.mse_loss(out_feat.float(), target.float())


def style_losses(out_feats: Sequence[Tensor], style_feats: Sequence[Tensor]) -> list[Tensor]:
    """Per layer: MSE of channel means + MSE of channel stds."""
    losses = []
    for o, s in zip(out_feats, style_feats, strict=True):
        so, ss = ops.channel_stats(o), ops.channel_stats(s)
        losses.append(F.mse_loss(so.mean, ss.mean) + F.mse_loss(so.std, ss.std))
    return losses


def normalised_feature_loss(out_feat: Tensor, content_feat: Tensor) -> Tensor:
    """MSE between instance-normalised feature maps: the content's layout, whatever the style's statistics."""
    def standardised(feat: Tensor) -> Tensor:
        return F.instance_norm(feat.float(), eps=ops.EPS)

    return F.mse_loss(standardised(out_feat), standardised(content_feat))


def layout_loss(output: Tensor, content: Tensor, factor: int = 8) -> Tensor:
    """MSE between the standardised luminance of the two images at 1/``factor`` of their size.

    Where the photo is light or dark, independent of the style's tonal range (0 when the output's
    coarse luminance is an affine map of the content's, 2 when it is unrelated).
    """
    def coarse(img: Tensor) -> Tensor:
        lum = F.avg_pool2d(ops.luminance(img.float()), factor, ceil_mode=True)
        return F.instance_norm(lum, eps=ops.EPS)

    return F.mse_loss(coarse(output), coarse(content))


def phase_profile(img: Tensor, period: int = 8) -> Tensor:
    """Mean |luminance gradient| by position modulo ``period``, over its mean across positions: (2, period).

    Row 0: horizontal differences grouped by column, row 1: vertical ones grouped by row, pooled over the
    batch. All ones when the gradient does not depend on the phase; an upsampling grid shows as a peak.
    """
    y = ops.rgb_to_ycbcr(img.float())[:, 0]  # BT.601 luminance (B, H, W)
    profiles = []
    for grad, dim in ((y[..., :, 1:] - y[..., :, :-1], 2), (y[..., 1:, :] - y[..., :-1, :], 1)):
        g = grad.abs().movedim(dim, -1).flatten(0, -2).mean(0)  # one value per column (row)
        n = g.shape[0] // period * period
        phases = g[:n].view(-1, period).mean(0)
        profiles.append(phases / phases.mean().clamp(min=1e-8))
    return torch.stack(profiles)


def grid_loss(output: Tensor, content: Tensor, period: int = 8) -> Tensor:
    """MSE between the phase profiles (:func:`phase_profile`) of output and content photo.

    Penalises a gradient that peaks at fixed positions modulo ``period`` (the decoder's upsampling grid)
    while leaving alone whatever phase structure the photos themselves have in this batch.
    """
    with torch.no_grad():
        reference = phase_profile(content, period)
    return F.mse_loss(phase_profile(output, period), reference)


@dataclass
class Losses:
    """Content loss and per-layer style losses (relu1_1..relu4_1), averaged over pairs."""

    content: float
    style_layers: list[float]

    @property
    def style(self) -> float:
        """Sum of the per-layer style losses."""
        return sum(self.style_layers)

    def as_dict(self, style_weight: float) -> dict:
        """JSON-ready: content, style, total (= content + style_weight * style), style per layer."""
        return {"content": self.content, "style": self.style, "total": self.content + style_weight * self.style,
                "style_layers": dict(zip(FEATURE_LAYERS, self.style_layers, strict=True))}


@dataclass
class HeldOutLosses:
    """:func:`held_out_losses`: the decoders' losses and the references they can be read against."""

    pairs: int
    decoders: dict[str, Losses]
    content_as_output: Losses  # the content image taken as the output: no stylisation at all
    target_content_floor: float  # mean(min(t, 0)^2): no image's content loss can be lower
    target_style: float  # the AdaIN layer's style term of t itself (small: AdaIN copies the style's stats up to eps)


class _Mean:
    """Running mean of vectors, weighted by batch size (float64)."""

    def __init__(self) -> None:
        self.total: Tensor | None = None
        self.weight = 0

    def add(self, values: Sequence[Tensor], weight: int) -> None:
        v = torch.stack([x.detach().double().cpu() for x in values]) * weight
        self.total = v if self.total is None else self.total + v
        self.weight += weight

    def result(self) -> list[float]:
        return (self.total / self.weight).tolist()


def _losses(mean: _Mean) -> Losses:
    content, *style = mean.result()
    return Losses(content, style)


@torch.no_grad()
def held_out_losses(encoder: Encoder, decoders: Mapping[str, Decoder], content: Tensor, style: Tensor,
                    batch_size: int = 8) -> HeldOutLosses:
    """Losses of each decoder on the pairs ``(content[i], style[i])``, in fp32, in eval mode.

    The outputs are not clamped, as in training, so the numbers compare with the training losses.
    The encoder's feature maps are computed once and shared by all decoders.
    """
    if len(content) == 0:
        raise ValueError("no held-out pairs to evaluate")
    device = next(encoder.parameters()).device
    modes = {name: dec.training for name, dec in decoders.items()}
    for dec in decoders.values():
        dec.eval()
    means = {name: _Mean() for name in [*decoders, "content_as_output", "target"]}
    k = FEATURE_LAYERS.index(encoder.layer)  # where AdaIN works
    try:
        for i in range(0, len(content), batch_size):
            c = content[i : i + batch_size].to(device).float()
            s = style[i : i + batch_size].to(device).float()
            c_feats, s_feats = encoder.features(c), encoder.features(s)
            t = ops.adain(c_feats[k], ops.channel_stats(s_feats[k]))
            n = len(c)
            means["content_as_output"].add([content_loss(c_feats[k], t), *style_losses(c_feats, s_feats)], n)
            means["target"].add([t.clamp(max=0).square().mean(), *style_losses([t], s_feats[k : k + 1])], n)
            for name, dec in decoders.items():
                targets = decoder_targets(dec, c_feats, s_feats)
                o_feats = encoder.features(dec(targets, tuple(c.shape[-2:])).float())
                means[name].add([content_loss(o_feats[k], t), *style_losses(o_feats, s_feats)], n)
    finally:
        for name, dec in decoders.items():
            dec.train(modes[name])
    floor, target_style = means["target"].result()
    return HeldOutLosses(len(content), {name: _losses(means[name]) for name in decoders},
                         _losses(means["content_as_output"]), floor, target_style)
