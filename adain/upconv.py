"""The decoder's "nearest 2x upsample, reflection pad 1, 3x3 conv" as one 2x2 conv at the low resolution.

Reflection padding (by 1) of a nearest-2x-upsampled map equals the nearest 2x upsampling of the map padded by
replication, cropped by 1. So each of the four output phases (row parity a, column parity b) of the 3x3 conv
sees only a 2x2 window of the replicate-padded low-resolution input, with the 3x3 kernel's rows (and columns)
folded pairwise: phase 0 takes (k0, k1 + k2), phase 1 takes (k0 + k1, k2). One conv with the four phases as
4x the output channels, on the low-resolution input, then interleaving the phases, gives the same result
(up to float rounding) with 16/36 = 4/9 of the multiply-adds and without the upsampled and padded copies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .net import Decoder

PHASES = ((0, 0), (0, 1), (1, 0), (1, 1))  # (a, b): output row / column parity, in channel-block order


def _fold(w: Tensor, phase: int, dim: int) -> Tensor:
    """The 3 taps of ``w`` along ``dim`` folded into the 2 taps that output phase ``phase`` sees."""
    k0, k1, k2 = w.unbind(dim)
    return torch.stack((k0, k1 + k2) if phase == 0 else (k0 + k1, k2), dim)


def phase_weights(weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """(O, C, 3, 3) and (O,) -> the 2x2 kernels (4O, C, 2, 2) of the four phases in :data:`PHASES` order, and
    their biases (4O,)."""
    kernels = [_fold(_fold(weight, a, 2), b, 3) for a, b in PHASES]
    return torch.cat(kernels), bias.repeat(len(PHASES))


class UpConv2x(nn.Module):
    """``conv(reflection_pad_1(upsample_nearest_2x(x)))`` (then ReLU when ``relu``) computed at the input's
    resolution. Holds its own derived weights: build it from the finished conv."""

    def __init__(self, conv: nn.Conv2d, relu: bool) -> None:
        super().__init__()
        if conv.kernel_size != (3, 3) or conv.padding != (0, 0) or conv.stride != (1, 1) or conv.groups != 1:
            raise ValueError(f"UpConv2x needs an unpadded 3x3 conv, got {conv}")
        weight, bias = phase_weights(conv.weight.detach(), conv.bias.detach())
        self.register_buffer("weight", weight.contiguous(memory_format=torch.channels_last))
        self.register_buffer("bias", bias)
        self.out_channels, self.relu = conv.out_channels, relu

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        phases = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), self.weight, self.bias)  # (n, 4O, h+1, w+1)
        # out[n, o, 2i + a, 2j + b] = phase (a, b) at (i + a, j + b); stored channels-last as (n, h, 2, w, 2, O)
        o = self.out_channels
        out = torch.empty(n, h, 2, w, 2, o, dtype=phases.dtype, device=phases.device)
        for p, (a, b) in enumerate(PHASES):
            src = phases[:, p * o: (p + 1) * o, a: a + h, b: b + w]
            dst = out[:, :, a, :, b, :].permute(0, 3, 1, 2)
            if self.relu:
                torch.clamp_min(src, 0, out=dst)
            else:
                dst.copy_(src)
        return out.view(n, 2 * h, 2 * w, o).permute(0, 3, 1, 2)


def fuse_upsampling(layers: nn.Sequential) -> nn.Sequential:
    """``layers`` with every (Upsample 2x nearest, ReflectionPad2d(1), 3x3 Conv2d[, ReLU]) run replaced by an
    :class:`UpConv2x`; the other modules are shared, not copied."""
    mods, out, i = list(layers), [], 0
    while i < len(mods):
        m = mods[i]
        if (isinstance(m, nn.Upsample) and m.mode == "nearest" and m.scale_factor in (2, 2.0)
                and i + 2 < len(mods) and isinstance(mods[i + 1], nn.ReflectionPad2d)
                and mods[i + 1].padding == (1, 1, 1, 1) and isinstance(mods[i + 2], nn.Conv2d)):
            relu = i + 3 < len(mods) and isinstance(mods[i + 3], nn.ReLU)
            out.append(UpConv2x(mods[i + 2], relu))
            i += 4 if relu else 3
        else:
            out.append(m)
            i += 1
    return nn.Sequential(*out)


class FusedDecoder(nn.Module):
    """A :class:`~adain.net.Decoder` for inference with its upsampling convs fused (:func:`fuse_upsampling`);
    the same ``arch``, ``layer``, ``scale`` and ``forward(t, size)``. Build it once the decoder's weights are
    final and on their device (it derives its own weights from them)."""

    def __init__(self, decoder: Decoder) -> None:
        super().__init__()
        self.arch, self.layer, self.scale = decoder.arch, decoder.layer, decoder.scale
        self.skips, self.inputs = decoder.skips, decoder.inputs
        self.layers = fuse_upsampling(decoder.layers)

    forward = Decoder.forward  # runs self.layers and crops
