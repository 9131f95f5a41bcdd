"""Image reading, resizing and writing.

Images travel as float tensors (3, H, W) in [0, 1]. Reading checks the pixel
count from the header before decoding, and decodes fully so that truncated
files fail here rather than later.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from .errors import ImageError, ImageTooLarge, UnsupportedImage
from .files import write_atomic
from .options import DEFAULT_MAX_ASPECT, OUTPUT_FORMATS, open_file, output_format

#: Formats accepted on input (by content, not by file name).
INPUT_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
DEFAULT_MAX_PIXELS = 8192 * 8192

Image.MAX_IMAGE_PIXELS = None  # we check ourselves, with a clear message


def _open_header(fp: io.IOBase, label: str, max_pixels: int, formats: Sequence[str]) -> Image.Image:
    """A PIL image whose header alone was read: format, pixel count (at most ``max_pixels``) and sides checked."""
    try:
        img = Image.open(fp, formats=formats)
    except UnidentifiedImageError:
        raise UnsupportedImage(f"{label}: not an image in a supported format "
                               f"({', '.join(f.lower() for f in formats)})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{label}: unreadable image ({exc})") from None
    w, h = img.size
    if w * h > max_pixels:
        raise ImageTooLarge(f"{label}: {w}x{h} is {w * h} pixels, more than the limit of {max_pixels}")
    if w == 0 or h == 0:
        raise ImageError(f"{label}: empty image ({w}x{h})")
    return img


def image_size(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "image",
               formats: Sequence[str] = INPUT_FORMATS) -> tuple[int, int]:
    """(H, W) of an encoded image as its header states them, with the checks of :func:`open_image` (format, pixel
    count): no pixel is decoded. An EXIF orientation may swap the sides once decoded, which changes neither the
    pixel count nor the ratio of the sides."""
    with io.BytesIO(data) as fp, _open_header(fp, name, max_pixels, formats) as img:
        w, h = img.size
    return h, w


def _load(img: Image.Image, label: str, mode: str | None) -> Image.Image:
    """Decode ``img`` (opened by :func:`_open_header`) fully, turned as its EXIF orientation says, in ``mode``
    (None: as stored; transparency is flattened onto white for RGB)."""
    try:
        img.load()
        ImageOps.exif_transpose(img, in_place=True)  # camera orientation, as image viewers show it
        if img.mode.startswith("I;16"):  # 16-bit grey: scale it, PIL's convert() would clip at 255
            img = Image.fromarray(((np.asarray(img, dtype=np.uint32) + 128) // 257).astype(np.uint8))
        if mode is not None and img.mode != mode:
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                if mode == "RGB":  # flatten transparency onto white
                    rgba = img.convert("RGBA")
                    img = Image.new("RGB", rgba.size, (255, 255, 255))
                    img.paste(rgba, mask=rgba.getchannel("A"))
            img = img.convert(mode)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{label}: truncated or corrupt image ({exc})") from None
    return img


def open_image(source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None,
               mode: str | None = "RGB", formats: Sequence[str] = INPUT_FORMATS) -> Image.Image:
    """Decode an image file or bytes into a fully loaded PIL image of ``mode`` (None: as stored).

    ``formats`` (PIL names) are the accepted formats, recognised by content.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "image")
    with io.BytesIO(source) if isinstance(source, bytes) else open_file(source, label) as fp:
        return _load(_open_header(fp, label, max_pixels, formats), label, mode)


def to_tensor(img: Image.Image | Tensor) -> Tensor:
    """PIL image or uint8/float tensor -> float tensor (3, H, W) in [0, 1]."""
    if isinstance(img, Image.Image):
        t = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)
    else:
        t = img
    if t.ndim != 3 or t.shape[0] != 3:
        raise ImageError(f"expected an image tensor of shape (3, H, W), got {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return t.float().div_(255)
    return t.float()


def read_image(source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None,
               formats: Sequence[str] = INPUT_FORMATS) -> Tensor:
    """Read an image as float (3, H, W) in [0, 1]."""
    return to_tensor(open_image(source, max_pixels, name, formats=formats))


def resize_shorter(img: Tensor, size: int) -> Tensor:
    """Resize (C, H, W) or (N, C, H, W) so that the shorter side is ``size`` (0 keeps the image as it is).

    Antialiased bilinear, the longer side truncated to an integer: the same as torchvision's
    ``resize(img, [size], antialias=True)``, without importing torchvision (slow to import).
    """
    h, w = img.shape[-2:]
    if size <= 0 or min(h, w) == size:
        return img
    return resize_to(img, prepared_size((h, w), size, False))


def resize_to(img: Tensor, hw: tuple[int, int]) -> Tensor:
    """Resize (C, H, W) or (N, C, H, W) to exactly ``hw`` (H, W): antialiased bilinear, clamped to [0, 1]."""
    x = img.reshape(-1, *img.shape[-3:])
    x = x if x.is_floating_point() else x.float()
    out = F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True)
    return out.reshape(*img.shape[:-2], *hw).clamp_(0, 1)


def center_crop(img: Tensor, size: int) -> Tensor:
    """Central ``size`` x ``size`` square (or the shorter side when ``size`` is 0), offsets rounded like
    torchvision's ``center_crop``; ``size`` is at most the shorter side."""
    h, w = img.shape[-2:]
    size = size or min(h, w)
    if size > min(h, w):
        raise ImageError(f"cannot crop a {size}x{size} square from a {w}x{h} image")
    top, left = round((h - size) / 2), round((w - size) / 2)
    return img[..., top : top + size, left : left + size]


@dataclass(frozen=True)
class SizeLimits:
    """What an image may become once prepared (resized, cropped): checked before any pixel is resized."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_aspect: float = DEFAULT_MAX_ASPECT


def prepared_size(hw: tuple[int, int], size: int, crop: bool) -> tuple[int, int]:
    """(H, W) that :func:`prepare` makes of an image of ``hw`` (H, W), computed without touching pixels."""
    h, w = hw
    if size > 0 and min(h, w) != size:
        long = int(size * max(h, w) / min(h, w))
        h, w = (size, long) if h <= w else (long, size)
    if crop:
        side = size or min(h, w)
        return side, side
    return h, w


def scaled_size(hw: tuple[int, int], size: int, scale: float) -> int:
    """The shorter side a style image of ``hw`` (H, W) is resized to at ``style_size`` ``size`` (0: its own) and
    ``style_scale`` ``scale``; ``size`` itself when ``scale`` is 1."""
    return size if scale == 1 else max(1, round(scale * (size or min(hw))))


def style_read_size(size: int, scale: float) -> int:
    """The shorter side a style is read at (:func:`read_resized`) for a ``style_size`` ``size`` and a ``style_scale``
    ``scale``: the size it is resized to (:func:`scaled_size`), or 0 (as it is) without a size, the scale then
    applied to the image read."""
    return scaled_size((size, size), size, scale) if size else 0


def check_prepared(hw: tuple[int, int], size: int, crop: bool, limits: SizeLimits, label: str = "image") -> None:
    """Raise ImageTooLarge (too many pixels) or ImageError (sides too far apart) for what ``prepare`` would make
    of an image of ``hw`` (H, W) at ``size`` (0: kept as it is)."""
    h, w = prepared_size(hw, size, crop)
    asked = f"{label}: {hw[1]}x{hw[0]}" + (f" at a shorter side of {size}" if size else "") + f" is {w}x{h}"
    if h * w > limits.max_pixels:
        raise ImageTooLarge(f"{asked} = {h * w} pixels, more than the limit of {limits.max_pixels}; "
                            "ask for a smaller size")
    if max(h, w) > limits.max_aspect * min(h, w):
        raise ImageError(f"{asked}, sides more than {limits.max_aspect:g}:1 apart (the limit)")


#: The limits the library applies unless told otherwise.
DEFAULT_LIMITS = SizeLimits()
#: JPEGs decode at a reduced scale (1/2, 1/4 or 1/8) only while that keeps at least this many times the pixels asked
#: for on each side, so that the resize after it still averages several pixels into one (as PIL's thumbnail does).
DRAFT_GAP = 2


@dataclass(frozen=True)
class Resized:
    """An image read straight to its prepared size: ``image`` (float (3, h, w) in [0, 1], or uint8 (h, w) for grey),
    and ``source_hw``, the (H, W) it has at full size, turned as its EXIF orientation says."""

    image: Tensor
    source_hw: tuple[int, int]


def read_resized(source: str | Path | bytes, size: int, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None,
                 formats: Sequence[str] = INPUT_FORMATS, limits: SizeLimits = DEFAULT_LIMITS,
                 mode: str = "RGB") -> Resized:
    """Read an image at a shorter side of ``size`` (0: as it is) without holding it in float at full size: its header
    is checked first (format, ``max_pixels`` as sent, ``limits`` once resized), a JPEG decodes at a reduced scale
    where that keeps :data:`DRAFT_GAP` times the size (PIL's draft mode), and the resize (antialiased bilinear) runs
    on the 8-bit image before it becomes float. ``mode`` is "RGB" (a float (3, h, w) image) or "L" (uint8 (h, w))."""
    label = name or (str(source) if not isinstance(source, bytes) else "image")
    with io.BytesIO(source) if isinstance(source, bytes) else open_file(source, label) as fp:
        img = _open_header(fp, label, max_pixels, formats)
        sent_w, sent_h = img.size
        check_prepared((sent_h, sent_w), size, False, limits, label)
        _draft(img, size)
        img = _load(img, label, mode)
    turned = sent_w != sent_h and (img.width > img.height) != (sent_w > sent_h)  # by its EXIF orientation
    source_hw = (sent_w, sent_h) if turned else (sent_h, sent_w)
    img = _resized(img, prepared_size(source_hw, size, False))  # the image at full size is let go here
    pixels = _pixels(img)
    del img
    return Resized(pixels if mode == "L" else to_tensor(pixels.permute(2, 0, 1)), source_hw)


def _draft(img: Image.Image, size: int) -> None:
    """Have a JPEG opened as ``img`` (not loaded yet) decode at the most reduced scale that keeps :data:`DRAFT_GAP`
    times the shorter side ``size`` (0: full scale)."""
    if size and img.format == "JPEG":
        h, w = prepared_size((img.height, img.width), size, False)
        img.draft(None, (w * DRAFT_GAP, h * DRAFT_GAP))


def decoded_pixels(data: bytes, size: int, formats: Sequence[str] = INPUT_FORMATS) -> int:
    """How many pixels :func:`read_resized` decodes of the image ``data`` at a shorter side of ``size``: all of them,
    or a quarter, a 16th or a 64th for a JPEG decoded at reduced scale. Only the header is read."""
    with io.BytesIO(data) as fp, _open_header(fp, "image", 2**62, formats) as img:
        _draft(img, size)
        return img.width * img.height


def _resized(img: Image.Image, hw: tuple[int, int]) -> Image.Image:
    """``img`` at (H, W) ``hw``, resized in 8 bits (antialiased bilinear) when it has another size."""
    return img if img.size == (hw[1], hw[0]) else img.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)


def _pixels(img: Image.Image) -> Tensor:
    """The pixels of an 8-bit PIL image as uint8 (H, W) or (H, W, C)."""
    return torch.from_numpy(np.array(img))


def resize_grey(img: Tensor, hw: tuple[int, int]) -> Tensor:
    """A uint8 (H, W) image at (H, W) ``hw``, resized in 8 bits as :func:`read_resized` resizes."""
    return img if tuple(img.shape) == tuple(hw) else _pixels(_resized(Image.fromarray(img.numpy()), hw))



def prepare(img: Tensor, size: int, crop: bool, limits: SizeLimits = DEFAULT_LIMITS, label: str = "image") -> Tensor:
    """Resize by the shorter side, then optionally center-crop to a square; the result is checked against
    ``limits`` before resizing (see :func:`check_prepared`)."""
    check_prepared(tuple(img.shape[-2:]), size, crop, limits, label)
    img = resize_shorter(img, size)
    return center_crop(img, size) if crop else img


def to_uint8(img: Tensor) -> Tensor:
    """Quantise like torchvision's save_image: clamp to [0,1], x255, +0.5, truncate."""
    return img.detach().float().clamp(0, 1).mul(255).add_(0.5).to(torch.uint8).cpu()


def to_pil(img: Tensor) -> Image.Image:
    """Float (3, H, W) in [0, 1] -> 8-bit RGB PIL image."""
    return Image.fromarray(to_uint8(img).permute(1, 2, 0).numpy())


def encode_image(img: Tensor, fmt: str = "png", quality: int = 95) -> bytes:
    """Encode float (3, H, W) as PNG, JPEG or WebP bytes."""
    pil_format, _ = OUTPUT_FORMATS[fmt]
    buf = io.BytesIO()
    kwargs = {"quality": quality} if fmt in ("jpeg", "webp") else {}
    to_pil(img).save(buf, format=pil_format, **kwargs)
    return buf.getvalue()


def save_image(img: Tensor, path: str | Path, quality: int = 95) -> None:
    """Write ``img`` to ``path`` atomically, format from the extension."""
    path = Path(path)
    data = encode_image(img, output_format(path), quality)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
    except OSError as exc:
        raise ImageError(f"{path}: cannot write ({exc.strerror or exc})") from None
