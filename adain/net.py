"""The AdaIN networks: a VGG encoder up to relu4_1 and its mirrored decoder.

Both are plain ``nn.Sequential`` stacks in the layout of the original release
(``vgg_normalised.pth`` / ``decoder.pth``), so their state-dict keys are the
canonical ``"<index>.weight"`` / ``"<index>.bias"``.

AdaIN works at relu4_1, as in the paper, unless a model picks a shallower
``layer`` (relu3_1): the encoder then stops there when stylizing (it still
holds the layers up to relu4_1, for the losses), and the decoder mirrors only
the layers up to it.

A decoder may also take ``skips``: shallower layers (relu1_1, relu2_1, relu3_1) that AdaIN
works at too, each concatenated to the decoder's path where its resolution is
reached, after a fixed per-channel scale (a :class:`SkipJoin` in the stack, whose
``scale`` buffer is part of the file). The decoder's ``inputs`` are then
(*skips, layer), shallowest first, and it takes one feature map per input.
A decoder trained with weakened skips in its style steps has a ``skip_strength``
below 1 (in the file's metadata; one for all skips, or one per skip): the skips
it is fed are then scaled by :meth:`Decoder.skip_gains` of the stylization's alpha.
A decoder with ``extra_convs`` has that many more 3x3 convs (and ReLUs) at its deepest resolution, after its first
conv, as wide as that conv's output (the paper's decoder has three more convs at that resolution than the
mirror of relu4_1 would have); they come before the rest, so the keys of the layers after them shift.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

Arch = Literal["vgg19", "vgg16"]
ARCHS: tuple[Arch, ...] = ("vgg19", "vgg16")
Layer = Literal["relu4_1", "relu3_1"]
LAYERS: tuple[Layer, ...] = ("relu4_1", "relu3_1")  # where AdaIN can work; relu4_1 is the paper's
SKIP_LAYERS = ("relu1_1", "relu2_1", "relu3_1")  # what a decoder may take besides its layer (if shallower)

# Conv widths up to conv4_1; "M" is a 2x2 max-pool.
_CONFIGS: dict[str, list[int | str]] = {
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512],
}
FEATURE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
#: Smallest image side the networks take: after three ceil-mode pools relu4_1 is ceil(side / 8)
#: pixels, and the reflection padding before conv4_1 needs at least 2 of them.
MIN_SIDE = 9
MAX_EXTRA_CONVS = 8  # most extra convs a decoder may have at its deepest resolution


def _conv3x3(cin: int, cout: int) -> list[nn.Module]:
    return [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3)]


def _check(arch: str, layer: str, skips: Sequence[str] = (), extra_convs: int = 0) -> None:
    if not 0 <= extra_convs <= MAX_EXTRA_CONVS:
        raise ValueError(f"a decoder may have 0 to {MAX_EXTRA_CONVS} extra convs at its deepest resolution, "
                         f"not {extra_convs}")
    if arch not in _CONFIGS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}")
    if layer not in LAYERS:
        raise ValueError(f"AdaIN cannot work at {layer!r}; expected one of {', '.join(LAYERS)}")
    for skip in skips:
        if skip not in SKIP_LAYERS or FEATURE_LAYERS.index(skip) >= FEATURE_LAYERS.index(layer):
            raise ValueError(f"a decoder of {layer} cannot take a skip from {skip!r}; expected "
                             f"{' or '.join(SKIP_LAYERS)}, shallower than {layer}")


def scale_of(layer: str) -> int:
    """How many image pixels one feature pixel of ``layer`` spans, per side (relu4_1: 8, relu3_1: 4)."""
    return 2 ** FEATURE_LAYERS.index(layer)


def channels_of(layer: str) -> int:
    """Channels of ``layer`` (the same in VGG16 and VGG19)."""
    return int(_config_to("vgg19", layer)[-1])


def skip_strengths(strength: float | Sequence[float], skips: Sequence[str]) -> tuple[float, ...]:
    """One strength per skip from one for all of them or one each (shallowest first); ValueError unless each
    is in (0, 1]."""
    values = (strength,) * len(skips) if isinstance(strength, (int, float)) else tuple(strength)
    if len(values) != len(skips):
        raise ValueError(f"{len(values)} skip strengths for {len(skips)} skips")
    for value in values:
        if not 0.0 < value <= 1.0:
            raise ValueError(f"skip strength must be in (0, 1], got {value}")
    return tuple(float(v) for v in values)


def parse_skip_strength(text: str) -> float | tuple[float, ...]:
    """A skip strength as written in a file's metadata or on the command line: one number in (0, 1], or one per
    skip, comma-separated; ValueError otherwise."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = (float("nan"),)
    if not all(0.0 < v <= 1.0 for v in values):
        raise ValueError(f"{text!r} is not one or more numbers in (0, 1]")
    return values[0] if len(values) == 1 else values


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

    def features(self, x: Tensor, upto: str = "relu4_1") -> list[Tensor]:
        """relu1_1, relu2_1, ... of ``x``, up to and with ``upto`` (default relu4_1)."""
        out = []
        for a, b in self._stages[: FEATURE_LAYERS.index(upto) + 1]:
            x = self.layers[a:b](x)
            out.append(x)
        return out

    def levels(self, x: Tensor, inputs: Sequence[str]) -> list[Tensor]:
        """The feature maps of ``inputs`` (layer names, shallowest first: a decoder's ``inputs``)."""
        if tuple(inputs) == (self.layer,):
            return [self(x)]
        feats = self.features(x, inputs[-1])
        return [feats[FEATURE_LAYERS.index(name)] for name in inputs]

    def forward(self, x: Tensor) -> Tensor:
        return self.layers[: self._end](x)

    def canonical_keys(self) -> dict[str, torch.Size]:
        """Expected canonical key -> shape."""
        return {k: v.shape for k, v in self.layers.state_dict().items()}


class SkipJoin(nn.Module):
    """Where the skip from ``layer`` enters the decoder: crop the path to the skip's size, append the skip times
    ``scale``."""

    def __init__(self, layer: str) -> None:
        super().__init__()
        self.layer = layer
        self.register_buffer("scale", torch.ones(channels_of(layer)))

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = x[..., : skip.shape[-2], : skip.shape[-1]]
        return torch.cat([x, skip * self.scale.view(1, -1, 1, 1).to(skip.dtype)], 1)


class Decoder(nn.Module):
    """Mirror of the encoder up to ``layer``: reflection padding, nearest 2x upsampling, ReLU.

    With ``skips``, a :class:`SkipJoin` follows the upsampling that reaches each skip's resolution, and the
    conv after it takes the skip's channels too. ``extra_convs``: extra convs after the first, at its resolution.
    """

    def __init__(self, arch: Arch = "vgg19", layer: Layer = "relu4_1", skips: Sequence[str] = (),
                 skip_strength: float | Sequence[float] = 1.0, grain: float = 0.0, strokes: float = 0.0,
                 extra_convs: int = 0) -> None:
        super().__init__()
        _check(arch, layer, skips, extra_convs)
        self.arch = arch
        self.layer = layer
        self.skips = tuple(sorted(set(skips), key=FEATURE_LAYERS.index))
        self.skip_strength = skip_strength
        self.grain = grain  # the grain it is meant to be stylized with (adain.stylizer), 0 for none
        self.strokes = strokes  # the stroke noise it was trained with (adain.strokes), 0 for none
        self.extra_convs = extra_convs
        self.inputs = (*self.skips, layer)
        self.scale = scale_of(layer)
        widths = [3, *_config_to(arch, layer)]
        layers: list[nn.Module] = []
        level = FEATURE_LAYERS.index(layer)
        # Walk the encoder backwards: each conv (cin -> cout) becomes (cout -> cin).
        for i in range(len(widths) - 1, 0, -1):
            v = widths[i]
            if v == "M":
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
                level -= 1
                if FEATURE_LAYERS[level] in self.skips:
                    layers.append(SkipJoin(FEATURE_LAYERS[level]))
                continue
            prev = next(w for w in reversed(widths[:i]) if w != "M")
            joined = isinstance(layers[-1], SkipJoin) if layers else False
            cin = int(v) + (layers[-1].scale.numel() if joined else 0)
            layers += _conv3x3(cin, int(prev))
            if i > 1:
                layers.append(nn.ReLU(inplace=True))
            if i == len(widths) - 1:  # after the first conv and its ReLU
                for _ in range(extra_convs):
                    layers += [*_conv3x3(int(prev), int(prev)), nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*layers)

    @property
    def skip_strength(self) -> float | tuple[float, ...]:
        """What the skips were multiplied by in the style steps the decoder was trained with: one number when
        it is the same for every skip (1 without skips), else one per skip, shallowest first."""
        values = self.skip_strengths
        return values[0] if len(set(values)) == 1 else (values or 1.0)

    @skip_strength.setter
    def skip_strength(self, value: float | Sequence[float]) -> None:
        self.skip_strengths = skip_strengths(value, self.skips) if self.skips else ()

    def skip_gains(self, alpha: float) -> tuple[float, ...]:
        """What each skip is multiplied by at ``alpha``: 1 at alpha 0 (the photo's own features, as in
        reconstruction), its strength at alpha 1 (as in the style steps it was trained with), linear between."""
        return tuple(1.0 - alpha * (1.0 - s) for s in self.skip_strengths)

    def convs(self) -> tuple[list[nn.Conv2d], list[nn.Conv2d]]:
        """(the convs that mirror the encoder's, the ``extra_convs``), each in the order they run."""
        convs = [m for m in self.layers if isinstance(m, nn.Conv2d)]
        return [convs[0], *convs[1 + self.extra_convs:]], convs[1 : 1 + self.extra_convs]

    def forward(self, t: Tensor | Sequence[Tensor], size: tuple[int, int] | None = None) -> Tensor:
        """Decode features of ``inputs`` (one map, or one per input, shallowest first); crop to ``size`` (H, W)
        when given."""
        y = run_stack(self.layers, t)
        if size is not None:
            y = y[..., : size[0], : size[1]]
        return y

    def canonical_keys(self) -> dict[str, torch.Size]:
        """Expected canonical key -> shape."""
        return {k: v.shape for k, v in self.layers.state_dict().items()}


def run_stack(layers: nn.Sequential, t: Tensor | Sequence[Tensor]) -> Tensor:
    """Run a decoder stack on its deepest input, handing the shallower ones to its :class:`SkipJoin` s."""
    feats = [t] if isinstance(t, Tensor) else list(t)
    x, skips = feats[-1], feats[-2::-1]  # the skips in the order the stack meets them: deepest first
    joined = 0
    for module in layers:
        if isinstance(module, SkipJoin):
            x = module(x, skips[joined])
            joined += 1
        else:
            x = module(x)
    if joined != len(skips):
        raise ValueError(f"the decoder takes {joined + 1} feature maps, got {len(feats)}")
    return x
