"""Stylize options and their checks in plain Python, without torch.

The command line refuses bad arguments and missing files with these before it imports torch, which takes
seconds; the library runs the same checks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Literal

from .errors import ImageError, InputError, clip

Tiling = Literal["auto", "always", "never"]
TILINGS: tuple[str, ...] = ("auto", "always", "never")
#: Images with more pixels than this run in tiles (tiling="auto"): 2**21 is about 1448x1448. Untiled,
#: the full-resolution fp32 activations take several hundred bytes per pixel (GiBs at 2048x2048); tiled,
#: memory is bounded by the tile size plus the relu4_1 features of the whole image (32 bytes per pixel
#: in fp32, twice that with the AdaIN target) and the image itself.
TILE_PIXELS = 2**21
#: Tile side in image pixels (a multiple of 8); each tile also reads a halo around it (``adain.tiling``).
TILE_SIZE = 1024
SCALE = 8  # relu4_1 is 1/8 of the image size (ceil), relu3_1 1/4: tiles start on multiples of 8

#: output format -> (PIL format, MIME type)
OUTPUT_FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}
#: Other names of formats (file extensions) -> the format's name.
FORMAT_ALIASES = {"jpg": "jpeg", "tif": "tiff"}
#: File extensions of the images the commands pick up from a folder.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
#: Most the longer side of a prepared image may exceed its shorter side, as a factor (16: at most 16:1).
DEFAULT_MAX_ASPECT = 16.0


def normalised_weights(weights: Sequence[float] | None, n_styles: int) -> list[float]:
    """Validate style weights and normalise them to sum to one (equal when None)."""
    if n_styles < 1:
        raise InputError("at least one style is needed")
    if weights is None:
        return [1.0 / n_styles] * n_styles
    w = [float(x) for x in weights]
    if len(w) != n_styles:
        raise InputError(f"{len(w)} weights given for {n_styles} styles")
    if any(not math.isfinite(x) for x in w):
        raise InputError(f"weights must be finite numbers, got {clip(w)}")
    if any(x < 0 for x in w):
        raise InputError(f"weights must not be negative, got {clip(w)}")
    top = max(w)
    if top <= 0:
        raise InputError("the weights are all zero")
    scaled = [x / top for x in w]  # by the largest first: the sum cannot overflow
    total = sum(scaled)
    return [x / total for x in scaled]


def check_alpha(alpha: float) -> float:
    """alpha must lie in [0, 1]."""
    alpha = float(alpha)
    if not math.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be between 0 and 1, got {alpha}")
    return alpha


#: The range of ``style_scale``: the factor a style image is resized by (after ``style_size``) before its statistics
#: are taken. Above 1 the style's strokes and texture come out larger in the result, below 1 finer.
STYLE_SCALES = (0.25, 4.0)


def check_style_scale(scale: float) -> float:
    """style_scale must lie in :data:`STYLE_SCALES`."""
    scale = float(scale)
    low, high = STYLE_SCALES
    if not math.isfinite(scale) or not low <= scale <= high:
        raise InputError(f"style_scale must be between {low:g} and {high:g}, got {scale}")
    return scale


#: The most grain (``adain.stylizer``) may be: noise of this standard deviation (images in [0, 1]) hides the photo.
MAX_GRAIN = 0.5
#: Most stroke noise a decoder may be trained with, in units of each channel's std (``adain.strokes``).
MAX_STROKES = 2.0


def check_amount(name: str, value: float, top: float) -> float:
    """A noise amount ``name`` must lie in [0, ``top``]."""
    value = float(value)
    if not 0.0 <= value <= top:  # also refuses NaN
        raise InputError(f"{name} must be between 0 and {top:g}, got {value}")
    return value


def check_grain(grain: float) -> float:
    """grain must lie in [0, :data:`MAX_GRAIN`]."""
    return check_amount("grain", grain, MAX_GRAIN)


def check_tiling(tiling_mode: str, tile_pixels: int, tile_size: int) -> None:
    """Tiling options: a known mode, a threshold >= 1 and a tile side that is a positive multiple of 8."""
    if tiling_mode not in TILINGS:
        raise InputError(f"tiling must be one of {', '.join(TILINGS)}, got {tiling_mode!r}")
    if int(tile_pixels) < 1:
        raise InputError(f"tile_pixels must be at least 1, got {tile_pixels}")
    if int(tile_size) < SCALE or int(tile_size) % SCALE:
        raise InputError(f"the tile size must be a positive multiple of {SCALE}, got {tile_size}")


def output_format(path_or_format: str | Path) -> str:
    """'png' | 'jpeg' | 'webp' from a file name or a format name."""
    s = str(path_or_format).lower()
    ext = s.rsplit(".", 1)[-1]
    fmt = FORMAT_ALIASES.get(ext, ext)
    if fmt not in OUTPUT_FORMATS:
        raise ImageError(f"{path_or_format}: unsupported output format (use .png, .jpg or .webp)")
    return fmt


def open_file(path: str | Path, label: str | None = None) -> BinaryIO:
    """``path`` opened for reading, or an ImageError naming it (``label``, default the path)."""
    try:
        return open(path, "rb")
    except OSError as exc:
        raise ImageError(f"{label or path}: cannot open ({exc.strerror or exc})") from None
