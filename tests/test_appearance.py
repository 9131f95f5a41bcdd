"""The encoder-free colour and texture measures (adain.train.appearance, adain.train.quality) against known answers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from adain.images import prepare, read_image
from adain.train.appearance import patch_distance, rgb_to_lab, sliced_wasserstein, texture_energies
from adain.train.losses import colour_loss, patch_loss, texture_loss
from adain.train.quality import color_transfer, colour_ratio, texture_ratio


@pytest.fixture(scope="module")
def photo(content_paths: list[Path]) -> torch.Tensor:
    return prepare(read_image(content_paths[1]), 128, True)


@pytest.fixture(scope="module")
def painting(style_paths: list[Path]) -> torch.Tensor:
    return prepare(read_image(style_paths[0]), 128, True)


def _pixel(r: float, g: float, b: float) -> torch.Tensor:
    return torch.tensor([r, g, b]).view(3, 1, 1)


@pytest.mark.parametrize(("rgb", "lab"), [
    ((1.0, 1.0, 1.0), (100.0, 0.0, 0.0)),  # D65 white
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    ((1.0, 0.0, 0.0), (53.24, 80.09, 67.20)),  # sRGB primaries, published CIELAB values
    ((0.0, 1.0, 0.0), (87.73, -86.18, 83.18)),
    ((0.0, 0.0, 1.0), (32.30, 79.19, -107.86)),
    ((0.5, 0.5, 0.5), (53.39, 0.0, 0.0)),
])
def test_lab_of_known_colours(rgb: tuple, lab: tuple) -> None:
    got = rgb_to_lab(_pixel(*rgb)).flatten().tolist()
    assert got == pytest.approx(lab, abs=0.05)


def test_sliced_wasserstein_of_a_shift_is_the_projected_shift() -> None:
    g = torch.Generator().manual_seed(0)
    points = torch.randn(1, 500, 3, generator=g)
    shift = torch.tensor([3.0, -1.0, 2.0])
    directions = torch.eye(3)
    got = sliced_wasserstein(points + shift, points, directions)
    assert float(got[0]) == pytest.approx(shift.abs().mean().item(), rel=1e-5)
    shuffled = points[:, torch.randperm(500, generator=g)]
    assert float(sliced_wasserstein(points, shuffled, directions)[0]) == pytest.approx(0.0, abs=1e-6)


def test_colour_ratio_is_one_for_the_photo_and_near_zero_for_the_painting(photo, painting) -> None:
    assert colour_ratio(photo, photo, painting) == pytest.approx(1.0)
    assert colour_ratio(photo, painting, painting) < 0.1  # only pixel-sampling noise
    assert 0.05 < colour_ratio(photo, color_transfer(photo, painting), painting) < 0.9


def test_texture_energies_see_orientation_and_scale() -> None:
    x = torch.arange(64, dtype=torch.float64)
    stripes = torch.sin(2 * math.pi * x / 4).view(1, 1, 1, 64).expand(1, 1, 64, 64)  # vertical stripes, period 4
    e = texture_energies(stripes.contiguous()).view(4, 4)  # sigma x orientation
    assert e[0, 0] > e[0, 2] + 10  # d/dx responds, d/dy does not
    assert e[0, 1] == pytest.approx(e[0, 3].item(), abs=1e-6)  # 45 and 135 degrees alike
    assert e[0, 0] > e[3, 0] + 5  # a fine pattern all but vanishes at sigma 8


def test_texture_ratio_is_one_for_the_photo_and_zero_for_the_painting(photo, painting) -> None:
    assert texture_ratio(photo, photo, painting) == pytest.approx(1.0)
    assert texture_ratio(photo, painting, painting) == pytest.approx(0.0, abs=1e-9)
    blurred = torch.nn.functional.avg_pool2d(photo[None], 5, 1, 2, count_include_pad=False)[0]
    assert texture_ratio(photo, blurred, photo) > 0.1  # blur changes the texture statistics


def test_losses_fall_when_the_output_moves_towards_the_painting(photo, painting) -> None:
    torch.manual_seed(0)
    c, s = photo[None], painting[None]
    mid = 0.5 * c + 0.5 * s
    for loss in (colour_loss, texture_loss, patch_loss):
        assert float(loss(s, s)) < float(loss(mid, s)) < float(loss(c, s))
    out = c.clone().requires_grad_(True)
    (colour_loss(out, s) + texture_loss(out, s) + patch_loss(out, s)).backward()
    assert out.grad is not None and torch.isfinite(out.grad).all() and out.grad.abs().sum() > 0


def test_a_flat_painting_crop_keeps_the_texture_loss_within_bounds(photo) -> None:
    """A flat style crop (energies near 0) costs a bounded loss, not the square of the log of almost nothing."""
    from adain import ops
    from adain.train.appearance import texture_energies

    flat = torch.full_like(photo[None], 0.5)
    luma = ops.rgb_to_ycbcr(photo[None])[:, :1]
    unfloored = float(torch.nn.functional.mse_loss(texture_energies(luma), texture_energies(flat[:, :1])))
    assert unfloored > 300
    assert 10 < float(texture_loss(photo[None], flat)) < 50


def test_the_patch_distance_sees_strokes_that_a_gain_per_scale_cannot_give(photo) -> None:
    """Oblique stripes against the same stripes turned upright (the same period and contrast, other patches): far.
    The stripes moved by whole periods (the same patches in other places): near 0."""
    torch.manual_seed(0)
    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    upright = (0.5 + 0.4 * torch.sin(x * 2 * math.pi / 8)).expand(1, 3, 64, 64)
    oblique = (0.5 + 0.4 * torch.sin((x + y) * 2 * math.pi / (8 * math.sqrt(2)))).expand(1, 3, 64, 64)
    assert float(patch_distance(oblique, upright, 64)[0]) > 0.1
    shifted = torch.roll(upright, shifts=(8, 16), dims=(2, 3))  # whole periods: the same patches elsewhere
    assert float(patch_distance(shifted, upright, 64)[0]) < 0.01
    assert float(patch_distance(photo[None], photo[None], 64)[0]) == 0.0
    two = patch_distance(torch.cat([upright, oblique]), upright[:, :, :48], 64)  # sizes may differ
    assert two.shape == (2,) and float(two[0]) < 0.05 < float(two[1])
