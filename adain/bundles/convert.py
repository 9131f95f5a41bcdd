"""Assembling a canonical encoder state dict from another project's VGG convolutions (used by the converters)."""

from __future__ import annotations

from torch import Tensor

from ..errors import WeightsError
from ..net import Arch, Encoder


def assemble(arch: Arch, input_conv: tuple[Tensor, Tensor], convs: list[tuple[Tensor, Tensor]],
             source: str) -> dict[str, Tensor]:
    """Canonical ``arch`` encoder weights from the fixed 1x1 input conv and the 3x3 convs (OIHW) in order.

    Convolutions past conv4_1 are ignored; a missing one or a wrong shape raises ``WeightsError`` naming ``source``.
    """
    expected = Encoder(arch).canonical_keys()
    prefixes = [k.removesuffix(".weight") for k, s in expected.items() if k.endswith(".weight") and s[-1] == 3]
    if len(convs) < len(prefixes):
        raise WeightsError(f"{source}: {len(convs)} conv layers, a {arch} encoder needs {len(prefixes)}")
    state = {"0.weight": input_conv[0], "0.bias": input_conv[1]}
    for prefix, (weight, bias) in zip(prefixes, convs, strict=False):
        state[f"{prefix}.weight"], state[f"{prefix}.bias"] = weight, bias
    for key, shape in expected.items():
        if state[key].shape != shape:
            raise WeightsError(f"{source}: {key} has shape {tuple(state[key].shape)}, a {arch} encoder needs "
                               f"{tuple(shape)}")
    return {k: v.float().contiguous() for k, v in state.items()}
