"""What a request may hold in memory, and what a whole process may: admission control reserves a request's bytes
(``--max-work-bytes`` in all) before anything is decoded, and docs/deploy.md states the worst case from the limits.

A request's images are read straight to their prepared size (``adain.images.read_resized``), one at a time: decoding
one takes :data:`DECODE_BYTES` per pixel that PIL decodes (fewer pixels than the file has for a JPEG at reduced
scale) plus :data:`RESIZED_BYTES` per pixel of its resized 8-bit copy; once decoded, the request holds float images
(:data:`FLOAT_RGB` per pixel) until it is answered: each style still to encode, and the content
(:data:`CONTENT_COPIES` copies: the input, what the encoder sees, with grain its noise and the noisy copy, the result
and its encoding), the masks' 8-bit files (one byte per pixel) and one float mask per style at the content's size
(at the masks' own size when they have another, larger one).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..settings import Settings

#: Bytes per pixel PIL decodes, at the peak of decoding one image: measured 16 for RGBA PNG and WebP (the decoded
#: image, its RGB copy, the copy PIL makes on the way), 5 for RGB PNG, 1 for JPEG at reduced scale.
DECODE_BYTES = 16
#: Bytes per pixel of a resized image before it becomes float: PIL's 4-byte pixels and the 3-byte array.
RESIZED_BYTES = 8
FLOAT_RGB = 12  # float32 (3, H, W)
FLOAT_MASK = 4  # float32 (H, W)
CONTENT_COPIES = 6
#: Bytes per pixel the networks hold while a batch runs (activations; bf16 on the CPU, the default bundle's
#: vgg16 relu3_1 decoder with skips: about 1.1 GiB per megapixel above idle, docs/deploy.md "Sizing"). A decoder with
#: strokes and three extra convs (weights/candidates/D2) holds about 65 bytes per pixel more, which would leave this
#: no margin (docs/training.md, thirteenth session).
ACTIVATION_BYTES = 1200
#: Bytes per content pixel a tiled image holds besides its tiles: the feature maps of the decoder's inputs for the
#: whole image, restyled level by level (with skips: relu1_1, relu2_1 and relu3_1 in bf16; measured 200-250).
FEATURE_BYTES = 300


def decode_bytes(decoded_pixels: int, prepared_pixels: int) -> int:
    """Bytes that reading one image takes at its peak (the resized float image aside)."""
    return DECODE_BYTES * decoded_pixels + RESIZED_BYTES * prepared_pixels


@dataclass(frozen=True)
class Images:
    """The images of one request as their headers describe them: pixels decoded and as prepared, per image."""

    content: tuple[int, int]  # (decoded, prepared)
    styles: Sequence[tuple[int, int]] = ()  # the styles still to encode
    masks: Sequence[int] = ()  # the masks' pixels (read whole, as 8-bit)
    n_styles: int = 0  # with masks: one float mask per style

    def bytes(self) -> int:
        """What the request may hold at once: the float images it keeps, plus the peak of decoding the largest."""
        content = self.content[1]
        held = CONTENT_COPIES * FLOAT_RGB * content + sum(FLOAT_RGB * p for _, p in self.styles)
        if self.masks:
            held += sum(self.masks) + FLOAT_MASK * self.n_styles * max(content, *self.masks)
        decoding = [decode_bytes(*self.content), *(decode_bytes(*s) for s in self.styles),
                    *(decode_bytes(m, content) for m in self.masks)]
        return held + max(decoding)


def style_upload_bytes(decoded_pixels: int, prepared_pixels: int) -> int:
    """What storing a style holds: its float image to encode, and the peak of decoding it."""
    return FLOAT_RGB * prepared_pixels + decode_bytes(decoded_pixels, prepared_pixels)


def largest_request(settings: Settings) -> int:
    """The most one stylize request could need within the size limits: every image, masks included, at
    ``--max-pixels`` as sent and as prepared."""
    p, s = settings.max_pixels, settings.max_styles
    return Images((p, p), [(p, p)] * s, [p] * s, s).bytes()


def worst_case(settings: Settings, workers: int) -> dict[str, int]:
    """Bytes above an idle process of ``workers`` workers, at most, by part (docs/deploy.md, "Memory"): request
    bodies (each in memory while its request runs, up to twice: python-multipart's buffer and the bytes read; at
    most ``--max-connections`` at once), the images admission control lets in (``--max-work-bytes``), and the
    activations of the batches running at once (per worker, a full batch of small requests and one large request,
    which runs in tiles above ``--tile-pixels`` and then also holds its whole feature maps, up to
    ``--max-pixels``)."""
    small = min(settings.large_pixels or settings.max_pixels, settings.tile_pixels or settings.max_pixels)
    large = settings.tile_pixels or settings.max_pixels
    tiled = FEATURE_BYTES * settings.max_pixels if 0 < settings.tile_pixels < settings.max_pixels else 0
    return {
        "uploads": 2 * settings.max_connections * settings.max_upload_bytes,
        "images": settings.max_work_bytes,
        "activations": workers * (ACTIVATION_BYTES * (settings.batch_size * small + large) + tiled),
    }


#: Where a container's memory limit is: cgroup v2's file, then v1's.
CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def memory_available(cgroup_limits: Sequence[Path] = CGROUP_LIMITS) -> int:
    """Bytes this process may use at most: the machine's physical memory, or its cgroup's (a container's)
    limit where that is lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in cgroup_limits:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def memory_warning(parts: dict[str, int], available: int) -> str | None:
    """What to say when the worst case above idle (:func:`worst_case`) does not fit in ``available`` bytes."""
    worst = sum(parts.values())
    if worst <= available:
        return None
    return (f"the worst case above ({worst / 2**20:.0f} MiB) is more than the {available / 2**20:.0f} MiB this "
            "process may use (the machine's memory, or its container's limit where lower): under full load it could "
            "be killed for memory. Lower --max-connections or "
            "--max-upload-bytes (uploads), --max-work-bytes (images), --batch-size, --tile-pixels or --max-pixels "
            "(activations); docs/deploy.md, Memory")
