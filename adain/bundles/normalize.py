"""Normalising an encoder: every channel's mean activation over a set of photos becomes 1.

The AdaIN authors' VGG19 is normalised this way; an unnormalised one (HED's VGG16, say) has
channels whose activations differ by orders of magnitude, so a handful of them dominate every
loss term. Conv ``l`` with output scales ``s_l`` (the channels' mean activations) becomes

    W'_l[o, i] = W_l[o, i] * s_{l-1}[i] / s_l[o],    b'_l[o] = b_l[o] / s_l[o],

which is exact: ReLU, max-pooling and reflection padding commute with positive per-channel
scales, so every feature map is the original one divided by its channels' scales. Dead and
rarely active channels (mean below :data:`DEAD` times their layer's median) keep the scale 1.
AdaIN at relu4_1 is unchanged up to that scale.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import WeightsError
from ..net import Encoder

Scales = dict[str, list[float]]  # conv key prefix ("2", "5", ...) -> per-channel scale
#: Channels whose mean activation is below this fraction of their layer's median are left as they are:
#: scaling up a channel that is rarely active (HED has many, with means of 1e-4 to 1e-1 against medians
#: of 2 to 13) turns its rare spikes into the largest features, and they then dominate every loss.
DEAD = 0.1


def _convs(encoder: Encoder) -> list[tuple[str, nn.Conv2d]]:
    """The 3x3 convolutions of the encoder, in order, with their key prefixes."""
    return [(str(i), m) for i, m in enumerate(encoder.layers) if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]


@torch.no_grad()
def mean_activations(encoder: Encoder, images: Iterable[Tensor]) -> Scales:
    """Per conv: each channel's mean activation after its ReLU, over all pixels of ``images`` (each (3, H, W))."""
    convs = _convs(encoder)
    totals = {key: torch.zeros(conv.out_channels, dtype=torch.float64) for key, conv in convs}
    counts = dict.fromkeys(totals, 0)
    hooks = []
    for key, conv in convs:
        def record(_m: nn.Module, _inp: tuple, out: Tensor, key: str = key) -> None:
            totals[key] += out.clamp(min=0).sum(dim=(0, 2, 3)).double()
            counts[key] += out.shape[0] * out.shape[2] * out.shape[3]
        hooks.append(conv.register_forward_hook(record))
    try:
        n = 0
        for img in images:
            encoder(img.unsqueeze(0).float())
            n += 1
    finally:
        for h in hooks:
            h.remove()
    if n == 0:
        raise ValueError("no images to measure the mean activations on")
    return {key: (totals[key] / counts[key]).tolist() for key in totals}


def apply_scales(state: dict[str, Tensor], scales: Scales) -> dict[str, Tensor]:
    """The encoder state dict with each listed conv's outputs divided by its scales (compensated downstream).

    ``scales`` lists the 3x3 convs in network order; a scale below :data:`DEAD` times the conv's median counts as 1.
    """
    out = dict(state)
    previous: Tensor | None = None
    for key, values in scales.items():
        s = torch.tensor(values, dtype=torch.float64)
        s = torch.where(s >= DEAD * s.median(), s, torch.ones_like(s))
        w, b = state[f"{key}.weight"].double(), state[f"{key}.bias"].double()
        if w.shape[0] != len(s):
            raise ValueError(f"conv {key}: {w.shape[0]} channels, {len(s)} scales")
        if previous is not None:
            w = w * previous.view(1, -1, 1, 1)
        out[f"{key}.weight"] = (w / s.view(-1, 1, 1, 1)).float().contiguous()
        out[f"{key}.bias"] = (b / s).float().contiguous()
        previous = s
    return out


def load_scales(path: str | Path) -> Scales:
    """The ``scales`` of a JSON file written by ``python -m adain.train.calibrate``."""
    try:
        scales = json.loads(Path(path).read_text())["scales"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"{path}: not an encoder scales file ({exc})") from None
    return {str(k): [float(x) for x in v] for k, v in scales.items()}


def normalise(encoder: Encoder, images: Iterable[Tensor]) -> tuple[dict[str, Tensor], Scales]:
    """(normalised state dict, scales) of ``encoder``: its channels' mean activations over ``images`` become 1."""
    scales = mean_activations(encoder, images)
    state = {k: v.detach().cpu() for k, v in encoder.layers.state_dict().items()}
    return apply_scales(state, scales), scales

