"""The training losses of the paper (Sec. 6.2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from .ops import channel_stats


def content_loss(out_feat: Tensor, target: Tensor) -> Tensor:
    """MSE between relu4_1 of the output and the AdaIN target t."""
    return F.mse_loss(out_feat.float(), target.float())


def style_losses(out_feats: Sequence[Tensor], style_feats: Sequence[Tensor]) -> list[Tensor]:
    """Per layer: MSE of channel means + MSE of channel stds."""
    losses = []
    for o, s in zip(out_feats, style_feats, strict=True):
        so, ss = channel_stats(o), channel_stats(s)
        losses.append(F.mse_loss(so.mean, ss.mean) + F.mse_loss(so.std, ss.std))
    return losses
