"""adain.upconv: the fused "upsample 2x, reflection pad, 3x3 conv" gives what the layers as written give."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from torch import nn

from adain.bundles.layouts import build_decoder
from adain.upconv import FusedDecoder, UpConv2x, fuse_upsampling

from . import oracle
from .conftest import random_networks

pytestmark = pytest.mark.usefixtures("single_thread")


def _reference(conv: nn.Conv2d, relu: bool) -> nn.Sequential:
    layers = [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1), conv]
    return nn.Sequential(*layers, *([nn.ReLU()] if relu else []))


@pytest.mark.parametrize("shape", [(1, 5, 1, 1), (2, 5, 3, 4), (1, 8, 7, 2)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("relu", [False, True])
def test_upconv_equals_upsample_pad_conv(shape, channels_last, relu):
    torch.manual_seed(0)
    conv = nn.Conv2d(shape[1], 6, 3)
    x = torch.randn(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected, got = _reference(conv, relu)(x), UpConv2x(conv, relu)(x)
    assert got.shape == expected.shape == (shape[0], 6, 2 * shape[2], 2 * shape[3])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    if relu:
        assert (got == 0).any() and got.min() >= 0


def test_upconv_refuses_other_convs():
    with pytest.raises(ValueError, match="unpadded 3x3"):
        UpConv2x(nn.Conv2d(4, 4, 3, padding=1), relu=False)


def test_fuse_upsampling_replaces_only_the_runs_and_shares_the_rest():
    _, dec = random_networks("vgg16", layer="relu3_1")
    fused = fuse_upsampling(dec.layers)
    kinds = [type(m).__name__ for m in fused]
    assert kinds.count("UpConv2x") == 2 and "Upsample" not in kinds
    assert kinds.count("ReflectionPad2d") == kinds.count("Conv2d") == 3  # the convs not after an upsampling
    assert {id(m) for m in fused if isinstance(m, nn.Conv2d)} <= {id(m) for m in dec.layers}


@pytest.mark.parametrize(("layer", "extra_convs"), [("relu4_1", 0), ("relu3_1", 0), ("relu3_1", 2)])
def test_fused_decoder_matches_decoder(layer, extra_convs):
    _, dec = random_networks("vgg19", seed=2, layer=layer, extra_convs=extra_convs)
    fused = FusedDecoder(dec)
    assert (fused.arch, fused.layer, fused.scale) == (dec.arch, dec.layer, dec.scale)
    feats = torch.rand(2, dec.layers[1].in_channels, 5, 6).contiguous(memory_format=torch.channels_last)
    size = (5 * dec.scale - 3, 6 * dec.scale - 1)
    with torch.no_grad():
        torch.testing.assert_close(fused(feats, size), dec(feats, size), rtol=0, atol=1e-5)


def test_fused_decoder_matches_oracle(weight_files):
    """The relu3_1 decoder from its file, fused, against the float64 numpy oracle's decoder."""
    path = weight_files["vgg16"]["decoder_relu3_1"]
    fused = FusedDecoder(build_decoder(path, "vgg16"))
    feats = np.random.default_rng(0).random((256, 6, 5)).astype(np.float32)
    size = (23, 19)
    with torch.no_grad():
        got = fused(torch.from_numpy(feats)[None], size)[0].clamp(0, 1).numpy()
    state = {k: v.astype(np.float64) for k, v in load_file(str(path)).items()}
    expected = oracle.decode([feats.astype(np.float64)], state, "vgg16", size)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("hw", [(40, 48), (37, 45)])  # sides that line up at every scale, and odd ones
def test_fused_decoder_with_skips_matches_decoder(hw):
    enc, dec = random_networks("vgg16", seed=4, layer="relu3_1", skips=("relu1_1", "relu2_1"))
    fused = FusedDecoder(dec)
    kinds = [type(m).__name__ for m in fused.layers]
    assert kinds.count("UpSkipConv2x") == 2 and "Upsample" not in kinds and "SkipJoin" not in kinds
    with torch.no_grad():
        feats = enc.levels(torch.rand(2, 3, *hw, generator=torch.Generator().manual_seed(0)), dec.inputs)
        feats = [f.contiguous(memory_format=torch.channels_last) for f in feats]
        torch.testing.assert_close(fused(feats, hw), dec(feats, hw), rtol=0, atol=1e-5)
