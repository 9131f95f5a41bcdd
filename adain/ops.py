"""AdaIN and the colour operations, on batched NCHW tensors.

Statistics follow the paper: per-channel mean over the spatial positions and
``std = sqrt(var + eps)`` with the population variance.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

EPS = 1e-5


class Stats(NamedTuple):
    """Per-channel mean and std of a feature map, each ``(N, C)``."""

    mean: Tensor
    std: Tensor


#: Elements of the fp32 copies that AdaIN and its statistics make of a feature map at once: a larger map (the
#: full-resolution relu1_1 of a large image, for a decoder with skips) is taken a few channels at a time, so
#: those copies stay small. Each channel is computed exactly as in one pass.
CHUNK_ELEMENTS = 1 << 24


def channel_groups(feat: Tensor) -> list[slice]:
    """The channel slices of ``feat`` (N, C, ...) whose fp32 copies hold at most :data:`CHUNK_ELEMENTS` (at least
    one channel each)."""
    per_channel = max(1, feat.numel() // max(1, feat.shape[1]))
    step = max(1, CHUNK_ELEMENTS // per_channel)
    return [slice(i, i + step) for i in range(0, feat.shape[1], step)]


def channel_stats(feat: Tensor, eps: float = EPS) -> Stats:
    """Mean and std over H, W of ``feat`` (N, C, H, W), in fp32."""
    parts = [torch.var_mean(feat[:, g].float().flatten(2), dim=2, correction=0) for g in channel_groups(feat)]
    var, mean = (torch.cat(p, 1) for p in zip(*parts, strict=True))
    return Stats(mean, (var + eps).sqrt())


def _masked_moments(f: Tensor, m: Tensor, area: Tensor) -> tuple[Tensor, Tensor]:
    """Per-region mean and variance (N, K, c) of fp32 features ``f`` (N, c, P) under weights ``m`` (N, K, P)."""
    means, variances = [], []
    for k in range(m.shape[1]):
        w = m[:, k : k + 1]  # N 1 P
        mean = (w * f).sum(2) / area[:, k : k + 1]
        d = f - mean[..., None]
        means.append(mean)
        variances.append((w * d * d).sum(2) / area[:, k : k + 1])
    return torch.stack(means, 1), torch.stack(variances, 1)


def masked_stats(feat: Tensor, masks: Tensor, eps: float = EPS) -> Stats:
    """Per-region stats: ``masks`` (N, K, H, W) weights -> Stats of shape (N, K, C)."""
    m = masks.float().flatten(2)  # N K P
    area = m.sum(2).clamp_min(1e-8)  # N K
    parts = [_masked_moments(feat[:, g].float().flatten(2), m, area) for g in channel_groups(feat)]
    mean, var = (torch.cat(p, 2) for p in zip(*parts, strict=True))
    return Stats(mean, (var + eps).sqrt())


def blend_stats(stats: Stats, weights: Tensor) -> Stats:
    """sum_i w_i * AdaIN(x, s_i) == AdaIN with (sum_i w_i std_i, sum_i w_i mean_i).

    ``stats`` hold (S, C) for S styles; ``weights`` (S,) sum to one.
    """
    w = weights.to(stats.mean)[:, None]
    return Stats((w * stats.mean).sum(0), (w * stats.std).sum(0))


def split_stats(stats: Stats, channels: list[int]) -> list[Stats]:
    """Statistics of several feature maps, concatenated along the last axis, split back into each map's."""
    return [Stats(m, s) for m, s in zip(stats.mean.split(channels, -1), stats.std.split(channels, -1), strict=True)]


def adain(content: Tensor, style: Stats, eps: float = EPS, content_stats: Stats | None = None) -> Tensor:
    """Normalise ``content`` per channel and give it ``style``'s (N, C) mean and std. ``content_stats`` (N, C), when
    given, are what it is normalised by instead of its own (video: statistics smoothed over time)."""
    c = channel_stats(content, eps) if content_stats is None else content_stats
    scale = (style.std / c.std)[..., None, None]
    shift = (style.mean - c.mean * style.std / c.std)[..., None, None]
    out = torch.empty_like(content)
    for g in channel_groups(content):
        out[:, g] = (content[:, g].float() * scale[:, g] + shift[:, g]).to(content.dtype)
    return out


def masked_adain(content: Tensor, masks: Tensor, styles: Stats, eps: float = EPS,
                 content_stats: Stats | None = None) -> Tensor:
    """Region-wise AdaIN: region k of ``content`` gets style k.

    ``masks`` (N, K, H, W) are soft weights summing to 1 per pixel; ``styles``
    hold (K, C). Content statistics of each region are taken over that region, unless
    ``content_stats`` (N, K, C) are given.
    """
    c = masked_stats(content, masks, eps) if content_stats is None else content_stats  # N K C
    scale = styles.std[None] / c.std  # N K C
    shift = styles.mean[None] - c.mean * scale
    weights = masks.float()
    out = torch.empty_like(content)
    for g in channel_groups(content):
        part = torch.einsum("nkhw,nkc->nchw", weights, scale[..., g]) * content[:, g].float()
        out[:, g] = (part + torch.einsum("nkhw,nkc->nchw", weights, shift[..., g])).to(content.dtype)
    return out


# ---- colour -------------------------------------------------------------

_YCBCR = torch.tensor(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)


def rgb_to_ycbcr(img: Tensor) -> Tensor:
    """RGB (…, 3, H, W) in [0, 1] -> YCbCr with Cb, Cr centred on 0 (JPEG/BT.601)."""
    return torch.einsum("ij,...jhw->...ihw", _YCBCR.to(img), img)


def ycbcr_to_rgb(img: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_ycbcr`."""
    return torch.einsum("ij,...jhw->...ihw", torch.linalg.inv(_YCBCR.double()).to(img), img)


def luminance(img: Tensor) -> Tensor:
    """The Y channel of ``img`` repeated as a 3-channel grey image."""
    y = rgb_to_ycbcr(img)[..., :1, :, :]
    return y.expand(*y.shape[:-3], 3, *y.shape[-2:])


def with_chroma_of(lum_img: Tensor, chroma_src: Tensor) -> Tensor:
    """Combine the luminance of ``lum_img`` with the Cb, Cr of ``chroma_src``."""
    y = rgb_to_ycbcr(lum_img)[..., :1, :, :]
    cbcr = rgb_to_ycbcr(chroma_src)[..., 1:, :, :]
    return ycbcr_to_rgb(torch.cat([y, cbcr], dim=-3))


def _sym_sqrt(cov: Tensor, inverse: bool = False) -> Tensor:
    vals, vecs = torch.linalg.eigh(cov)
    vals = vals.clamp_min(1e-8).sqrt()
    if inverse:
        vals = 1.0 / vals
    return vecs @ torch.diag(vals) @ vecs.T


def coral(source: Tensor, target: Tensor, eps: float = EPS) -> Tensor:
    """Match the colour mean and covariance of ``source`` (3, H, W) to ``target`` (3, H', W').

    x -> C_t^(1/2) C_s^(-1/2) (x - mu_s) + mu_t, computed in float64.
    """
    s = source.double().flatten(1)
    t = target.double().flatten(1)
    mu_s, mu_t = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
    eye = torch.eye(3, dtype=torch.float64, device=s.device)
    cov_s = torch.cov(s, correction=0) + eps * eye
    cov_t = torch.cov(t, correction=0) + eps * eye
    m = _sym_sqrt(cov_t) @ _sym_sqrt(cov_s, inverse=True)
    out = m @ (s - mu_s) + mu_t
    return out.reshape(source.shape).to(source.dtype)
