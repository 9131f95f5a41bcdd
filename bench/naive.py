"""The baseline: style transfer the way the reference PyTorch port's test script does it.

fp32, batch 1, NCHW, torch.no_grad, unbiased variance, and every style image
re-encoded on every call (no cache). Written here only to be measured against.
"""

from __future__ import annotations

import torch
from torch import Tensor

from adain.net import Decoder, Encoder


def _mean_std(feat: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    n, c = feat.shape[:2]
    var = feat.view(n, c, -1).var(dim=2) + eps
    return feat.view(n, c, -1).mean(dim=2).view(n, c, 1, 1), var.sqrt().view(n, c, 1, 1)


def naive_stylize(encoder: Encoder, decoder: Decoder, content: Tensor, styles: list[Tensor],
                  weights: list[float], alpha: float = 1.0) -> Tensor:
    """One content (1, 3, H, W), styles each (1, 3, h, w): blend of AdaIN targets, decoded. A decoder with skips
    gets the same blend at each of its inputs, the skips times its ``skip_gains(alpha)``."""
    with torch.no_grad():
        targets = []
        content_feats = encoder.levels(content, decoder.inputs)
        style_feats = [encoder.levels(style, decoder.inputs) for style in styles]
        for i, c in enumerate(content_feats):
            c_mean, c_std = _mean_std(c)
            normalized = (c - c_mean) / c_std
            t = torch.zeros_like(c)
            for w, feats in zip(weights, style_feats, strict=True):
                s_mean, s_std = _mean_std(feats[i])
                t = t + w * (normalized * s_std + s_mean)
            t = alpha * t + (1 - alpha) * c
            targets.append(t if i == len(content_feats) - 1 else t * decoder.skip_gains(alpha)[i])
        return decoder(targets)[..., : content.shape[-2], : content.shape[-1]].clamp(0, 1)
