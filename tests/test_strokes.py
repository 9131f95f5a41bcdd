"""Stroke noise (adain.strokes): drawn out along the flow of the features, only where they are flat, the same for a
seed, scaled by each image's amount; and a decoder trained with it stylizes with it, times alpha."""

from __future__ import annotations

import math

import pytest
import torch

from adain.images import read_image, resize_shorter
from adain.net import Decoder
from adain.strokes import flatness, flow_angle, stroke_noise
from adain.stylizer import Stylizer

from .conftest import random_networks


def ramp(along: str, size: tuple[int, int] = (48, 64), channels: int = 8) -> torch.Tensor:
    """Features (1, C, H, W) rising gently along x or y, each channel at its own slope: flat, with a direction."""
    h, w = size
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    base = xx if along == "x" else yy
    slopes = torch.linspace(0.5, 1.5, channels).view(channels, 1, 1)
    return (1.0 + 0.01 * slopes * base)[None]


def neighbour_correlation(noise: torch.Tensor, dim: int) -> float:
    """Mean correlation of the noise with itself one cell further along ``dim`` (2: y, 3: x)."""
    a, b = noise.narrow(dim, 0, noise.shape[dim] - 1), noise.narrow(dim, 1, noise.shape[dim] - 1)
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).mean() / (a.std() * b.std()))


@pytest.mark.parametrize(("along", "flow"), [("x", math.pi / 2), ("y", 0.0)])
def test_the_flow_runs_across_the_change(along, flow):
    angle = flow_angle(ramp(along))
    distance = torch.remainder(angle - flow + math.pi / 2, math.pi) - math.pi / 2  # directions are modulo pi
    assert distance.abs().max() < 1e-3


@pytest.mark.parametrize(("along", "long_dim", "short_dim"), [("x", 2, 3), ("y", 3, 2)])
def test_strokes_are_drawn_out_along_the_flow(along, long_dim, short_dim):
    noise = stroke_noise(ramp(along), [1.0])
    # a Gaussian of sigma 3 cells along the flow and 0.6 across: neighbours along it nearly equal, across far less
    assert neighbour_correlation(noise, long_dim) > 0.9
    assert neighbour_correlation(noise, short_dim) < 0.5


def test_strokes_fill_flat_regions_and_leave_outlines_alone():
    feat = ramp("x")
    busy = torch.rand((1, 8, 48, 32), generator=torch.Generator().manual_seed(0))  # the right half changes a lot
    feat[..., 32:] = 1.0 + busy
    flat = flatness(feat)
    assert flat[..., :, :16].min() > 0.8 and flat[..., :, 40:].max() < 0.05
    noise = stroke_noise(feat, [1.0])
    assert noise[..., 40:].std() < 0.05 * noise[..., :16].std()
    # in units of each channel's std over the whole map, as much noise as the amount where it is flat
    ratio = noise[..., :16].std(dim=(2, 3)) / feat.std(dim=(2, 3))
    assert ((ratio > 0.5) & (ratio < 1.5)).all()


def test_the_same_seed_gives_the_same_strokes_to_every_image_times_its_amount():
    feat = ramp("y").expand(3, -1, -1, -1).contiguous()
    noise = stroke_noise(feat, [1.0, 0.5, 0.0])
    torch.testing.assert_close(noise[1], 0.5 * noise[0])
    assert noise[2].abs().max() == 0.0
    assert torch.equal(stroke_noise(feat[:1], [1.0]), noise[:1])  # as when it comes alone
    assert not torch.equal(stroke_noise(feat[:1], [1.0], seed=1), noise[:1])
    torch.manual_seed(0)
    fresh = stroke_noise(feat[:2], [1.0, 1.0], seed=None)  # training: a new draw for each image
    assert not torch.allclose(fresh[0], fresh[1])


@pytest.fixture(scope="module")
def pair(content_paths, style_paths) -> tuple[torch.Tensor, torch.Tensor]:
    return resize_shorter(read_image(content_paths[0]), 64), resize_shorter(read_image(style_paths[0]), 64)


def test_a_decoder_trained_with_strokes_stylizes_with_them_times_alpha(pair):
    enc, dec = random_networks("vgg16", seed=2, layer="relu3_1", skips=("relu1_1", "relu2_1"))
    stroked = Decoder(dec.arch, dec.layer, dec.skips, strokes=1.0)
    stroked.load_state_dict(dec.state_dict())
    plain, with_strokes = Stylizer(enc, dec, device="cpu"), Stylizer(enc, stroked, device="cpu")
    content, style = pair
    once = with_strokes.stylize(content, [style])
    assert torch.equal(once, with_strokes.stylize(content, [style]))  # the same strokes every time
    assert (once - plain.stylize(content, [style])).abs().mean() > 0.002
    # alpha 0 gives the photo's own decoding back
    assert torch.equal(with_strokes.stylize(content, [style], alpha=0.0), plain.stylize(content, [style], alpha=0.0))
    # at alpha 0.5 half the noise (and half the style): a smaller change than at alpha 1 (tests/oracle.py checks
    # the whole rule)
    change = (with_strokes.stylize(content, [style], alpha=0.5) - plain.stylize(content, [style], alpha=0.5)).abs()
    assert 0.0005 < change.mean() < (once - plain.stylize(content, [style])).abs().mean()
