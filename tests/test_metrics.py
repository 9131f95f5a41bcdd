"""The evaluation measures against cases whose answer is known."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adain.images import prepare, read_image
from adain.train.quality import color_transfer, grid_ratio, shape_score, style_distance
from tests.conftest import random_networks


@pytest.fixture(scope="module")
def photo(content_paths: list[Path]) -> torch.Tensor:
    return prepare(read_image(content_paths[1]), 96, True)


def test_a_photo_keeps_its_shapes_and_noise_or_a_flat_image_does_not(photo: torch.Tensor) -> None:
    assert shape_score(photo, photo) == pytest.approx(1.0, abs=5e-3)  # 1e-6 in rho's denominator
    assert shape_score(photo, 0.2 + 0.5 * photo) == pytest.approx(1.0, abs=5e-3)  # affine changes keep shapes
    noise = torch.rand(photo.shape, generator=torch.Generator().manual_seed(0))
    assert abs(shape_score(photo, noise)) < 0.1
    assert shape_score(photo, torch.full_like(photo, 0.5)) == pytest.approx(0.0, abs=1e-6)
    assert shape_score(photo, 1 - photo) == pytest.approx(-1.0, abs=5e-3)


def test_the_output_is_resized_to_the_content(photo: torch.Tensor) -> None:
    bigger = torch.nn.functional.interpolate(photo[None], scale_factor=2, mode="bilinear")[0]
    assert shape_score(photo, bigger) > 0.95


def test_a_grid_of_period_four_is_found(photo: torch.Tensor) -> None:
    assert grid_ratio(photo, 4) < 1.1
    gridded = photo.clone()
    gridded[:, :, ::4] *= 0.6
    gridded[:, ::4, :] *= 0.6
    assert grid_ratio(gridded, 4) > 1.5
    assert grid_ratio(gridded, 8) > 1.5  # a period-4 grid is also periodic with period 8
    assert grid_ratio(photo[:, :3, :3], 4) == 1.0  # too small to tell


def test_color_transfer_matches_channel_means_and_stds(photo: torch.Tensor, style_paths: list[Path]) -> None:
    style = prepare(read_image(style_paths[0]), 96, True)
    out = color_transfer(photo, style)
    assert out.shape == photo.shape
    torch.testing.assert_close(out.mean((1, 2)), style.mean((1, 2)), atol=0.03, rtol=0)


def test_style_distance_is_zero_for_the_style_itself(photo: torch.Tensor) -> None:
    enc, _ = random_networks("vgg16", seed=2)
    assert style_distance(enc, photo, photo) == pytest.approx(0.0, abs=1e-8)
    assert style_distance(enc, photo, torch.flip(photo, (0,))) > 0
