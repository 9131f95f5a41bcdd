"""From uploaded bytes to validated work: decoding, limits, stored styles (runs on the decode threads).

Images are recognised by content, their pixel count is checked from the header
before decoding (413), and the stylize arguments are checked by the same
library function the CLI uses (``adain.stylizer.prepare_content``), so the
service computes exactly what ``adain stylize`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath

from torch import Tensor

from adain.errors import clip
from adain.images import check_prepared, open_image, read_image, to_tensor
from adain.masks import read_masks
from adain.stylizer import ColorMode, check_alpha, prepare_content

from .errors import ServiceError
from .forms import StylizeForm
from .jobs import RenderJob, StyleRef
from .media import thumbnail
from .settings import Settings
from .store_types import StyleStore

StatsKey = Callable[[int, ColorMode], str]


def _not_empty(data: bytes, label: str) -> bytes:
    if not data:
        raise ServiceError(422, "empty_file", f"{label}: the file is empty")
    return data


def decode(data: bytes, label: str, settings: Settings) -> Tensor:
    """An uploaded image as float (3, H, W); 413/415/422 when it is too large, not an image or corrupt."""
    return read_image(_not_empty(data, label), settings.max_pixels, label, settings.pil_formats)


def decode_style(data: bytes, label: str, style_size: int, settings: Settings) -> Tensor:
    """A style image, decoded and checked at the size it will be resized to (413/422 before any resizing)."""
    image = decode(data, label, settings)
    check_prepared(tuple(image.shape[-2:]), style_size, False, settings.limits, label)
    return image


def _size(value: int | None, default: int, name: str, settings: Settings) -> int:
    size = default if value is None else value
    if size > settings.max_size:
        raise ServiceError(422, "invalid_request", f"{name} must be at most {settings.max_size}, got {clip(size)}")
    return size


def _stored_style(style_id: str, preserve_color: ColorMode, style_size: int, store: StyleStore,
                  stats_key: StatsKey, settings: Settings) -> StyleRef:
    """Stored statistics when they fit the request (coral depends on the content: never), else the stored image."""
    if preserve_color != "coral":
        stats = store.stats(style_id, stats_key(style_size, preserve_color))
        if stats is not None:
            return StyleRef(stats=stats)
    image = store.image(style_id)
    if image is None:
        raise ServiceError(422, "unknown_style", f"there is no stored style {clip(style_id)!r}")
    return StyleRef(image=decode_style(image, f"style {style_id}", style_size, settings))


def render_job(form: StylizeForm, content: bytes, styles: list[bytes], masks: list[bytes], settings: Settings,
               store: StyleStore, stats_key: StatsKey) -> RenderJob:
    """Decode and check a stylize request."""
    n = form.n_styles
    if n == 0:
        raise ServiceError(422, "invalid_request", "give at least one style: a style file or a style_id")
    if n > settings.max_styles:
        raise ServiceError(422, "too_many_styles", f"{n} styles given; at most {settings.max_styles} are allowed")
    content_size = _size(form.content_size, settings.content_size, "content_size", settings)
    style_size = _size(form.style_size, settings.style_size, "style_size", settings)
    alpha = check_alpha(form.alpha)
    refs = [StyleRef(image=decode_style(data, f"style {i + 1}", style_size, settings)) for i, data in enumerate(styles)]
    refs += [_stored_style(sid, form.preserve_color, style_size, store, stats_key, settings) for sid in form.style_ids]
    image = decode(content, "content", settings)
    mask = None
    if masks:
        sources = [_not_empty(data, f"mask {i + 1}") for i, data in enumerate(masks)]
        mask = read_masks(sources, n, settings.max_pixels, settings.pil_formats)
    prepared, weights, fitted = prepare_content(image, n, form.weights, form.preserve_color, mask, content_size,
                                                limits=settings.limits)
    return RenderJob(prepared, refs, weights, alpha, fitted, form.preserve_color, style_size)


@dataclass
class DecodedStyle:
    """An uploaded style, decoded: the tensor to encode, its size and its thumbnail."""

    image: Tensor
    width: int
    height: int
    thumbnail: bytes


def style_upload(data: bytes, settings: Settings) -> DecodedStyle:
    """Decode and check an image sent to POST /v1/styles."""
    img = open_image(_not_empty(data, "image"), settings.max_pixels, "image", formats=settings.pil_formats)
    check_prepared((img.height, img.width), settings.style_size, False, settings.limits, "image")
    return DecodedStyle(to_tensor(img), img.width, img.height, thumbnail(img))


def style_name(name: str | None, filename: str | None) -> str:
    """The name to show: the one given, else the file's stem, else 'style'; printable, at most 100 characters."""
    raw = name if name and name.strip() else PurePath(filename or "").stem
    clean = "".join(ch for ch in raw if ch.isprintable()).strip()[:100]
    return clean or "style"
