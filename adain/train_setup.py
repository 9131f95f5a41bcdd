"""What a training run (adain.train) and its export (adain.export) share: the models, the held-out pairs and
the argument type of counts. Both import them from here, so the dependency runs one way: train -> export (for
``adain train export``), never back.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import Pairs, fixed_pairs
from .net import Decoder, Encoder, Layer

HELD_OUT_SEED = 0  # crop positions of the held-out pairs (the same in every run and in model cards)


@dataclass
class Models:
    """The frozen encoder and the decoder being trained."""

    encoder: Encoder
    decoder: Decoder


def init_models(seed: int, model: str | None, encoder: Path | None, arch: str | None,
                layer: Layer = "relu4_1") -> tuple[Models, dict]:
    """The encoder (a bundle's or a file) and a fresh decoder for ``layer`` whose initial weights depend only
    on ``seed``.

    Seeds the global torch RNG. Returns the encoder description stored in checkpoints and model cards.
    """
    from .bundles import resolve_encoder

    torch.manual_seed(seed)
    enc, info = resolve_encoder(model=model, encoder=encoder, arch=arch)
    return Models(enc.at(layer), Decoder(enc.arch, layer)), info


def held_out_pairs(data: dict, resize: int, crop: int, n: int) -> Pairs:
    """The fixed validation pairs of a run: its first held-out files, crops seeded by :data:`HELD_OUT_SEED`."""
    return fixed_pairs([Path(p) for p in data["content"]["held_out"]], [Path(p) for p in data["style"]["held_out"]],
                       n, resize, crop, HELD_OUT_SEED)


def count_arg(minimum: int):
    """An argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse
