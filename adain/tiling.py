"""Encoder and decoder passes over overlapping tiles, for images too large to run whole.

Tiles start on multiples of 8 pixels (a multiple of every network's scale, 8 at
relu4_1 and 4 at relu3_1) so that the max-pool and upsampling grids line up with
the untiled pass; each tile carries a halo wider than the half
receptive field of the network, and only its core is kept. AdaIN statistics
are taken by the caller over the whole feature map, never per tile.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from .net import Decoder, Encoder, channels_of
from .options import SCALE

ENCODER_HALO = 96  # pixels; > half the receptive field of relu4_1 in VGG19 (~76 px)
DECODER_HALO = 6  # feature pixels; > the decoder's reach (~2.3 feature pixels)


def _spans(length: int, core: int, halo: int) -> Iterator[tuple[int, int, int, int]]:
    """(read_start, read_end, keep_start, keep_end) windows covering [0, length)."""
    for start in range(0, length, core):
        end = min(start + core, length)
        yield max(0, start - halo), min(length, end + halo), start, end


def _nothing() -> None:
    pass


def _tiled(fn: Callable[[Tensor], Tensor], x: Tensor, core: int, halo: int, to_out: Callable[[int], int],
           out_channels: int, out_hw: tuple[int, int], between: Callable[[], None]) -> Tensor:
    """Apply ``fn`` tile by tile over the last two dims of ``x`` and assemble the tile cores.

    ``to_out`` maps an input coordinate to the output coordinate (x/scale rounded up, or scale x). The result
    has the dtype and memory format of the tiles ``fn`` returns. ``between`` is called before each tile
    after the first (an exception from it abandons the pass).
    """
    out: Tensor | None = None
    for r0, r1, k0, k1 in _spans(x.shape[-2], core, halo):
        for c0, c1, j0, j1 in _spans(x.shape[-1], core, halo):
            if out is not None:
                between()
            y = fn(x[..., r0:r1, c0:c1])
            if out is None:  # the tiles' dtype (bf16 under autocast) and memory format
                last = y.is_contiguous(memory_format=torch.channels_last)
                out = torch.empty(x.shape[0], out_channels, *out_hw, dtype=y.dtype, device=y.device,
                                  memory_format=torch.channels_last if last else torch.contiguous_format)
            top, left = to_out(k0 - r0), to_out(j0 - c0)
            h, w = to_out(k1) - to_out(k0), to_out(j1) - to_out(j0)
            out[..., to_out(k0): to_out(k0) + h, to_out(j0): to_out(j0) + w] = y[..., top: top + h, left: left + w]
    return out


def _check_tile(tile: int) -> None:
    if tile % SCALE:
        raise ValueError(f"tile size must be a multiple of {SCALE}, got {tile}")


def encode_tiled(encoder: Encoder, images: Tensor, tile: int, between: Callable[[], None] = _nothing) -> Tensor:
    """The encoder's features (its AdaIN layer) of (N, 3, H, W), computed in tiles of ``tile`` pixels (a
    multiple of 8); ``between`` runs between tiles."""
    _check_tile(tile)
    h, w = images.shape[-2:]
    scale = encoder.scale
    out_hw = (math.ceil(h / scale), math.ceil(w / scale))
    return _tiled(encoder, images, tile, ENCODER_HALO, lambda v: -(-v // scale),
                  channels_of(encoder.layer), out_hw, between)


def decode_tiled(decoder: Decoder, feats: Tensor, size: tuple[int, int], tile: int,
                 between: Callable[[], None] = _nothing) -> Tensor:
    """Decode (N, C, h, w) features in tiles of ``tile`` output pixels; crop to ``size``; ``between`` runs
    between tiles."""
    _check_tile(tile)
    scale = decoder.scale
    full = (feats.shape[-2] * scale, feats.shape[-1] * scale)
    out = _tiled(decoder, feats, tile // scale, DECODER_HALO, lambda v: v * scale, 3, full, between)
    return out[..., : size[0], : size[1]]
