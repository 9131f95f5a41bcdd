"""A whole clip: read, stylize frame by frame, write; frames are streamed, so memory does not grow with length."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from torch import Tensor

from ..errors import AdainError
from ..images import center_crop, check_prepared, prepared_size
from ..masks import fit_masks
from ..stylizer import ColorMode, ImageLike, Stylizer
from .frames import FrameStylizer
from .reader import DEFAULT_VIDEO_LIMITS, ClipInfo, ClipReader, VideoLimits, rgb
from .temporal import DEFAULT_LEVEL, LEVELS, Stability
from .writer import DEFAULT_QUALITY, AtomicClipWriter, container_format, even_size


@dataclass(frozen=True)
class VideoResult:
    """What was written: ``frames`` stylized frames of (H, W) ``size``, and whether the audio was copied."""

    frames: int
    size: tuple[int, int]
    audio: bool


def frame_size(info: ClipInfo, content_size: int) -> tuple[int, int]:
    """(H, W) the frames are read at: resized by the shorter side (0 keeps it), before any centre crop."""
    return prepared_size((info.height, info.width), content_size, False) if content_size else (info.height, info.width)


def first_frame(source: str | Path, content_size: int, limits: VideoLimits = DEFAULT_VIDEO_LIMITS) -> Tensor:
    """The clip's first frame at ``content_size`` as float (3, H, W) in [0, 1] (what ``--balance`` weighs)."""
    with ClipReader(source, limits) as reader:
        first = next(reader.items(frame_size(reader.info, content_size), audio=False))
        return torch.from_numpy(rgb(first)).permute(2, 0, 1).float().div_(255)


def stylize_video(stylizer: Stylizer, source: str | Path, dest: str | Path, styles: Sequence[ImageLike], *,
                  weights: Sequence[float] | None = None, alpha: float = 1.0, preserve_color: ColorMode = "none",
                  mask: Tensor | None = None, content_size: int = 512, crop: bool = False, style_size: int = 512,
                  style_scale: float = 1.0, stability: Stability = LEVELS[DEFAULT_LEVEL], audio: bool = True,
                  quality: int = DEFAULT_QUALITY, limits: VideoLimits = DEFAULT_VIDEO_LIMITS,
                  grain: float | None = None, on_start: Callable[[ClipInfo], None] | None = None,
                  on_frame: Callable[[int], None] | None = None) -> VideoResult:
    """Stylize the clip ``source`` into ``dest`` (H.264 in .mp4, .mov or .mkv) with the options of
    :meth:`Stylizer.stylize`, keeping the frame times (so the rate and duration) and, with ``audio``, the audio
    track. ``mask`` (S, H, W): soft masks of the source frames' size, the output's, or their shape at any size.
    ``on_start`` gets the clip's header facts, ``on_frame`` each frame's number once it is written.

    The output is written beside ``dest`` under a temporary name and moved there at the end: an error (a clip corrupt
    halfway: its message says after how many frames) or Ctrl-C leaves no file behind."""
    container_format(dest)
    with ClipReader(source, limits) as reader:
        info = reader.info
        if on_start is not None:
            on_start(info)
        check_prepared((info.height, info.width), content_size, crop, stylizer.limits, reader.label)
        read_hw = frame_size(info, content_size)
        fitted = None if mask is None else fit_masks(mask, (info.height, info.width), content_size, crop,
                                                     stylizer.limits)
        frames = FrameStylizer(stylizer, styles, weights, alpha, preserve_color, fitted, style_size, style_scale,
                               stability, grain)
        side = min(read_hw) if crop else 0
        out_hw = even_size((side, side) if crop else read_hw)
        with_audio = audio and reader.audio is not None
        done = 0
        try:
            with AtomicClipWriter(dest, out_hw, info.rate, reader.video.time_base,
                                  reader.audio if with_audio else None, quality) as writer:
                for item in reader.items(read_hw, with_audio):
                    if isinstance(item, av.Packet):
                        writer.mux_audio(item)
                        continue
                    pixels = rgb(item)
                    if crop:
                        pixels = np.ascontiguousarray(center_crop(torch.from_numpy(pixels).permute(2, 0, 1), side)
                                                      .permute(1, 2, 0).numpy())
                    out = frames(pixels)
                    writer.write(_to_uint8(out[: out_hw[0], : out_hw[1]]), item.pts)
                    done += 1
                    if on_frame is not None:
                        on_frame(done)
        except AdainError as exc:
            frames_done = f"{done} frame{'' if done == 1 else 's'}"
            raise type(exc)(f"{exc}; {frames_done} stylized, nothing was written to {dest}") from None
    return VideoResult(done, out_hw, with_audio)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
