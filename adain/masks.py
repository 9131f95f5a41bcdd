"""Spatial control: masks that assign regions of the content to styles.

A mask is kept as soft weights ``(K, H, W)`` that sum to one at every pixel,
one channel per style. It can be given as

* one label image: 8-bit grey or palette values ``0..K-1`` name the style of
  each pixel; with two styles, any grey image works too (black = first style,
  white = second, grey in between blends them) unless all its values are at
  most ``LABEL_MAX``: that is a label image, and labels >= K are an error;
* K grey images, one per style, whose intensities are the weights (normalised
  per pixel; where all are zero the styles share equally).

Its size is the content's (it is resized and cropped with the content), the content's as prepared (the
output's: taken as it is), or the content's shape at any other size (resized to the prepared content).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import InputError
from .images import (
    DEFAULT_LIMITS,
    DEFAULT_MAX_PIXELS,
    INPUT_FORMATS,
    SizeLimits,
    center_crop,
    check_prepared,
    open_image,
    prepare,
    prepared_size,
    resize_grey,
    resize_to,
)

#: A single grey mask whose values are all at most this is read as a label image.
LABEL_MAX = 15


def _check_labels(labels: Tensor, n_styles: int) -> None:
    bad = labels.max().item()
    if bad >= n_styles or labels.min().item() < 0:
        raise InputError(f"mask has label {bad}, but there are only {n_styles} styles (labels 0..{n_styles - 1})")


def labels_to_masks(labels: Tensor, n_styles: int) -> Tensor:
    """Integer label map (H, W) -> one-hot masks (K, H, W)."""
    _check_labels(labels, n_styles)
    return F.one_hot(labels.long(), n_styles).permute(2, 0, 1).float()


def normalise(weights: Tensor) -> Tensor:
    """Soft masks (K, H, W) >= 0 -> weights summing to one per pixel."""
    total = weights.sum(0, keepdim=True)
    even = torch.full_like(weights, 1.0 / weights.shape[0])
    return torch.where(total > 0, weights / total.clamp_min(1e-12), even)


def mask_weights(images: Sequence[Tensor], n_styles: int, labels: bool = False) -> Iterator[Tensor]:
    """One uint8 weight image (H, W) per style, 255 where it is all that style (see the module doc): a label image's
    pixels of each label (``labels``: the image holds labels whatever its values, as a palette image's indices do),
    255 - grey and grey for one grey image and two styles, or the grey masks themselves. Checked before the
    first is made; each is made when it is asked for."""
    if len(images) == 1:
        grey = images[0]
        if labels or int(grey.max()) < max(n_styles, LABEL_MAX + 1):
            _check_labels(grey, n_styles)
            return ((grey == k).to(torch.uint8) * 255 for k in range(n_styles))
        if n_styles == 2:
            return iter([255 - grey, grey])
        values = sorted(set(torch.unique(grey).tolist()))[:8]
        raise InputError(
            f"mask values {values}... do not name {n_styles} styles: use labels 0..{n_styles - 1} "
            f"or give one grey mask per style"
        )
    if len(images) != n_styles:
        raise InputError(f"{len(images)} masks given for {n_styles} styles: give one label image or one mask per style")
    shapes = {tuple(m.shape) for m in images}
    if len(shapes) != 1:
        raise InputError(f"the per-style masks differ in size: {sorted(shapes)}")
    return iter(images)


def masks_from_images(images: Sequence[Tensor], n_styles: int, labels: bool = False) -> Tensor:
    """uint8 grey images (H, W) -> soft masks (K, H, W); see the module doc and :func:`mask_weights`."""
    return normalise(torch.stack([w.float() / 255 for w in mask_weights(images, n_styles, labels)]))


def read_mask_images(sources: Sequence[str | Path | bytes], max_pixels: int = DEFAULT_MAX_PIXELS,
                     formats: Sequence[str] = INPUT_FORMATS) -> tuple[list[Tensor], bool]:
    """The mask files as uint8 (H, W) images, and whether they are labels whatever their values (a single palette
    image, whose indices are read)."""
    images = []
    for i, src in enumerate(sources):
        img = open_image(src, max_pixels, name=f"mask {i + 1}" if isinstance(src, bytes) else None, mode=None,
                         formats=formats)
        if img.mode == "P" and len(sources) == 1:  # a palette image's indices are labels
            return [torch.from_numpy(np.asarray(img).copy())], True
        images.append(torch.from_numpy(np.asarray(img.convert("L")).copy()))
    return images, False


def read_masks(sources: Sequence[str | Path | bytes], n_styles: int,
               max_pixels: int = DEFAULT_MAX_PIXELS, formats: Sequence[str] = INPUT_FORMATS) -> Tensor:
    """Read one label image or one grey mask per style into soft masks (K, H, W)."""
    images, labels = read_mask_images(sources, max_pixels, formats)
    return masks_from_images(images, n_styles, labels)


def fitted_masks(images: Sequence[Tensor], n_styles: int, content_hw: tuple[int, int], size: int, crop: bool = False,
                 labels: bool = False, limits: SizeLimits = DEFAULT_LIMITS) -> Tensor:
    """Soft masks (K, h, w) fitted to the content as prepared, as :func:`fit_masks` fits them, from the masks' 8-bit
    images (:func:`read_mask_images`). Masks of the content's size, the largest, are fitted without a float mask at
    that size: each style's weight image (:func:`mask_weights`) is resized in 8 bits, then they are normalised."""
    if tuple(images[0].shape) != tuple(content_hw):
        return fit_masks(masks_from_images(images, n_styles, labels), content_hw, size, crop, limits)
    check_prepared(content_hw, size, crop, limits, "mask")
    hw = prepared_size(content_hw, size, False)
    masks = normalise(torch.stack([resize_grey(w, hw).float() / 255 for w in mask_weights(images, n_styles, labels)]))
    return center_crop(masks, size) if crop else masks


def fit_masks(masks: Tensor, content_hw: tuple[int, int], size: int, crop: bool,
              limits: SizeLimits = DEFAULT_LIMITS) -> Tensor:
    """Masks (K, H, W) fitted to the content as prepared (resized to ``size``, cropped): a mask of the content's size
    is resized and cropped exactly like the content, one of the prepared size is taken as it is, and one of the
    content's shape at another size (sides within a pixel) is resized to the content's resized size, then cropped."""
    mask_hw, content_hw = tuple(masks.shape[-2:]), tuple(content_hw)
    out_hw = prepared_size(content_hw, size, crop)
    if mask_hw == content_hw:
        return prepare(masks, size, crop, limits, "mask") if size or crop else masks
    if mask_hw == out_hw:
        return masks
    same_shape = prepared_size(content_hw, min(mask_hw), False)
    if any(abs(a - b) > 1 for a, b in zip(same_shape, mask_hw, strict=True)):
        raise InputError(f"mask is {mask_hw[1]}x{mask_hw[0]} but the content image is {content_hw[1]}x{content_hw[0]} "
                         f"({out_hw[1]}x{out_hw[0]} as prepared); give a mask of either size, or of the same shape")
    resized = resize_to(masks, prepared_size(content_hw, size, False))
    return center_crop(resized, size) if crop else resized


def feature_masks(masks: Tensor, feat_hw: tuple[int, int]) -> Tensor:
    """Average masks (K, H, W) down to the feature grid: (K, h, w)."""
    return F.adaptive_avg_pool2d(masks[None], feat_hw)[0]

