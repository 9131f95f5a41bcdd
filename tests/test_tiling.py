"""Tiled encoder/decoder passes match the untiled ones."""

import pytest
import torch

from adain import ops, tiling
from adain.images import read_image, resize_shorter
from tests.conftest import random_networks


@pytest.fixture(scope="module")
def networks():
    return random_networks("vgg19", seed=3)


@pytest.fixture(scope="module")
def image(content_paths):
    # 301 x 451: not a multiple of 8 or of the tile size
    return resize_shorter(read_image(content_paths[2]), 301)[None]


@torch.inference_mode()
def test_tiled_pipeline_matches_untiled(networks, image):
    enc, dec = networks
    feats = enc(image)
    tiled_feats = tiling.encode_tiled(enc, image, tile=128)
    assert tiled_feats.shape == feats.shape
    torch.testing.assert_close(tiled_feats, feats, atol=1e-4, rtol=1e-4)

    style = ops.channel_stats(enc(torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))))
    target = ops.adain(feats, style)  # statistics over the whole image, not per tile
    full = dec(target, tuple(image.shape[-2:])).clamp(0, 1)
    tiled = tiling.decode_tiled(dec, target, tuple(image.shape[-2:]), tile=128).clamp(0, 1)
    assert tiled.shape == full.shape == image.shape
    diff = ((tiled - full).abs() * 255).flatten()
    assert (diff <= 2).float().mean() >= 0.99
    assert diff.max() < 1.0  # with wide enough halos the tiles agree to rounding


@torch.inference_mode()
def test_halo_is_what_makes_tiles_agree(networks, image, monkeypatch):
    """With the halo cut to 8 pixels, seams appear: the comparison above can fail."""
    enc, _ = networks
    monkeypatch.setattr(tiling, "ENCODER_HALO", 8)
    diff = (tiling.encode_tiled(enc, image, tile=128) - enc(image)).abs().max()
    assert diff > 1e-2


def test_tile_must_be_multiple_of_8(networks, image):
    with pytest.raises(ValueError, match="multiple of 8"):
        tiling.encode_tiled(networks[0], image, tile=100)
