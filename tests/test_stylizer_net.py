"""The networks behind the Stylizer: frozen encoder up to relu4_1, mirrored decoder, original key layout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adain.net import Decoder, Encoder

#: Conv indices of the original release (pytorch-AdaIN net.py): vgg_normalised up to conv4_1, and decoder.pth.
ORIGINAL_ENCODER_CONVS = [0, 2, 5, 9, 12, 16, 19, 22, 25, 29]
ORIGINAL_DECODER_CONVS = [1, 5, 8, 11, 14, 18, 21, 25, 28]


def _convs(module: nn.Module) -> list[int]:
    return sorted(int(k.split(".")[0]) for k in module.canonical_keys() if k.endswith(".weight"))


def test_vgg19_key_layout_is_the_original_release():
    assert _convs(Encoder("vgg19")) == ORIGINAL_ENCODER_CONVS
    assert _convs(Decoder("vgg19")) == ORIGINAL_DECODER_CONVS


@pytest.mark.parametrize("arch", ["vgg19", "vgg16"])
def test_encoder_is_frozen_and_exposes_relu1_1_to_relu4_1(arch):
    enc = Encoder(arch)
    enc.train()
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    x = torch.rand(1, 3, 37, 29)
    with torch.inference_mode():
        feats, out = enc.features(x), enc(x)
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 37, 29), (128, 19, 15), (256, 10, 8), (512, 5, 4)]
    assert all(f.min() >= 0 for f in feats)  # after ReLU
    assert torch.equal(out, feats[-1])  # forward() is relu4_1


@pytest.mark.parametrize("arch", ["vgg19", "vgg16"])
def test_decoder_mirrors_without_normalisation_and_ends_in_a_conv(arch):
    dec = Decoder(arch)
    kinds = [type(m) for m in dec.layers]
    assert not any(issubclass(k, nn.modules.batchnorm._NormBase | nn.GroupNorm | nn.LayerNorm) for k in kinds)
    assert kinds[0] is nn.ReflectionPad2d and kinds[-1] is nn.Conv2d and dec.layers[-1].out_channels == 3
    assert kinds.count(nn.ReLU) == kinds.count(nn.Conv2d) - 1 and kinds.count(nn.Upsample) == 3
    enc_convs = [m for m in Encoder(arch).layers if isinstance(m, nn.Conv2d)][1:]  # without the fixed 1x1
    dec_convs = [m for m in dec.layers if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels) for m in dec_convs] == [
        (m.out_channels, m.in_channels) for m in reversed(enc_convs)]
    with torch.inference_mode():
        assert dec(torch.rand(1, 512, 5, 4), (37, 29)).shape == (1, 3, 37, 29)


@pytest.mark.parametrize("arch", ["vgg19", "vgg16"])
def test_adain_at_relu3_1_stops_the_encoder_there_and_mirrors_only_that_far(arch):
    enc, dec = Encoder(arch, "relu3_1"), Decoder(arch, "relu3_1")
    x = torch.rand(1, 3, 37, 50)
    with torch.no_grad():
        feats = enc.features(x)
        assert len(feats) == 4 and torch.equal(enc(x), feats[2])  # still holds relu4_1 for the losses
        assert enc.at("relu4_1") is enc and torch.equal(enc(x), feats[3]) and enc.scale == 8
        assert dec(feats[2], (37, 50)).shape == (1, 3, 37, 50) and dec.scale == 4
    convs = [m for m in dec.layers if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(256, 128), (128, 128), (128, 64), (64, 64), (64, 3)]
    assert sum(isinstance(m, nn.Upsample) for m in dec.layers) == 2
    with pytest.raises(ValueError, match="relu2_1"):
        Decoder(arch, "relu2_1")
