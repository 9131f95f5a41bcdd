"""What a training run (adain.train.loop) and its export (adain.train.export) share: the models and the held-out
pairs. Both import them from here, so the dependency runs one way: adain.train.cli -> export (for
``adain train export``), never back.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError
from ..images import resize_shorter
from ..net import FEATURE_LAYERS, SKIP_LAYERS, Decoder, Encoder, Layer, SkipJoin, channels_of, parse_skip_strength
from ..options import MAX_GRAIN, MAX_STROKES, check_amount
from .data import Pairs, UnreadableImage, fixed_pairs, read_rgb

HELD_OUT_SEED = 0  # crop positions of the held-out pairs (the same in every run and in model cards)
SKIP_PHOTOS = 48  # training photos whose mean activations set the skips' scales
SKIP_OFFSET = 0.01  # scale = 1 / (mean activation + this): rarely active channels are not blown up without bound


@dataclass
class Models:
    """The frozen encoder and the decoder being trained."""

    encoder: Encoder
    decoder: Decoder


def init_models(seed: int, model: str | None, encoder: Path | None, arch: str | None,
                layer: Layer = "relu4_1", skips: Sequence[str] = (), skip_strength: float | Sequence[float] = 1.0,
                extra_convs: int = 0) -> tuple[Models, dict]:
    """The encoder (a bundle's or a file) and a fresh decoder for ``layer`` (and ``skips``, fed at
    ``skip_strength`` in style steps, and ``extra_convs``) whose initial weights depend only on ``seed``.

    Seeds the global torch RNG. Returns the encoder description stored in checkpoints and model cards.
    """
    from ..bundles.cache import resolve_encoder

    torch.manual_seed(seed)
    enc, info = resolve_encoder(model=model, encoder=encoder, arch=arch)
    return Models(enc.at(layer), Decoder(enc.arch, layer, skips, skip_strength, extra_convs=extra_convs)), info


@torch.no_grad()
def calibrate_skips(models: Models, photos: Sequence[Path], size: int) -> None:
    """Set each skip's scale to 1 / (its channels' mean activation over the first :data:`SKIP_PHOTOS` readable
    ``photos`` at a shorter side of ``size``, + :data:`SKIP_OFFSET`): the encoder's channels differ by orders of
    magnitude, and without this the decoder's training diverges (docs/training.md)."""
    joins = [m for m in models.decoder.layers if isinstance(m, SkipJoin)]
    if not joins:
        return
    sums = {name: torch.zeros(channels_of(name)) for name in models.decoder.skips}  # shallowest first
    used = 0
    for path in photos:
        if used == SKIP_PHOTOS:
            break
        try:
            img = read_rgb(path).float().div(255)
        except UnreadableImage:
            continue
        feats = models.encoder.levels(resize_shorter(img, size)[None].to(next(models.encoder.parameters())),
                                      list(sums))
        for name, f in zip(sums, feats, strict=True):
            sums[name] += f.float().mean((0, 2, 3)).cpu()
        used += 1
    if not used:
        raise ValueError("no readable photo to calibrate the skips with")
    for join in joins:
        join.scale.copy_(1.0 / (sums[join.layer] / used + SKIP_OFFSET))


def _layer_list(text: str, allowed: Sequence[str], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what} {unknown[0]!r}; expected {', '.join(allowed)}")
    return sorted(set(names), key=FEATURE_LAYERS.index)


def skips_arg(text: str) -> list[str]:
    """An argparse type: comma-separated skip layers (empty for none)."""
    return _layer_list(text, SKIP_LAYERS, "skip layer")


def layers_arg(text: str) -> list[str]:
    """An argparse type: comma-separated encoder layers (relu1_1 ... relu4_1), at least one."""
    names = _layer_list(text, FEATURE_LAYERS, "layer")
    if not names:
        raise argparse.ArgumentTypeError("name at least one layer")
    return names


def strength_arg(text: str) -> float | list[float]:
    """An argparse type: a skip strength, a number in (0, 1], or one per skip, comma-separated."""
    try:
        value = parse_skip_strength(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a skip strength is a number in (0, 1], or one per skip, comma-separated; "
                                         f"got {text!r}") from None
    return list(value) if isinstance(value, tuple) else value  # a list, as the run's arguments are stored


def amount_arg(name: str, top: float) -> Callable[[str], float]:
    """An argparse type: a noise amount ``name``, a number in [0, ``top``]."""
    def parse(text: str) -> float:
        try:
            return check_amount(name, float(text), top)
        except (ValueError, InputError):
            raise argparse.ArgumentTypeError(f"{name} is a number from 0 to {top:g}; got {text!r}") from None
    return parse


grain_arg = amount_arg("grain", MAX_GRAIN)
strokes_arg = amount_arg("strokes", MAX_STROKES)


def held_out_pairs(data: dict, resize: int, crop: int, n: int) -> Pairs:
    """The fixed validation pairs of a run: its first held-out files, crops seeded by :data:`HELD_OUT_SEED`."""
    return fixed_pairs([Path(p) for p in data["content"]["held_out"]], [Path(p) for p in data["style"]["held_out"]],
                       n, resize, crop, HELD_OUT_SEED)
