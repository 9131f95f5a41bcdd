"""adain: arbitrary style transfer with adaptive instance normalisation (Huang & Belongie, 2017).

The network classes load on first use (PEP 562), so that ``import adain.cli`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import AdainError, ImageError, InputError, WeightsError

if TYPE_CHECKING:
    from .net import ARCHS, Decoder, Encoder
    from .stylizer import Stylizer, Target

_LAZY = {"ARCHS": "net", "Decoder": "net", "Encoder": "net", "Stylizer": "stylizer", "Target": "stylizer"}

__all__ = ["ARCHS", "AdainError", "Decoder", "Encoder", "ImageError", "InputError", "Stylizer", "Target",
           "WeightsError"]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
