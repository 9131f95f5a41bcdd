"""Convert torchvision's ImageNet VGG19 (``vgg19-dcbb9e9d.pth``) to our vgg19 encoder layout.

torchvision's VGG takes RGB in [0, 1] normalised with the ImageNet mean and std;
that normalisation is folded into the encoder's fixed 1x1 conv. Folding a
per-channel affine map is exact under reflection padding (the two commute).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..errors import WeightsError
from .convert import assemble
from .layouts import read_state_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def input_conv() -> tuple[Tensor, Tensor]:
    """Weight (3, 3, 1, 1) and bias (3,) computing (x - mean) / std per RGB channel."""
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    return torch.diag(1.0 / std).reshape(3, 3, 1, 1), -mean / std


def from_torchvision(state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """Canonical vgg19 encoder weights from a torchvision ``vgg19`` state dict (``features.N.weight`` keys)."""
    indices = sorted(int(k.split(".")[1]) for k, v in state.items()
                     if k.startswith("features.") and k.endswith(".weight") and v.ndim == 4)
    missing = [f"features.{i}.bias" for i in indices if f"features.{i}.bias" not in state]
    if missing:
        raise WeightsError(f"{source}: missing key {missing[0]!r}")
    convs = [(state[f"features.{i}.weight"], state[f"features.{i}.bias"]) for i in indices]
    return assemble("vgg19", input_conv(), convs, source)


def convert_torchvision_vgg19(path: str | Path) -> dict[str, Tensor]:
    """Read torchvision's VGG19 ``.pth`` and return a canonical vgg19 encoder state dict."""
    return from_torchvision(read_state_dict(path), str(path))
