"""Reading a clip with PyAV: its facts from the header, checked against limits before anything is decoded, then its
video frames (already resized) and audio packets in file order, one at a time."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..errors import VideoError, VideoTooLarge

#: Frames a clip may lack against its header before it counts as cut short (rounding of the duration).
FRAME_SLACK = 2


@dataclass(frozen=True)
class VideoLimits:
    """What a clip may be: checked from its header (and its file size) before any frame is decoded."""

    max_seconds: float = 3600.0
    max_pixels: int = 8192 * 8192  # of one frame, as stored
    max_bytes: int = 2**40


#: The limits the library applies unless told otherwise.
DEFAULT_VIDEO_LIMITS = VideoLimits()


@dataclass(frozen=True)
class ClipInfo:
    """A clip's facts as its header gives them. ``frames`` is the count the header states, else duration x rate."""

    width: int
    height: int
    frames: int
    seconds: float
    rate: Fraction
    has_audio: bool


def _seconds(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration else 0.0


class ClipReader:
    """An open clip (a context manager): ``info`` at once, then :meth:`items` streams it.

    Raises VideoError for a file FFmpeg cannot read or without a video track, VideoTooLarge over ``limits``.
    """

    def __init__(self, path: str | Path, limits: VideoLimits = DEFAULT_VIDEO_LIMITS, label: str | None = None) -> None:
        self.path, self.label = Path(path), label or str(path)
        try:
            size = self.path.stat().st_size
        except OSError as exc:
            raise VideoError(f"{self.label}: cannot open ({exc.strerror or exc})") from None
        if size > limits.max_bytes:
            raise VideoTooLarge(f"{self.label}: {size} bytes, more than the limit of {limits.max_bytes}")
        try:
            self.container = av.open(str(self.path), "r")
        except av.error.FFmpegError:
            raise VideoError(f"{self.label}: not a video in a format FFmpeg reads") from None
        try:
            self.info = self._check(limits)
        except VideoError:
            self.container.close()
            raise
        self.frames_read = 0

    def _check(self, limits: VideoLimits) -> ClipInfo:
        if not self.container.streams.video:
            raise VideoError(f"{self.label}: has no video track")
        self.video = self.container.streams.video[0]
        self.audio = self.container.streams.audio[0] if self.container.streams.audio else None
        width, height = self.video.codec_context.width, self.video.codec_context.height
        if not width or not height:
            raise VideoError(f"{self.label}: not a video in a format FFmpeg reads (no frame size)")
        if width * height > limits.max_pixels:
            raise VideoTooLarge(f"{self.label}: frames of {width}x{height} = {width * height} pixels, more than the "
                                f"limit of {limits.max_pixels}")
        seconds = _seconds(self.container, self.video)
        if seconds > limits.max_seconds:
            raise VideoTooLarge(f"{self.label}: {seconds:.1f} s long, more than the limit of {limits.max_seconds:g} s")
        rate = self.video.average_rate or self.video.guessed_rate or Fraction(25)
        frames = self.video.frames or round(seconds * rate)
        return ClipInfo(width, height, int(frames), seconds, Fraction(rate), self.audio is not None)

    def items(self, size: tuple[int, int], audio: bool = True) -> Iterator[av.VideoFrame | av.Packet]:
        """The clip in file order: its video frames resized to ``size`` (H, W) as RGB (``rgb`` below turns one into
        pixels), and with ``audio`` its audio packets as stored. A decoding error, or a clip that ends well before
        its header says, raises VideoError naming how many frames were read."""
        streams = [self.video] + ([self.audio] if audio and self.audio is not None else [])
        try:
            for packet in self.container.demux(*streams):
                if packet.stream is not self.video:
                    if packet.dts is not None:
                        yield packet
                    continue
                for frame in packet.decode():
                    self.frames_read += 1
                    yield frame.reformat(width=size[1], height=size[0], format="rgb24", interpolation="BILINEAR")
        except av.error.FFmpegError as exc:
            raise self._corrupt(f"({exc.strerror or exc})") from None
        if self.frames_read < self.info.frames - FRAME_SLACK:
            raise self._corrupt("(it ends before its header says)")

    def _corrupt(self, why: str) -> VideoError:
        return VideoError(f"{self.label}: corrupt or cut short after {self.frames_read} of {self.info.frames} "
                          f"frames {why}")

    def close(self) -> None:
        with contextlib.suppress(av.error.FFmpegError):
            self.container.close()

    def __enter__(self) -> ClipReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rgb(frame: av.VideoFrame) -> np.ndarray:
    """An RGB frame's pixels, uint8 (H, W, 3)."""
    return frame.to_ndarray(format="rgb24")
