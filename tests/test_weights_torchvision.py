"""torchvision's VGG19 converted to our encoder layout, checked against torchvision's own forward pass."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import vgg19
from torchvision.models.vgg import cfgs, make_layers

from adain.bundles.torchvision_vgg import IMAGENET_MEAN, IMAGENET_STD, from_torchvision
from adain.errors import WeightsError
from adain.net import Encoder


def test_conversion_matches_torchvision():
    torch.manual_seed(0)
    tv = vgg19(weights=None).eval()  # randomly initialised, as downloaded weights would be laid out
    encoder = Encoder("vgg19")
    encoder.layers.load_state_dict(from_torchvision(tv.state_dict(), "vgg19 state dict"))
    rgb = torch.rand(1, 3, 96, 96)
    normalised = (rgb - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    with torch.no_grad():
        relu1_1, *_, relu4_1 = encoder.features(rgb)
        tv_relu1_1, tv_relu4_1 = tv.features[:2](normalised), tv.features[:21](normalised)
    # torchvision pads with zeros, we reflect: compare where the padding has not reached.
    torch.testing.assert_close(relu1_1[..., 1:-1, 1:-1], tv_relu1_1[..., 1:-1, 1:-1], rtol=1e-4, atol=1e-5)
    assert relu4_1.shape == tv_relu4_1.shape == (1, 512, 12, 12)
    torch.testing.assert_close(relu4_1[..., 4:8, 4:8], tv_relu4_1[..., 4:8, 4:8], rtol=1e-4, atol=1e-5)


def test_a_state_dict_that_does_not_fit_is_named():
    vgg16 = {f"features.{k}": v for k, v in make_layers(cfgs["D"]).state_dict().items()}
    with pytest.raises(WeightsError, match=r"vgg16.pth: 25.weight has shape \(512, 256, 3, 3\), a vgg19 encoder needs"):
        from_torchvision(vgg16, "vgg16.pth")
    with pytest.raises(WeightsError, match="few.pth: 1 conv layers, a vgg19 encoder needs 9"):
        from_torchvision({k: v for k, v in vgg16.items() if k.startswith("features.0.")}, "few.pth")
    with pytest.raises(WeightsError, match="nobias.pth: missing key 'features.0.bias'"):
        from_torchvision({"features.0.weight": vgg16["features.0.weight"]}, "nobias.pth")
