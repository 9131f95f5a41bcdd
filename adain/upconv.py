"""The decoder's "nearest 2x upsample, reflection pad 1, 3x3 conv" as one 2x2 conv at the low resolution.

Reflection padding (by 1) of a nearest-2x-upsampled map equals the nearest 2x upsampling of the map padded by
replication, cropped by 1. So each of the four output phases (row parity a, column parity b) of the 3x3 conv
sees only a 2x2 window of the replicate-padded low-resolution input, with the 3x3 kernel's rows (and columns)
folded pairwise: phase 0 takes (k0, k1 + k2), phase 1 takes (k0 + k1, k2). One conv with the four phases as
4x the output channels, on the low-resolution input, then interleaving the phases, gives the same result
(up to float rounding) with 16/36 = 4/9 of the multiply-adds and without the upsampled and padded copies.

Where a skip joins after the upsampling (:class:`~adain.net.SkipJoin`), the conv after it is split by input
channels: the path's part runs as above, the skip's part (its fixed scale folded into the kernel) as a plain
conv at the skip's resolution, and the two are summed before the ReLU (:class:`UpSkipConv2x`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .net import Decoder, SkipJoin

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


class UpSkipConv2x(SkipJoin):
    """``conv(reflection_pad_1(cat(upsample_nearest_2x(x), skip * scale)))`` (then ReLU when ``relu``): the path's
    input channels through an :class:`UpConv2x`, the skip's through a plain conv, summed. Where the upsampled path
    is not exactly the skip's size (odd image sides) it runs the modules it was built from instead."""

    def __init__(self, join: SkipJoin, conv: nn.Conv2d, relu: bool) -> None:
        super().__init__(join.layer)
        self.scale.copy_(join.scale)
        n_path = conv.in_channels - join.scale.numel()
        path_conv = nn.Conv2d(n_path, conv.out_channels, 3).to(conv.weight)
        path_conv.weight.data.copy_(conv.weight.detach()[:, :n_path])
        path_conv.bias.data.copy_(conv.bias.detach())
        self.path = UpConv2x(path_conv, relu=False)
        self.register_buffer("skip_weight", (conv.weight.detach()[:, n_path:] * join.scale.view(1, -1, 1, 1))
                             .contiguous(memory_format=torch.channels_last))
        self.conv, self.relu = conv, relu  # the unfused conv, for sizes that do not line up

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        if (2 * x.shape[-2], 2 * x.shape[-1]) != tuple(skip.shape[-2:]):
            y = self.conv(F.pad(super().forward(F.interpolate(x, scale_factor=2, mode="nearest"), skip),
                                (1, 1, 1, 1), mode="reflect"))
        else:
            y = self.path(x) + F.conv2d(F.pad(skip, (1, 1, 1, 1), mode="reflect"), self.skip_weight.to(skip.dtype))
        return F.relu(y) if self.relu else y


def _is_up2x(m: nn.Module) -> bool:
    return isinstance(m, nn.Upsample) and m.mode == "nearest" and m.scale_factor in (2, 2.0)


def _is_pad_conv(mods: list[nn.Module], i: int) -> bool:
    return (i + 1 < len(mods) and isinstance(mods[i], nn.ReflectionPad2d) and mods[i].padding == (1, 1, 1, 1)
            and isinstance(mods[i + 1], nn.Conv2d))


def fuse_upsampling(layers: nn.Sequential) -> nn.Sequential:
    """``layers`` with every (Upsample 2x nearest, ReflectionPad2d(1), 3x3 Conv2d[, ReLU]) run replaced by an
    :class:`UpConv2x`, and every such run with a :class:`~adain.net.SkipJoin` after the Upsample by an
    :class:`UpSkipConv2x`; the other modules are shared, not copied."""
    mods, out, i = list(layers), [], 0
    while i < len(mods):
        join = i + 1 < len(mods) and isinstance(mods[i + 1], SkipJoin)
        start = i + 2 if join else i + 1
        if _is_up2x(mods[i]) and _is_pad_conv(mods, start):
            conv = mods[start + 1]
            relu = start + 2 < len(mods) and isinstance(mods[start + 2], nn.ReLU)
            out.append(UpSkipConv2x(mods[i + 1], conv, relu) if join else UpConv2x(conv, relu))
            i = start + (3 if relu else 2)
        else:
            out.append(mods[i])
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
