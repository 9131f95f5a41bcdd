"""Clips whose motion is known exactly, made from photos (nothing downloaded), and the flicker measure on them.

* :func:`camera_clip`: a virtual camera panning, zooming or rotating over one photo;
* :func:`object_clip`: a rectangle cut from one photo moving over another;
* :func:`warping_error`: the mean absolute difference between each (stylized) frame and the previous one warped by
  the true motion, over the pixels visible in both; per-frame AdaIN scores high, a stable method low;
* :func:`write_clip`: frames (and a test tone) to an H.264 file, to run the command and the service on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..images import resize_shorter
from .writer import CONTAINERS

CAMERA_MOVES = ("pan", "zoom", "rotate")


@dataclass
class MotionClip:
    """``frames`` uint8 (N, 3, H, W); ``back[t - 1]``, for each frame t >= 1: where its pixels were in frame t - 1, as
    a grid_sample grid (H, W, 2), and ``visible[t - 1]``, the pixels (H, W) seen in both frames."""

    frames: Tensor
    back: list[Tensor]
    visible: list[Tensor]


def _pixel_grid(h: int, w: int) -> Tensor:
    """Pixel centres (H, W, 3) as homogeneous (x, y, 1), x in [0.5, W - 0.5]."""
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    return torch.stack([xs, ys, torch.ones_like(xs)], -1).double()


def _normalised(points: Tensor, h: int, w: int) -> Tensor:
    """Pixel coordinates (.., 2) -> grid_sample's [-1, 1] (align_corners=False)."""
    return torch.stack([2 * points[..., 0] / w - 1, 2 * points[..., 1] / h - 1], -1).float()


def _inside(points: Tensor, h: int, w: int) -> Tensor:
    return (points[..., 0] >= 0) & (points[..., 0] <= w) & (points[..., 1] >= 0) & (points[..., 1] <= h)


def _camera(move: str, t: float, centre: Tensor, travel: float) -> tuple[Tensor, float, float]:
    """Centre (x, y), zoom and angle of the camera at ``t`` in [0, 1]."""
    if move == "pan":
        return centre + torch.tensor([travel * (t - 0.5), 0.25 * travel * (t - 0.5)], dtype=torch.float64), 1.0, 0.0
    if move == "zoom":
        return centre, 1.0 + 0.5 * t, 0.0
    return centre, 1.0, math.radians(12.0) * (t - 0.5)


def _matrix(centre: Tensor, zoom: float, angle: float, scale: float, h: int, w: int) -> Tensor:
    """3x3: frame pixel -> photo pixel, for a camera at ``centre`` with ``zoom``, ``angle``, ``scale`` px/px."""
    c, s = math.cos(angle) * scale / zoom, math.sin(angle) * scale / zoom
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    m = torch.eye(3, dtype=torch.float64)
    m[:2, :2] = rot
    m[:2, 2] = centre - rot @ torch.tensor([w / 2, h / 2], dtype=torch.float64)
    return m


def _camera_path(photo: Tensor, move: str, size: tuple[int, int], frames: int,
                 cover: float) -> tuple[Tensor, list[Tensor]]:
    """The photo as sampled (resized so that one frame pixel is at least one photo pixel: no aliasing) and each
    frame's matrix from frame pixels to photo pixels."""
    h, w = size
    scale = cover * min(photo.shape[-2] / h, photo.shape[-1] / w)
    if scale > 1:
        photo = resize_shorter(photo, round(min(photo.shape[-2:]) / scale))
        scale = cover * min(photo.shape[-2] / h, photo.shape[-1] / w)
    ph, pw = photo.shape[-2:]
    centre = torch.tensor([pw / 2, ph / 2], dtype=torch.float64)
    travel = (1 - cover) * 0.8 * min(ph, pw)
    return photo, [_matrix(*_camera(move, i / max(1, frames - 1), centre, travel), scale, h, w) for i in range(frames)]


def _sample(photo: Tensor, where: Tensor) -> Tensor:
    ph, pw = photo.shape[-2:]
    return F.grid_sample(photo[None].float(), _normalised(where, ph, pw)[None], mode="bilinear",
                         padding_mode="border", align_corners=False)[0]


def camera_frames(photo: Tensor, move: str, size: tuple[int, int], frames: int,
                  cover: float = 0.6) -> Iterator[Tensor]:
    """The frames (uint8 (3, H, W)) of :func:`camera_clip`, one at a time (a long clip never sits in memory)."""
    photo, mats = _camera_path(photo, move, size, frames, cover)
    pixels = _pixel_grid(*size)
    for m in mats:
        yield _to_uint8(_sample(photo, (pixels @ m.T)[..., :2]))


def camera_clip(photo: Tensor, move: str, size: tuple[int, int], frames: int, cover: float = 0.6) -> MotionClip:
    """A camera ``move`` ("pan", "zoom", "rotate") over ``photo`` (3, H, W) in [0, 1]: ``frames`` frames of ``size``
    (H, W); at the start the view spans ``cover`` of the photo's shorter side."""
    h, w = size
    sampled, mats = _camera_path(photo, move, size, frames, cover)
    pixels = _pixel_grid(h, w)
    back, visible = [], []
    for before_m, m in zip(mats, mats[1:], strict=False):
        before = (pixels @ (torch.linalg.inv(before_m) @ m).T)[..., :2]
        back.append(_normalised(before, h, w))
        visible.append(_inside(before, h, w) & _inside((pixels @ m.T)[..., :2], *sampled.shape[-2:]))
    return MotionClip(torch.stack(list(camera_frames(photo, move, size, frames, cover))), back, visible)


def object_clip(background: Tensor, thing: Tensor, size: tuple[int, int], frames: int) -> MotionClip:
    """A rectangle of ``thing`` (a third of the frame each way) moving left to right, a whole number of pixels a
    frame, over ``background``; both photos (3, H, W) are resized and centre-cropped to ``size`` first."""
    h, w = size
    bg = _fitted(background, size)
    oh, ow = h // 3, w // 3
    obj = _fitted(thing, (oh, ow))
    step = max(1, (w - ow) // max(1, frames - 1))
    top = (h - oh) // 2
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    identity = torch.stack([xs + 0.5, ys + 0.5], -1).double()
    out, back, visible = [], [], []
    for i in range(frames):
        frame = bg.clone()
        left = i * step
        frame[:, top: top + oh, left: left + ow] = obj
        out.append(frame)
        if i:
            on_now = (ys >= top) & (ys < top + oh) & (xs >= left) & (xs < left + ow)
            on_before = (ys >= top) & (ys < top + oh) & (xs >= left - step) & (xs < left - step + ow)
            before = identity.clone()
            before[..., 0] -= step * on_now
            back.append(_normalised(before, h, w))
            visible.append(on_now | ~on_before)
    return MotionClip(_to_uint8(torch.stack(out)), back, visible)


def _fitted(img: Tensor, size: tuple[int, int]) -> Tensor:
    """``img`` resized to cover ``size`` (H, W) and centre-cropped to it."""
    h, w = size
    scale = max(h / img.shape[-2], w / img.shape[-1])
    img = F.interpolate(img[None].float(), size=(max(h, round(img.shape[-2] * scale)),
                                                 max(w, round(img.shape[-1] * scale))),
                        mode="bilinear", antialias=True, align_corners=False)[0]
    top, left = (img.shape[-2] - h) // 2, (img.shape[-1] - w) // 2
    return img[:, top: top + h, left: left + w]


def _to_uint8(x: Tensor) -> Tensor:
    return x.clamp(0, 1).mul(255).add(0.5).to(torch.uint8)


def warping_error(outputs: Sequence[Tensor], clip: MotionClip) -> float:
    """Mean over frames t >= 1 of mean |out_t - warp(out_{t-1})| over the pixels visible in both, in [0, 1] units;
    ``outputs`` are float (3, H, W) frames of the clip's size (a clip's own frames give the resampling floor)."""
    errors = []
    for t in range(1, len(outputs)):
        warped = F.grid_sample(outputs[t - 1][None].float(), clip.back[t - 1][None], mode="bilinear",
                               padding_mode="border", align_corners=False)[0]
        diff = (outputs[t].float() - warped).abs().mean(0)
        mask = clip.visible[t - 1]
        errors.append(float(diff[mask].mean()) if mask.any() else 0.0)
    return float(np.mean(errors)) if errors else 0.0


def write_clip(frames: Iterable[Tensor], path: str | Path, fps: int = 24, audio: bool = False,
               quality_crf: int = 18) -> int:
    """uint8 frames (3, H, W, even sides) as H.264 at ``fps`` (container from the suffix: .mp4, .mov, .mkv), streamed;
    with ``audio`` a 440 Hz AAC tone as long as the clip. Returns the number of frames."""
    path = Path(path)
    count = 0
    with av.open(str(path), "w", format=CONTAINERS[path.suffix.lower()]) as out:
        video = out.add_stream("libx264", rate=fps, options={"crf": str(quality_crf)})
        video.pix_fmt = "yuv420p"
        sound = out.add_stream("aac", rate=44100, layout="mono") if audio else None
        for count, frame in enumerate(frames, 1):
            if count == 1:
                video.height, video.width = frame.shape[-2:]
            vf = av.VideoFrame.from_ndarray(frame.permute(1, 2, 0).contiguous().numpy(), format="rgb24")
            vf.pts, vf.time_base = count - 1, Fraction(1, fps)
            out.mux(video.encode(vf))
        out.mux(video.encode(None))
        if sound is not None:
            samples, chunk = 44100 * count // fps, 1024
            tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / 44100)).astype(np.float32)
            for start in range(0, samples, chunk):
                af = av.AudioFrame.from_ndarray(tone[None, start: start + chunk], format="fltp", layout="mono")
                af.sample_rate, af.pts = 44100, start
                out.mux(sound.encode(af))
            out.mux(sound.encode(None))
    return count
