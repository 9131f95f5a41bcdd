"""adain: arbitrary style transfer with adaptive instance normalisation (Huang & Belongie, 2017)."""

from .errors import AdainError, ImageError, InputError, WeightsError
from .net import ARCHS, Decoder, Encoder
from .stylizer import Stylizer, Target

__all__ = ["ARCHS", "AdainError", "Decoder", "Encoder", "ImageError", "InputError", "Stylizer", "Target",
           "WeightsError"]
__version__ = "0.1.0"
