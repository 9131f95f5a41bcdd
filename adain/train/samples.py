"""Sample grids of a training run: content | style | output on fixed held-out pairs."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torchvision.utils import make_grid, save_image

from .losses import decoder_targets
from .setup import Models

SAMPLE_PAIRS = 4  # rows of the sample grids


@torch.no_grad()
def write_samples(models: Models, content: Tensor, style: Tensor, path: Path) -> None:
    """A grid with one row per pair: content | style | output."""
    device = next(models.encoder.parameters()).device
    was_training = models.decoder.training
    models.decoder.eval()
    c, s = content.to(device), style.to(device)
    targets = decoder_targets(models.decoder, models.encoder.features(c), models.encoder.features(s))
    out = models.decoder(targets, tuple(c.shape[-2:])).float().clamp(0, 1)
    models.decoder.train(was_training)
    rows = torch.stack([c, s, out], 1).flatten(0, 1).cpu()
    save_image(make_grid(rows, nrow=3, padding=2), path)
