"""From uploaded bytes to validated work, in two steps (both on the decode threads).

``plan_job`` reads the images' headers only: formats are recognised by
content, pixel counts are checked as uploaded and as resized (413/422), stored
styles are looked up, and what the work will cost is known, so that admission
control can refuse it before a single pixel is decoded. ``render_job`` then
decodes and checks the stylize arguments into the library's own
``adain.stylizer.Stylization``, which the worker runs as ``Stylizer.stylize``
does, so the service computes exactly what ``adain stylize`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import TypeVar

from torch import Tensor

from adain import ops
from adain.errors import clip
from adain.images import (
    check_prepared,
    decoded_pixels,
    encode_image,
    image_size,
    read_resized,
    scaled_size,
    style_read_size,
)
from adain.masks import fitted_masks, read_mask_images
from adain.options import check_grain, check_style_scale
from adain.stylizer import ColorMode, StyleRef, check_alpha

from ..errors import ServiceError
from ..runtime import memory
from ..runtime.jobs import RenderJob, prepared_pixels, style_pixels
from ..settings import Settings
from ..store.interface import StyleStore
from .forms import StyleFields, StylizeForm
from .media import THUMBNAIL_QUALITY, thumbnail_side

StatsKey = Callable[[int, ColorMode], str]


def _not_empty(data: bytes, label: str) -> bytes:
    if not data:
        raise ServiceError(422, "empty_file", f"{label}: the file is empty")
    return data


@dataclass
class Source:
    """An image not decoded yet: its bytes, its (H, W) as its header states them, and how many pixels reading it at
    the size asked for decodes (fewer than it has for a JPEG decoded at reduced scale)."""

    data: bytes
    label: str
    hw: tuple[int, int]
    decoded: int

    @property
    def pixels(self) -> int:
        return self.hw[0] * self.hw[1]


def source(data: bytes, label: str, size: int, settings: Settings, scale: float = 1.0) -> Source:
    """An image checked from its header alone: an accepted format (415), at most ``--max-pixels`` as sent and once
    resized to ``size`` times ``scale`` (413), sides not too far apart then (422); an empty file is 422."""
    hw = image_size(_not_empty(data, label), settings.max_pixels, label, settings.pil_formats)
    check_prepared(hw, scaled_size(hw, size, scale), False, settings.limits, label)
    return Source(data, label, hw, decoded_pixels(data, style_read_size(size, scale), settings.pil_formats))


def decode_source(src: Source, size: int, settings: Settings) -> Tensor:
    """The image as float (3, h, w) at a shorter side of ``size`` (0: as it is), never held in float at full size
    (``adain.images.read_resized``); 422 when it turns out truncated or corrupt."""
    return read_resized(src.data, size, settings.max_pixels, src.label, settings.pil_formats, settings.limits).image


@dataclass
class Plan:
    """A stylize request checked before any pixel is decoded; styles are images to decode or stored statistics."""

    content: Source
    styles: list[Source | ops.Stats]
    masks: list[Source]
    content_size: int
    style_size: int
    alpha: float
    style_scale: float = 1.0
    grain: float | None = None  # None: the server's

    @property
    def _images(self) -> list[Source]:
        return [s for s in self.styles if isinstance(s, Source)]

    @property
    def pixels(self) -> int:
        """What the networks will see (``RenderJob.pixels`` once decoded): the content and the style images to
        encode, as prepared."""
        return prepared_pixels(self.content.hw, self.content_size) + sum(
            style_pixels(s.hw, self.style_size, self.style_scale) for s in self._images)

    @property
    def decoded_pixels(self) -> int:
        """What ``--megapixels-per-minute`` charges: the content as prepared, the style images as sent."""
        return prepared_pixels(self.content.hw, self.content_size) + sum(s.pixels for s in self._images)

    @property
    def memory(self) -> int:
        """Bytes the request may hold at once, from the headers (see service.runtime.memory)."""
        content = (self.content.decoded, prepared_pixels(self.content.hw, self.content_size))
        styles = [(s.decoded, style_pixels(s.hw, self.style_size, self.style_scale)) for s in self._images]
        return memory.Images(content, styles, [m.pixels for m in self.masks], len(self.styles)).bytes()


def _size(value: int | None, default: int, name: str, settings: Settings) -> int:
    size = default if value is None else value
    if size > settings.max_size:
        raise ServiceError(422, "invalid_request", f"{name} must be at most {settings.max_size}, got {clip(size)}")
    return size


def _style_scale(value: float, style_size: int, settings: Settings) -> float:
    """The request's style_scale, checked (422), with style_size x style_scale at most ``--max-size``."""
    scale = check_style_scale(value)
    if style_size * scale > settings.max_size:
        raise ServiceError(422, "invalid_request", f"style_size x style_scale must be at most {settings.max_size}, "
                                                   f"got {style_size} x {scale:g}")
    return scale


def stored_image(style_id: str, style_size: int, style_scale: float, store: StyleStore, settings: Settings) -> Source:
    """A stored style's image, checked as an uploaded one is; 422 when ``store`` (the key's view: its own styles and
    the public ones) has no such style."""
    image = store.image(style_id)
    if image is None:
        raise ServiceError(422, "unknown_style", f"there is no stored style {clip(style_id)!r}")
    return source(image, f"style {style_id}", style_size, settings, style_scale)


def _stored_style(style_id: str, preserve_color: ColorMode, style_size: int, style_scale: float, store: StyleStore,
                  stats_key: StatsKey, settings: Settings) -> Source | ops.Stats:
    """Stored statistics when they fit the request (coral depends on the content, and they were taken at scale 1:
    never), else the stored image."""
    if preserve_color != "coral" and style_scale == 1:
        stats = store.stats(style_id, stats_key(style_size, preserve_color))
        if stats is not None:
            return stats
    return stored_image(style_id, style_size, style_scale, store, settings)


Stored = TypeVar("Stored", Source, Source | ops.Stats)  # what a stored style is taken as


@dataclass(frozen=True)
class Sizes:
    """A request's sizes, checked: content and style shorter sides, and the style scale."""

    content: int
    style: int
    style_scale: float


def checked_sizes(form: StyleFields, settings: Settings) -> Sizes:
    """The counts and sizes of a request's styles checked (422): at least one style and at most ``--max-styles``,
    content_size and style_size at most ``--max-size`` (their defaults the server's), style_scale in range."""
    n = form.n_styles
    if n == 0:
        raise ServiceError(422, "invalid_request", "give at least one style: a style file or a style_id")
    if n > settings.max_styles:
        raise ServiceError(422, "too_many_styles", f"{n} styles given; at most {settings.max_styles} are allowed")
    content_size = _size(form.content_size, settings.content_size, "content_size", settings)
    style_size = _size(form.style_size, settings.style_size, "style_size", settings)
    return Sizes(content_size, style_size, _style_scale(form.style_scale, style_size, settings))


def style_sources(uploads: list[bytes], style_ids: list[str], sizes: Sizes, settings: Settings,
                  stored: Callable[[str], Stored]) -> list[Source | Stored]:
    """The uploaded styles checked from their headers (:func:`source`), then the stored ones as ``stored`` finds
    them."""
    refs: list[Source | Stored] = [source(data, f"style {i + 1}", sizes.style, settings, sizes.style_scale)
                                   for i, data in enumerate(uploads)]
    return refs + [stored(sid) for sid in style_ids]


def mask_sources(masks: list[bytes], sizes: Sizes, settings: Settings) -> list[Source]:
    """The mask images checked from their headers, at the content's size."""
    return [source(data, f"mask {i + 1}", sizes.content, settings) for i, data in enumerate(masks)]


def plan_job(form: StylizeForm, content: bytes, styles: list[bytes], masks: list[bytes], settings: Settings,
             store: StyleStore, stats_key: StatsKey) -> Plan:
    """Check a stylize request as far as can be done without decoding: counts, sizes, alpha, the images' headers
    (masks too) and the stored styles."""
    sizes = checked_sizes(form, settings)
    alpha = check_alpha(form.alpha)
    grain = None if form.grain is None else check_grain(form.grain)
    refs = style_sources(styles, form.style_ids, sizes, settings, lambda sid: _stored_style(
        sid, form.preserve_color, sizes.style, sizes.style_scale, store, stats_key, settings))
    return Plan(source(content, "content", sizes.content, settings), refs, mask_sources(masks, sizes, settings),
                sizes.content, sizes.style, alpha, sizes.style_scale, grain)


def render_job(plan: Plan, form: StylizeForm, settings: Settings) -> RenderJob:
    """Decode a planned stylize request straight to its prepared sizes and check the rest of its arguments (weights,
    masks): the work holds only the resized images."""
    size = style_read_size(plan.style_size, plan.style_scale)
    refs = [StyleRef(stats=s) if isinstance(s, ops.Stats) else StyleRef(image=decode_source(s, size, settings))
            for s in plan.styles]
    content = read_resized(plan.content.data, plan.content_size, settings.max_pixels, plan.content.label,
                           settings.pil_formats, settings.limits)
    mask = None
    if plan.masks:
        images, labels = read_mask_images([m.data for m in plan.masks], settings.max_pixels, settings.pil_formats)
        mask = fitted_masks(images, form.n_styles, content.source_hw, plan.content_size, labels=labels,
                            limits=settings.limits)
    return RenderJob.checked(content.image, refs, form.weights, plan.alpha, form.preserve_color, mask,
                             plan.content_size, plan.style_size, style_scale=plan.style_scale, limits=settings.limits,
                             grain=plan.grain)


@dataclass
class DecodedStyle:
    """An uploaded style, decoded: the tensor to encode, its size and its thumbnail."""

    image: Tensor
    width: int
    height: int
    thumbnail: bytes


def style_upload(src: Source, settings: Settings) -> DecodedStyle:
    """Decode an image sent to POST /v1/styles (checked by :func:`source` at ``--style-size``): at ``--style-size``
    to encode, and again at most THUMBNAIL_SIZE a side for its thumbnail."""
    style = read_resized(src.data, settings.style_size, settings.max_pixels, src.label, settings.pil_formats,
                         settings.limits)
    small = read_resized(src.data, thumbnail_side(src.hw), settings.max_pixels, src.label, settings.pil_formats,
                         settings.limits)
    h, w = style.source_hw
    return DecodedStyle(style.image, w, h, encode_image(small.image, "jpeg", THUMBNAIL_QUALITY))


def style_name(name: str | None, filename: str | None) -> str:
    """The name to show: the one given, else the file's stem, else 'style'; printable, at most 100 characters."""
    raw = name if name and name.strip() else PurePath(filename or "").stem
    clean = "".join(ch for ch in raw if ch.isprintable()).strip()[:100]
    return clean or "style"
