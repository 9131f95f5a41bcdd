"""Encoder and decoder passes over overlapping tiles, for images too large to run whole.

Tiles start on multiples of 8 pixels (a multiple of every network's scale, 8 at
relu4_1 and 4 at relu3_1) so that the max-pool and upsampling grids line up with
the untiled pass; each tile carries a halo wider than the half
receptive field of the network, and only its core is kept. AdaIN statistics
are taken by the caller over the whole feature map, never per tile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from .net import Decoder, Encoder, channels_of, scale_of
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


def _lo(v: int, scale: int) -> int:
    return v // scale


def _hi(v: int, scale: int) -> int:
    return -(-v // scale)


def _tiled(fn: Callable[[list[Tensor]], list[Tensor]], inputs: Sequence[Tensor], in_scales: Sequence[int],
           outputs: Sequence[tuple[int, int]], grid_hw: tuple[int, int], core: int, halo: int,
           between: Callable[[], None]) -> list[Tensor]:
    """Apply ``fn`` tile by tile and assemble the tile cores.

    Tiles are laid on a grid of ``grid_hw`` image pixels (cores of ``core``, read with ``halo`` around them,
    both multiples of every scale). Each input, and each output ``(channels, scale)``, is 1/scale of the grid
    (rounded up); ``fn`` takes the inputs' windows and returns the outputs' windows. The results have the dtype
    and memory format of what ``fn`` returns. ``between`` is called before each tile after the first (an
    exception from it abandons the pass).
    """
    outs: list[Tensor] | None = None
    n = inputs[0].shape[0]
    for r0, r1, k0, k1 in _spans(grid_hw[0], core, halo):
        for c0, c1, j0, j1 in _spans(grid_hw[1], core, halo):
            if outs is not None:
                between()
            ys = fn([x[..., _lo(r0, s): _hi(r1, s), _lo(c0, s): _hi(c1, s)] for x, s in zip(inputs, in_scales,
                                                                                            strict=True)])
            if outs is None:  # the tiles' dtype (bf16 under autocast) and memory format
                outs = [torch.empty(n, ch, _hi(grid_hw[0], s), _hi(grid_hw[1], s), dtype=y.dtype, device=y.device,
                                    memory_format=torch.channels_last
                                    if y.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format)
                        for y, (ch, s) in zip(ys, outputs, strict=True)]
            for y, out, (_, s) in zip(ys, outs, outputs, strict=True):
                top, left = _lo(k0, s) - _lo(r0, s), _lo(j0, s) - _lo(c0, s)
                h, w = _hi(k1, s) - _lo(k0, s), _hi(j1, s) - _lo(j0, s)
                out[..., _lo(k0, s): _lo(k0, s) + h, _lo(j0, s): _lo(j0, s) + w] = y[..., top: top + h,
                                                                                      left: left + w]
    return outs


def _check_tile(tile: int) -> None:
    if tile % SCALE:
        raise ValueError(f"tile size must be a multiple of {SCALE}, got {tile}")


def encode_tiled(encoder: Encoder, images: Tensor, tile: int, between: Callable[[], None] = _nothing,
                 inputs: Sequence[str] | None = None) -> list[Tensor]:
    """The encoder's feature maps of ``inputs`` (layer names; default its AdaIN layer alone) of (N, 3, H, W),
    computed in tiles of ``tile`` pixels (a multiple of 8); ``between`` runs between tiles."""
    _check_tile(tile)
    inputs = tuple(inputs or (encoder.layer,))
    outputs = [(channels_of(name), scale_of(name)) for name in inputs]
    return _tiled(lambda xs: encoder.levels(xs[0], inputs), [images], [1], outputs, tuple(images.shape[-2:]),
                  tile, ENCODER_HALO, between)


def decode_tiled(decoder: Decoder, feats: Tensor | Sequence[Tensor], size: tuple[int, int], tile: int,
                 between: Callable[[], None] = _nothing) -> Tensor:
    """Decode the feature maps of ``decoder.inputs`` (one map, or one per input) in tiles of ``tile`` output
    pixels; crop to ``size``; ``between`` runs between tiles."""
    _check_tile(tile)
    feats = [feats] if isinstance(feats, Tensor) else list(feats)
    scales = [scale_of(name) for name in decoder.inputs]
    grid = (feats[0].shape[-2] * scales[0], feats[0].shape[-1] * scales[0])
    (out,) = _tiled(lambda xs: [decoder(xs)], feats, scales, [(3, 1)], grid, tile,
                    DECODER_HALO * decoder.scale, between)
    return out[..., : size[0], : size[1]]
