"""``Stylizer``: load the networks once, stylize many images.

    from . import Stylizer
    st = Stylizer.from_files("vgg_normalised.pth", "decoder.pth", arch="vgg19")
    out = st.stylize(content_img, [style_a, style_b], weights=[0.7, 0.3], alpha=0.8)

Images above ``tile_pixels`` pixels (default 2**21, about 1448x1448) run through the encoder and the
decoder in overlapping tiles (``adain.tiling``), with the AdaIN statistics still taken over the whole
image; ``tiling="always"`` / ``"never"`` forces or disables this.

``grain`` adds a fixed noise to the content before it is encoded, times alpha: the encoder (HED's VGG16 above all)
gives flat regions such as a sky almost constant features, which AdaIN leaves flat; with grain the decoder paints
the style's texture there too (docs/training.md, "Grain"). A decoder trained with stroke noise (``adain.strokes``)
gets the same noise in its deepest input, times alpha: flat regions get oriented marks to paint.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self

import torch
from PIL import Image
from torch import Tensor, nn

from . import ops, tiling
from .bundles.layouts import build_decoder, build_encoder, read_arch
from .devices import resolve_device
from .errors import InputError
from .images import DEFAULT_LIMITS, SizeLimits, check_prepared, prepare, scaled_size, to_tensor
from .masks import feature_masks, fit_masks
from .net import MIN_SIDE, Arch, Decoder, Encoder, channels_of
from .options import (
    TILE_PIXELS,
    TILE_SIZE,
    Tiling,
    check_alpha,
    check_grain,
    check_style_scale,
    check_tiling,
    normalised_weights,
)
from .precision import auto_precision
from .strokes import stroke_noise
from .upconv import FusedDecoder

ColorMode = Literal["none", "coral", "luminance"]
COLOR_MODES: tuple[str, ...] = ("none", "coral", "luminance")
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
ImageLike = Image.Image | Tensor

log = logging.getLogger("adain.stylizer")

#: Seed of the grain's noise: every image of one size gets the same noise, so results are reproducible, tiles agree
#: with the whole image and the frames of a video share it (no flicker).
GRAIN_SEED = 0


def check_weights(weights: Sequence[float] | None, n_styles: int) -> Tensor:
    """Validate style weights and normalise them to sum to one (equal when None), as float64 (S,)."""
    return torch.tensor(normalised_weights(weights, n_styles), dtype=torch.float64)


def prepare_content(content: ImageLike, n_styles: int, weights: Sequence[float] | None = None,
                    preserve_color: ColorMode = "none", mask: Tensor | None = None, content_size: int = 0,
                    crop: bool = False, limits: SizeLimits = DEFAULT_LIMITS) -> tuple[Tensor, Tensor, Tensor | None]:
    """Check the stylize arguments; returns the prepared content (3, H, W), the normalised weights (S,)
    and the mask fitted to the prepared content (S, H, W), or None. The prepared size is checked against
    ``limits`` before anything is resized."""
    if preserve_color not in COLOR_MODES:
        raise InputError(f"preserve_color must be one of {', '.join(COLOR_MODES)}, got {preserve_color!r}")
    if mask is not None and weights is not None:
        raise InputError("weights and a mask cannot be combined: the mask decides where each style goes")
    w = check_weights(weights, n_styles)
    raw = to_tensor(content)
    check_prepared(tuple(raw.shape[-2:]), content_size, crop, limits, "content")
    masks = None
    if mask is not None:
        if mask.shape[0] != n_styles:
            raise InputError(f"the mask has {mask.shape[0]} regions for {n_styles} styles")
        masks = fit_masks(mask, tuple(raw.shape[-2:]), content_size, crop, limits)
    return prepare(raw, content_size, crop, limits, "content"), w, masks


def prepare_style(style: ImageLike, preserve_color: ColorMode = "none", content: Tensor | None = None,
                  style_size: int = 0, crop: bool = False, limits: SizeLimits = DEFAULT_LIMITS,
                  style_scale: float = 1.0) -> Tensor:
    """A style image (3, H, W) as the encoder sees it: resized to ``style_size`` times ``style_scale`` (checked
    against ``limits`` first), then matched to the prepared ``content``'s colours (coral) or made grey (luminance)."""
    raw = to_tensor(style)
    s = prepare(raw, scaled_size(tuple(raw.shape[-2:]), style_size, style_scale), crop, limits, "style")
    if preserve_color == "coral":
        return ops.coral(s, content)
    if preserve_color == "luminance":
        return ops.luminance(s)
    return s


def model_input(content: Tensor, preserve_color: ColorMode = "none") -> Tensor:
    """What the encoder sees of the prepared content: the content itself, or its luminance."""
    return ops.luminance(content) if preserve_color == "luminance" else content


def grain_noise(size: tuple[int, int], seed: int = GRAIN_SEED) -> Tensor:
    """Standard normal noise (3, H, W) for the grain of contents of ``size`` (H, W); drawn on the CPU, so every
    device gets the same."""
    return torch.randn((3, *size), generator=torch.Generator().manual_seed(seed))


def with_grain(contents: Tensor, amounts: Sequence[float]) -> Tensor:
    """Contents (N, 3, H, W) in [0, 1] plus :func:`grain_noise` times each one's amount, clipped to [0, 1]; the
    contents themselves when every amount is 0."""
    if not any(amounts):
        return contents
    noise = grain_noise(tuple(contents.shape[-2:])).to(contents.device, contents.dtype)
    scale = torch.tensor(amounts, dtype=contents.dtype, device=contents.device).view(-1, 1, 1, 1)
    return contents.add(noise * scale).clamp_(0, 1)


def finish(out: Tensor, content: Tensor, preserve_color: ColorMode = "none") -> Tensor:
    """The decoded image as delivered: for ``luminance``, with the prepared content's colours put back."""
    return ops.with_chroma_of(out, content).clamp_(0, 1) if preserve_color == "luminance" else out


def stack_stats(stats: Sequence[ops.Stats]) -> ops.Stats:
    """Per-style stats, each (C,), stacked into (S, C) for a :class:`Target`."""
    return ops.Stats(torch.stack([s.mean for s in stats]), torch.stack([s.std for s in stats]))


def tensor_digest(t: Tensor) -> str:
    """Content hash of a tensor's values and shape."""
    h = hashlib.blake2b(str(tuple(t.shape)).encode() + str(t.dtype).encode(), digest_size=16)
    h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class StatsCache:
    """Thread-safe LRU of style statistics, keyed by strings."""

    def __init__(self, max_items: int = 512) -> None:
        self.max_items = max_items
        self._items: OrderedDict[str, ops.Stats] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: str) -> ops.Stats | None:
        with self._lock:
            stats = self._items.get(key)
            if stats is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return stats

    def put(self, key: str, stats: ops.Stats) -> None:
        with self._lock:
            self._items[key] = stats
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class Target:
    """What one content image is to become: style stats (S, C) mixed by weights or by masks."""

    stats: ops.Stats
    weights: Tensor
    alpha: float = 1.0
    masks: Tensor | None = None  # (S, H, W) soft masks at image resolution
    grain: float | None = None  # None: the Stylizer's


@dataclass
class StyleRef:
    """One style of a :class:`Stylization`: its statistics (each (C,), taken as the stylization's colour mode and
    style size ask), or its image, to encode."""

    stats: ops.Stats | None = None
    image: ImageLike | None = None


@dataclass
class Stylization:
    """One content image to stylize, checked and prepared: what :meth:`Stylizer.stylize` runs, as data, so that a
    caller can build it in one place (:meth:`checked`) and run it, batched with others, in another
    (:meth:`Stylizer.stylize_batch`)."""

    content: Tensor  # prepared (3, H, W)
    styles: list[StyleRef]
    weights: Tensor  # (S,), summing to one
    alpha: float = 1.0
    masks: Tensor | None = None  # (S, H, W) fitted to the content
    preserve_color: ColorMode = "none"
    style_size: int = 0
    style_scale: float = 1.0  # the styles are resized by it after style_size
    crop: bool = False
    grain: float | None = None  # None: the Stylizer's

    @classmethod
    def checked(cls, content: ImageLike, styles: Sequence[StyleRef], weights: Sequence[float] | None = None,
                alpha: float = 1.0, preserve_color: ColorMode = "none", mask: Tensor | None = None,
                content_size: int = 0, style_size: int = 0, crop: bool = False, style_scale: float = 1.0,
                limits: SizeLimits = DEFAULT_LIMITS, grain: float | None = None) -> Self:
        """Check the stylize arguments (see :meth:`Stylizer.stylize`) and prepare the content and its mask."""
        c, w, masks = prepare_content(content, len(styles), weights, preserve_color, mask, content_size, crop, limits)
        return cls(c, list(styles), w, check_alpha(alpha), masks, preserve_color, style_size,
                   check_style_scale(style_scale), crop, None if grain is None else check_grain(grain))

    @property
    def model_input(self) -> Tensor:
        """What the encoder sees of the content (see :func:`model_input`)."""
        return model_input(self.content, self.preserve_color)

    def finish(self, out: Tensor) -> Tensor:
        """The decoded image (3, H, W) as delivered (see :func:`finish`)."""
        return finish(out, self.content, self.preserve_color)


def _check_target(t: Target, size: tuple[int, int], channels: int) -> None:
    """A Target must agree with itself, with the decoder's inputs (``channels`` statistics per style) and with
    the content size it is rendered at."""
    n = t.stats.mean.shape[0]
    if t.stats.mean.ndim != 2 or t.stats.std.shape != t.stats.mean.shape:
        raise InputError(f"target stats must be (S, C) means and stds, got {tuple(t.stats.mean.shape)} "
                         f"and {tuple(t.stats.std.shape)}")
    if t.stats.mean.shape[1] != channels:
        raise InputError(f"target stats have {t.stats.mean.shape[1]} channels; this decoder takes {channels}")
    if tuple(t.weights.shape) != (n,):
        raise InputError(f"target has {tuple(t.weights.shape)} weights for {n} styles")
    if t.masks is not None and tuple(t.masks.shape) != (n, *size):
        raise InputError(f"target masks are {tuple(t.masks.shape)}, expected {(n, *size)}")
    check_alpha(t.alpha)
    if t.grain is not None:
        check_grain(t.grain)


#: Maps the content statistics of one decoder input (its index, and the Stats of one feature map: (1, C), or
#: (1, K, C) per mask region) to those AdaIN normalises by; video smooths them over time (``adain.video``).
ContentStatsHook = Callable[[int, ops.Stats], ops.Stats]


def _restyled(f: Tensor, stats: ops.Stats, t: Target, masks: Tensor | None,
              content_stats: ContentStatsHook | None = None, level: int = 0) -> Tensor:
    """One content's feature map (1, C, h, w) given the style statistics (S, C) of ``t`` (mixed by its weights
    or its ``masks``, at image resolution), then blended with itself by ``t.alpha``. ``content_stats`` replaces
    the map's own statistics (see :data:`ContentStatsHook`)."""
    if masks is None:
        mix = ops.blend_stats(stats, t.weights)
        own = None if content_stats is None else content_stats(level, ops.channel_stats(f))
        out = ops.adain(f, ops.Stats(mix.mean[None], mix.std[None]), content_stats=own)
    else:
        fm = feature_masks(masks, tuple(f.shape[-2:]))[None]
        own = None if content_stats is None else content_stats(level, ops.masked_stats(f, fm))
        out = ops.masked_adain(f, fm, stats, content_stats=own)
    return out.mul_(t.alpha).add_(f, alpha=1.0 - t.alpha) if t.alpha < 1.0 else out


class Stylizer:
    """Encoder + decoder on a device, with a style-statistics cache.

    ``tiling``: "auto" runs images of more than ``tile_pixels`` pixels in tiles of ``tile_size``
    pixels (plus a halo), "always" tiles every image, "never" none. The three may be changed between calls
    (:meth:`set_tiling` checks them); ``tiled_passes`` counts the encoder/decoder passes run in tiles.
    ``precision="auto"`` becomes bf16 on CPUs with native bf16 and on CUDA devices that support it, else
    fp32 (``adain.precision``); ``self.precision`` is the one chosen.
    ``limits`` (a plain attribute too) bounds what ``stylize`` lets images become once prepared.
    ``grain`` (a plain attribute too; :func:`check_grain`): the noise added to every content, times its alpha
    (the module docstring), unless a stylization gives its own; by default the decoder's (:attr:`Decoder.grain`).
    The encoder passed in is set, in place, to stop at the decoder's layer (``Encoder.at``).
    """

    def __init__(self, encoder: Encoder, decoder: Decoder, device: str | torch.device = "auto",
                 precision: Precision = "fp32", cache_size: int = 512, tiling: Tiling = "auto",
                 tile_pixels: int = TILE_PIXELS, tile_size: int = TILE_SIZE, grain: float | None = None) -> None:
        if encoder.arch != decoder.arch:
            raise InputError(f"encoder is {encoder.arch} but decoder is {decoder.arch}")
        if precision != "auto" and precision not in PRECISIONS:
            raise InputError(f"precision must be one of auto, {', '.join(PRECISIONS)}, got {precision!r}")
        self.set_tiling(tiling, tile_pixels, tile_size)
        self.tiled_passes = 0
        self.device = resolve_device(device)
        if precision == "auto":
            precision = auto_precision(self.device.type, self.device.type == "cuda" and torch.cuda.is_bf16_supported())
        if precision == "fp16" and self.device.type != "cuda":
            raise InputError("fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
        self.arch: Arch = encoder.arch
        self.precision = precision
        fmt = torch.channels_last
        self.encoder = encoder.at(decoder.layer).to(self.device, memory_format=fmt).eval()
        self.decoder = decoder.to(self.device, memory_format=fmt).eval().requires_grad_(False)
        self.decoder_fused: nn.Module = FusedDecoder(self.decoder)  # what decodes (adain.upconv); same results
        self.cache = StatsCache(cache_size)
        self.limits = DEFAULT_LIMITS  # what images may become once prepared (checked before resizing)
        self.grain = check_grain(decoder.grain if grain is None else grain)
        self._local = threading.local()  # each thread's safe-point check (see safe_points)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    @classmethod
    def from_files(cls, encoder_path: str | Path, decoder_path: str | Path, arch: Arch | None = None,
                   **kwargs) -> Stylizer:
        """Build from weight files (.pth or .safetensors); ``arch`` defaults to the file's own, else vgg19."""
        arch = arch or read_arch(encoder_path) or read_arch(decoder_path) or "vgg19"
        return cls(build_encoder(encoder_path, arch), build_decoder(decoder_path, arch), **kwargs)

    def set_tiling(self, tiling: Tiling, tile_pixels: int = TILE_PIXELS, tile_size: int = TILE_SIZE) -> None:
        """Check and set the three tiling options (see the class docstring); InputError when they are not valid."""
        check_tiling(tiling, tile_pixels, tile_size)
        self.tiling, self.tile_pixels, self.tile_size = tiling, int(tile_pixels), int(tile_size)

    # ---- building blocks ------------------------------------------------

    def tile_for(self, size: tuple[int, int]) -> int:
        """The tile side an image of ``size`` (H, W) runs with, or 0 when it runs whole."""
        if self.tiling == "never" or (self.tiling == "auto" and size[0] * size[1] <= self.tile_pixels):
            return 0
        return self.tile_size

    def _encoder_pass(self, images: Tensor) -> list[Tensor]:
        """The feature maps of the decoder's inputs of device images (N, 3, H, W), whole or in tiles."""
        tile = self.tile_for(tuple(images.shape[-2:]))
        if not tile:
            return self.encoder.levels(images, self.decoder.inputs)
        self.tiled_passes += 1
        log.debug("encoding %dx%d in tiles of %d px", images.shape[-1], images.shape[-2], tile)
        return tiling.encode_tiled(self.encoder, images, tile, between=self._safe_point, inputs=self.decoder.inputs)

    def _decoder_pass(self, feats: list[Tensor], size: tuple[int, int]) -> Tensor:
        """Decode the feature maps of the decoder's inputs to images of ``size`` (H, W), whole or in tiles."""
        tile = self.tile_for(size)
        if not tile:
            return self.decoder_fused(feats, size)
        self.tiled_passes += 1
        log.debug("decoding %dx%d in tiles of %d px", size[1], size[0], tile)
        return tiling.decode_tiled(self.decoder_fused, feats, size, tile, between=self._safe_point)

    @contextlib.contextmanager
    def safe_points(self, check: Callable[[], None]) -> Iterator[None]:
        """Call ``check`` at every safe point of the work this thread does in the block: between the encoder,
        AdaIN and the decoder, and between tiles. An exception it raises abandons the work."""
        self._local.check = check
        try:
            yield
        finally:
            self._local.check = None

    def _safe_point(self) -> None:
        check = getattr(self._local, "check", None)
        if check is not None:
            check()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=PRECISIONS[self.precision])

    def _to_device(self, img: Tensor, what: str) -> Tensor:
        if img.ndim == 3:
            img = img[None]
        h, w = img.shape[-2:]
        if min(h, w) < MIN_SIDE:
            raise InputError(f"the {what} is {w}x{h} pixels as prepared; each side needs at least {MIN_SIDE}")
        return img.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)

    @property
    def stats_channels(self) -> int:
        """Statistics per style: the channels of every decoder input (the AdaIN layer and its skips)."""
        return sum(channels_of(name) for name in self.decoder.inputs)

    @torch.inference_mode()
    def encode(self, images: Tensor) -> list[Tensor]:
        """The feature maps AdaIN works on (the decoder's inputs: relu4_1 or its shallower layer, after the
        skips' layers when it has any) of (N, 3, H, W) images."""
        with self._autocast():
            return self._encoder_pass(self._to_device(images, "style image"))

    @torch.inference_mode()
    def compute_stats(self, style: Tensor) -> ops.Stats:
        """Channel stats of one prepared style image (3, H, W) at every decoder input, concatenated (each
        (:attr:`stats_channels`,)), on the device."""
        levels = [ops.channel_stats(f) for f in self.encode(style)]
        return ops.Stats(torch.cat([s.mean[0] for s in levels]), torch.cat([s.std[0] for s in levels]))

    @torch.inference_mode()
    def render(self, contents: Tensor, targets: Sequence[Target],
               content_stats: ContentStatsHook | None = None) -> Tensor:
        """Stylize a batch of prepared contents (N, 3, H, W) -> (N, 3, H, W) in [0, 1]. ``content_stats``: what
        AdaIN normalises each content by instead of its own statistics (:data:`ContentStatsHook`; video)."""
        if contents.ndim == 3:
            contents = contents[None]
        if len(targets) != contents.shape[0]:
            raise InputError("one target per content image is needed")
        size = tuple(contents.shape[-2:])
        for t in targets:
            _check_target(t, size, self.stats_channels)
        grains = [(self.grain if t.grain is None else t.grain) * t.alpha for t in targets]
        images = with_grain(self._to_device(contents, "content image"), grains)
        with self._autocast():
            levels: list[Tensor | None] = list(self._encoder_pass(images))
            self._safe_point()
            channels = [f.shape[1] for f in levels]
            per_target = [(ops.split_stats(ops.Stats(t.stats.mean.to(self.device), t.stats.std.to(self.device)),
                                           channels),
                           None if t.masks is None else t.masks.to(self.device, torch.float32),
                           (*self.decoder.skip_gains(t.alpha), 1.0)) for t in targets]
            # Level by level, each map let go of once restyled: with skips, the full-resolution relu1_1 of a large
            # image would otherwise be held several times over.
            for level in range(len(levels)):
                feats, mixed = levels[level], []
                levels[level] = None
                for i, (t, (stats, masks, gains)) in enumerate(zip(targets, per_target, strict=True)):
                    f = _restyled(feats[i: i + 1], stats[level], t, masks, content_stats, level)
                    mixed.append(f.mul_(gains[level]) if gains[level] != 1.0 else f)
                del feats
                levels[level] = mixed[0] if len(mixed) == 1 else torch.cat(mixed)
                del mixed
            amounts = [self.decoder.strokes * t.alpha for t in targets]
            if any(amounts):
                levels[-1] = levels[-1] + stroke_noise(levels[-1], amounts)
            self._safe_point()
            result = self._decoder_pass(levels, size)
        return result.float().clamp_(0, 1)

    # ---- the whole pipeline ----------------------------------------------

    def stylize(
        self,
        content: ImageLike,
        styles: Sequence[ImageLike],
        weights: Sequence[float] | None = None,
        alpha: float = 1.0,
        preserve_color: ColorMode = "none",
        mask: Tensor | None = None,
        content_size: int = 0,
        style_size: int = 0,
        crop: bool = False,
        style_scale: float = 1.0,
        grain: float | None = None,
    ) -> Tensor:
        """Stylize one content image with one or more styles; returns (3, H, W) in [0, 1] on the CPU.

        ``mask`` (S, H, W) assigns regions of the content (at its original size, the prepared size, or that shape)
        to the styles; then ``weights`` must be None. ``style_scale`` (0.25 to 4) resizes the styles by that factor
        after ``style_size``: above 1 their strokes come out larger, below 1 finer. ``grain``: this image's, instead
        of the Stylizer's (the module docstring).
        """
        job = Stylization.checked(content, [StyleRef(image=s) for s in styles], weights, alpha, preserve_color, mask,
                                  content_size, style_size, crop, style_scale, self.limits, grain)
        return self.stylize_batch([job])[0]

    def stylize_batch(self, batch: Sequence[Stylization]) -> list[Tensor]:
        """Run stylizations whose contents have one size as one batch; each result is (3, H, W) in [0, 1] on the
        CPU, as :meth:`stylize` returns it. Each style's statistics are taken once (:meth:`style_stats`)."""
        targets = [Target(stack_stats([self._stats_of(job, ref) for ref in job.styles]), job.weights, job.alpha,
                          job.masks, job.grain) for job in batch]
        out = self.render(torch.stack([job.model_input for job in batch]), targets).cpu()
        return [job.finish(image) for job, image in zip(batch, out, strict=True)]

    def _stats_of(self, job: Stylization, ref: StyleRef) -> ops.Stats:
        """A style's statistics for ``job``, on the device: as given, or taken from its image."""
        if ref.stats is not None:
            return ops.Stats(ref.stats.mean.to(self.device), ref.stats.std.to(self.device))
        return self.style_stats(ref.image, job.preserve_color, job.content, job.style_size, job.crop, job.style_scale)

    def style_stats(self, style: ImageLike, preserve_color: ColorMode = "none", content: Tensor | None = None,
                    style_size: int = 0, crop: bool = False, style_scale: float = 1.0) -> ops.Stats:
        """Stats of a style image as it will be used; cached by its pixels, size, scale and colour mode.

        ``content`` (the prepared content image) is needed for ``coral``.
        """
        raw = to_tensor(style)
        content_key = tensor_digest(content) if preserve_color == "coral" else ""
        key = f"{tensor_digest(raw)}:{style_size}:{style_scale}:{int(crop)}:{preserve_color}:{content_key}"
        stats = self.cache.get(key)
        if stats is None:
            stats = self.compute_stats(prepare_style(raw, preserve_color, content, style_size, crop, self.limits,
                                                     style_scale))
            self.cache.put(key, stats)
        return stats
