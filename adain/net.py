"""The AdaIN networks: a VGG encoder up to relu4_1 and its mirrored decoder.

Both are plain ``nn.Sequential`` stacks in the layout of the original release
(``vgg_normalised.pth`` / ``decoder.pth``), so their state-dict keys are the
canonical ``"<index>.weight"`` / ``"<index>.bias"``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

Arch = Literal["vgg19", "vgg16"]
ARCHS: tuple[Arch, ...] = ("vgg19", "vgg16")

# Conv widths up to conv4_1; "M" is a 2x2 max-pool.
_CONFIGS: dict[str, list[int | str]] = {
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512],
}
FEATURE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
#: Smallest image side the networks take: after three ceil-mode pools relu4_1 is ceil(side / 8)
#: pixels, and the reflection padding before conv4_1 needs at least 2 of them.
MIN_SIDE = 9


def _conv3x3(cin: int, cout: int) -> list[nn.Module]:
    return [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3)]


def _check_arch(arch: str) -> None:
    if arch not in _CONFIGS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}")


class Encoder(nn.Module):
    """Frozen VGG up to relu4_1; input RGB in [0, 1], NCHW.

    ``forward`` returns relu4_1; ``features`` returns relu1_1..relu4_1.
    """

    def __init__(self, arch: Arch = "vgg19") -> None:
        super().__init__()
        _check_arch(arch)
        self.arch = arch
        layers: list[nn.Module] = [nn.Conv2d(3, 3, 1)]
        taps: list[int] = []
        cin, block_first = 3, True
        for v in _CONFIGS[arch]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
                block_first = True
                continue
            layers += _conv3x3(cin, int(v))
            layers.append(nn.ReLU(inplace=True))
            if block_first:
                taps.append(len(layers))
                block_first = False
            cin = int(v)
        self.layers = nn.Sequential(*layers)
        self._stages = [(a, b) for a, b in zip([0] + taps[:-1], taps, strict=True)]
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Encoder:
        """Stays in eval mode: the encoder is frozen."""
        return super().train(False)

    def features(self, x: Tensor) -> list[Tensor]:
        """relu1_1, relu2_1, relu3_1 and relu4_1 of ``x``."""
        out = []
        for a, b in self._stages:
            x = self.layers[a:b](x)
            out.append(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

    def canonical_keys(self) -> dict[str, torch.Size]:
        """Expected canonical key -> shape."""
        return {k: v.shape for k, v in self.layers.state_dict().items()}


class Decoder(nn.Module):
    """Mirror of the encoder: reflection padding, nearest 2x upsampling, ReLU."""

    def __init__(self, arch: Arch = "vgg19") -> None:
        super().__init__()
        _check_arch(arch)
        self.arch = arch
        widths = [3] + [v for v in _CONFIGS[arch]]
        layers: list[nn.Module] = []
        # Walk the encoder backwards: each conv (cin -> cout) becomes (cout -> cin).
        for i in range(len(widths) - 1, 0, -1):
            v = widths[i]
            if v == "M":
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
                continue
            prev = next(w for w in reversed(widths[:i]) if w != "M")
            layers += _conv3x3(int(v), int(prev))
            if i > 1:
                layers.append(nn.ReLU(inplace=True))
        self.layers = nn.Sequential(*layers)

    def forward(self, t: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """Decode relu4_1 features; crop to ``size`` (H, W) when given."""
        y = self.layers(t)
        if size is not None:
            y = y[..., : size[0], : size[1]]
        return y

    def canonical_keys(self) -> dict[str, torch.Size]:
        """Expected canonical key -> shape."""
        return {k: v.shape for k, v in self.layers.state_dict().items()}
