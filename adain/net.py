"""The AdaIN networks: a VGG encoder up to relu4_1 and its mirrored decoder.

Both are plain ``nn.Sequential`` stacks in the layout of the original release
(``vgg_normalised.pth`` / ``decoder.pth``), so their state-dict keys are the
canonical ``"<index>.weight"`` / ``"<index>.bias"``.

AdaIN works at relu4_1, as in the paper, unless a model picks a shallower
``layer`` (relu3_1): the encoder then stops there when stylizing (it still
holds the layers up to relu4_1, for the losses), and the decoder mirrors only
the layers up to it.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

Arch = Literal["vgg19", "vgg16"]
ARCHS: tuple[Arch, ...] = ("vgg19", "vgg16")
Layer = Literal["relu4_1", "relu3_1"]
LAYERS: tuple[Layer, ...] = ("relu4_1", "relu3_1")  # where AdaIN can work; relu4_1 is the paper's

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


def _check(arch: str, layer: str) -> None:
    if arch not in _CONFIGS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}")
    if layer not in LAYERS:
        raise ValueError(f"AdaIN cannot work at {layer!r}; expected one of {', '.join(LAYERS)}")


def scale_of(layer: str) -> int:
    """How many image pixels one feature pixel of ``layer`` spans, per side (relu4_1: 8, relu3_1: 4)."""
    return 2 ** FEATURE_LAYERS.index(layer)


def channels_of(layer: str) -> int:
    """Channels of ``layer`` (the same in VGG16 and VGG19)."""
    return int(_config_to("vgg19", layer)[-1])


def _config_to(arch: Arch, layer: str) -> list[int | str]:
    """The conv widths and pools of ``arch`` up to the conv of ``layer``."""
    config = _CONFIGS[arch]
    pools = [i for i, v in enumerate(config) if v == "M"]
    depth = FEATURE_LAYERS.index(layer)
    return config[: pools[depth - 1] + 2] if depth else config[:1]


class Encoder(nn.Module):
    """Frozen VGG up to relu4_1; input RGB in [0, 1], NCHW.

    ``forward`` returns the features AdaIN works on (``layer``, relu4_1 by default);
    ``features`` returns relu1_1..relu4_1.
    """

    def __init__(self, arch: Arch = "vgg19", layer: Layer = "relu4_1") -> None:
        super().__init__()
        _check(arch, layer)
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
        self.at(layer)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Encoder:
        """Stays in eval mode: the encoder is frozen."""
        return super().train(False)

    def at(self, layer: Layer) -> Encoder:
        """Make ``forward`` return ``layer`` (where a decoder trained at it expects AdaIN); returns self."""
        _check(self.arch, layer)
        self.layer, self.scale = layer, scale_of(layer)
        self._end = self._stages[FEATURE_LAYERS.index(layer)][1]
        return self

    def features(self, x: Tensor) -> list[Tensor]:
        """relu1_1, relu2_1, relu3_1 and relu4_1 of ``x``."""
        out = []
        for a, b in self._stages:
            x = self.layers[a:b](x)
            out.append(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.layers[: self._end](x)

    def canonical_keys(self) -> dict[str, torch.Size]:
        """Expected canonical key -> shape."""
        return {k: v.shape for k, v in self.layers.state_dict().items()}


class Decoder(nn.Module):
    """Mirror of the encoder up to ``layer``: reflection padding, nearest 2x upsampling, ReLU."""

    def __init__(self, arch: Arch = "vgg19", layer: Layer = "relu4_1") -> None:
        super().__init__()
        _check(arch, layer)
        self.arch = arch
        self.layer = layer
        self.scale = scale_of(layer)
        widths = [3, *_config_to(arch, layer)]
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
        """Decode features of ``layer``; crop to ``size`` (H, W) when given."""
        y = self.layers(t)
        if size is not None:
            y = y[..., : size[0], : size[1]]
        return y

    def canonical_keys(self) -> dict[str, torch.Size]:
        """Expected canonical key -> shape."""
        return {k: v.shape for k, v in self.layers.state_dict().items()}
