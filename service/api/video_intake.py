"""POST /v1/videos' intake, on the decode threads: the style fields checked as a still request's are
(:mod:`service.api.intake`: counts, sizes, the uploaded styles' headers, the stored styles this key may use), then the
job's folder written and checked: ``input`` (the clip, read from its header), ``style_<i>.png`` (each style at the
size it is read at, uploaded or stored: a job does not depend on the store once accepted) and ``mask_<i>`` (as sent,
fitted to the clip's first frame as the job will fit them)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from adain.errors import VideoError, VideoTooLarge
from adain.images import prepared_size, save_image, style_read_size
from adain.masks import fit_masks, read_masks
from adain.options import check_alpha, check_grain, normalised_weights
from adain.stylizer import prepare_content
from adain.video import ClipReader, stability_level
from adain.video.pipeline import first_frame

from ..errors import ServiceError
from ..runtime.videos import INPUT, video_limits
from ..settings import Settings
from ..store.interface import StyleStore
from . import intake
from .forms import VideoForm


@dataclass
class VideoPlan:
    """A video request checked before its clip is read: the style and mask images, and the job's options (what
    ``service.runtime.videos`` calls ``stylize_video`` with, as JSON)."""

    styles: list[intake.Source]
    masks: list[intake.Source]
    options: dict


def plan_video(form: VideoForm, styles: list[bytes], masks: list[bytes], settings: Settings,
               store: StyleStore) -> VideoPlan:
    """Check a video request's fields (422) and its styles' and masks' headers (413, 415, 422), uploaded and stored
    (only this key's own and the public ones: ``store`` is its view)."""
    sizes = intake.checked_sizes(form, settings)
    check_alpha(form.alpha)
    if form.grain is not None:
        check_grain(form.grain)
    normalised_weights(form.weights, form.n_styles)
    stability_level(form.stability)
    sources = intake.style_sources(styles, form.style_ids, sizes, settings, lambda sid: intake.stored_image(
        sid, sizes.style, sizes.style_scale, store, settings))
    options = {"styles": [f"style_{i}.png" for i in range(len(sources))],
               "masks": [f"mask_{i}" for i in range(len(masks))], "weights": form.weights, "alpha": form.alpha,
               "preserve_color": form.preserve_color, "content_size": sizes.content, "style_size": sizes.style,
               "style_scale": sizes.style_scale, "stability": form.stability, "audio": form.audio,
               "quality": form.quality, "grain": form.grain}
    return VideoPlan(sources, intake.mask_sources(masks, sizes, settings), options)


def write_job(folder: Path, clip: BinaryIO, label: str, plan: VideoPlan, settings: Settings) -> tuple[int, int]:
    """Write the job's folder and check the clip (413 over the limits, 415 not a video), its resized frames against
    ``--max-pixels`` and the masks against its first frame; the clip's frames and the pixels of one frame as
    stylized."""
    o = plan.options
    folder.mkdir(parents=True)
    with open(folder / INPUT, "wb") as out:
        shutil.copyfileobj(clip, out, 2**20)
    limits = video_limits(settings)
    try:
        with ClipReader(folder / INPUT, limits, label=label) as reader:
            info = reader.info
    except VideoTooLarge as exc:
        raise ServiceError(413, "video_too_large", str(exc)) from None
    except VideoError as exc:
        raise ServiceError(415, "unsupported_video", str(exc)) from None
    h, w = prepared_size((info.height, info.width), o["content_size"], False)
    if h * w > settings.max_pixels:
        raise ServiceError(413, "video_too_large", f"frames of {w}x{h} pixels as resized, more than the limit of "
                           f"{settings.max_pixels}")
    if plan.masks:
        for name, mask in zip(o["masks"], plan.masks, strict=True):
            (folder / name).write_bytes(mask.data)
        mask = read_masks([folder / name for name in o["masks"]], len(plan.styles), settings.max_pixels,
                          settings.pil_formats)
        fitted = fit_masks(mask, (info.height, info.width), o["content_size"], False, settings.limits)
        prepare_content(first_frame(folder / INPUT, o["content_size"], limits), len(plan.styles), o["weights"],
                        o["preserve_color"], fitted, 0, False, settings.limits)
    read_size = style_read_size(o["style_size"], o["style_scale"])
    for name, style in zip(o["styles"], plan.styles, strict=True):
        save_image(intake.decode_source(style, read_size, settings), folder / name)
    return info.frames, h * w
