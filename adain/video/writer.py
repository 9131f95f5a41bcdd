"""Writing a clip with PyAV: H.264 (libx264, in the PyAV wheel's FFmpeg) to a temporary file beside the output,
renamed over it only when every frame is in; an error or Ctrl-C removes the temporary file."""

from __future__ import annotations

import contextlib
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..errors import VideoError

#: output suffix -> FFmpeg container format (each takes H.264 video and the usual audio codecs)
CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
CODEC = "libx264"
#: quality 1..100 of a clip written without one: CRF 19 (:func:`crf_of`)
DEFAULT_QUALITY = 80


def container_format(path: str | Path) -> str:
    """The container format of an output file name, or a VideoError naming the suffixes there are."""
    suffix = Path(path).suffix.lower()
    if suffix not in CONTAINERS:
        raise VideoError(f"{path}: unsupported video output (use {', '.join(CONTAINERS)})")
    return CONTAINERS[suffix]


def crf_of(quality: int) -> int:
    """x264's constant rate factor for a quality of 1..100 (the images' scale): 51 - 0.4 x quality, so 80 -> 19."""
    return max(0, min(51, round(51 - 0.4 * quality)))


def even_size(size: tuple[int, int]) -> tuple[int, int]:
    """(H, W) rounded down to even sides: H.264 in yuv420p needs them."""
    return size[0] - size[0] % 2, size[1] - size[1] % 2


class AtomicClipWriter:
    """An H.264 clip of frames of ``size`` (H, W, even) at ``rate``, timed by the source's ``time_base``; with
    ``audio_template`` (an input audio stream) its packets are copied in as they come (:meth:`mux_audio`).
    A context manager: :meth:`commit` on success, else the temporary file is removed."""

    def __init__(self, path: str | Path, size: tuple[int, int], rate: Fraction, time_base: Fraction,
                 audio_template: av.audio.stream.AudioStream | None = None, quality: int = 80) -> None:
        self.path = Path(path)
        fmt = container_format(self.path)
        self.temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.part")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.container = av.open(str(self.temp), "w", format=fmt)
        except (OSError, av.error.FFmpegError) as exc:
            raise VideoError(f"{self.path}: cannot write ({getattr(exc, 'strerror', None) or exc})") from None
        self.stream = self.container.add_stream(CODEC, rate=rate, options={"crf": str(crf_of(quality))})
        self.stream.height, self.stream.width = size
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = time_base
        self.audio = None
        if audio_template is not None:
            try:
                self.audio = self.container.add_stream_from_template(audio_template)
            except (ValueError, av.error.FFmpegError) as exc:
                self.discard()
                raise VideoError(f"{self.path}: the audio ({audio_template.codec_context.name}) cannot go into this "
                                 f"container ({exc}); leave it out (--no-audio) or use .mkv") from None

    def write(self, pixels: np.ndarray, pts: int | None) -> None:
        """One RGB frame, uint8 (H, W, 3) of the writer's size, at ``pts`` in the source's time base."""
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
        frame.pts, frame.time_base = pts, self.stream.time_base
        self._mux(self.stream.encode(frame))

    def mux_audio(self, packet: av.Packet) -> None:
        """An audio packet of the template stream, copied as it is."""
        packet.stream = self.audio
        self._mux([packet])

    def _mux(self, packets) -> None:
        try:
            self.container.mux(packets)
        except (OSError, av.error.FFmpegError) as exc:
            raise VideoError(f"{self.path}: cannot write ({getattr(exc, 'strerror', None) or exc})") from None

    def commit(self) -> None:
        """Flush the encoder, close the file and move it to its name."""
        self._mux(self.stream.encode(None))
        self.container.close()
        self.temp.replace(self.path)

    def discard(self) -> None:
        """Close and remove the temporary file (nothing is left)."""
        with contextlib.suppress(Exception):
            self.container.close()
        with contextlib.suppress(OSError):
            self.temp.unlink()

    def __enter__(self) -> AtomicClipWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.discard()
                raise
        else:
            self.discard()
