"""Strokes: oriented noise in the decoder's deepest input, where the photo is flat.

AdaIN leaves a flat region of the photo (a clear sky, a wall) flat: its features are nearly constant, so the
decoder paints it in one colour, the painting's mean. ``stroke_noise`` gives such regions something to paint:
each channel gets white noise blurred along the local flow of the features (the direction in which they change
least, from a structure tensor smoothed over ``FLOW_SCALE`` cells: strokes follow the outlines, and a flat region
takes the direction of the outlines near it) with an elongated Gaussian of ``LENGTH`` x ``WIDTH`` cells, scaled to
the channel's spatial std and weighted by how flat the neighbourhood is (1 - its energy in units of the global
std, clipped to 0..1), so outlines are left as they are. A decoder is trained with it (``adain train --strokes``)
and stylizes with the same amount times alpha (``Decoder.strokes``; docs/training.md, "Strokes").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

#: stroke length and width (Gaussian sigmas along and across the flow) and the structure tensor's smoothing, in
#: feature cells (4 px at relu3_1)
LENGTH, WIDTH, FLOW_SCALE = 3.0, 0.6, 4.0
#: directions the flow is quantised to (each pixel blends the two nearest)
ORIENTATIONS = 8
#: seed of the noise: an image of one size gets the same strokes every time, and the frames of a video share them
STROKE_SEED = 0
#: channels processed at a time: the noise of a large image needs a few copies of this many channels, not of all
CHUNK = 32
#: a channel whose variance over the map is at most this does not vary (AdaIN of a channel that is 0 everywhere)
CONSTANT = 1e-10


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (N, C, H, W) per channel (a kernel of 3 sigma on each side, normalised to sum
    1), edges replicated."""
    half = int(3 * sigma)
    r = torch.arange(-half, half + 1, device=x.device, dtype=x.dtype)
    g = torch.exp(-r ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    c = x.shape[1]
    x = F.pad(x, (half,) * 4, mode="replicate")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def flow_angle(feat: Tensor, scale: float = FLOW_SCALE, chunk: int = CHUNK) -> Tensor:
    """(N, 1, H, W): the direction, in radians from the x axis in [0, pi), in which the features (N, C, H, W)
    change least, from their structure tensor summed over channels and smoothed with a Gaussian of ``scale``.
    ``chunk`` channels at a time, to bound the memory."""
    tensor = feat.new_zeros((feat.shape[0], 3, *feat.shape[2:]), dtype=torch.float32)
    for part in feat.split(chunk, 1):
        x = part.float()
        gx = F.pad(x, (1, 1, 0, 0), mode="replicate")
        gx = (gx[..., 2:] - gx[..., :-2]) / 2
        gy = F.pad(x, (0, 0, 1, 1), mode="replicate")
        gy = (gy[..., 2:, :] - gy[..., :-2, :]) / 2
        tensor += torch.cat([(gx * gx).sum(1, keepdim=True), (gx * gy).sum(1, keepdim=True),
                             (gy * gy).sum(1, keepdim=True)], 1)
    tensor = gaussian_blur(tensor, scale)
    most = 0.5 * torch.atan2(2 * tensor[:, 1:2], tensor[:, 0:1] - tensor[:, 2:3])
    return torch.remainder(most + math.pi / 2, math.pi)


def flatness(feat: Tensor, scale: float = FLOW_SCALE, chunk: int = CHUNK) -> Tensor:
    """(N, 1, H, W) in [0, 1]: 1 - the local std of the features (a Gaussian window of ``scale``) in units of
    each channel's spatial std, as a root mean square over channels (a channel of variance up to :data:`CONSTANT`
    counting 0: it does not vary, but its rounding errors would); 0 along outlines, 1 where nothing changes.
    ``chunk`` channels at a time, to bound the memory."""
    energy = feat.new_zeros((feat.shape[0], 1, *feat.shape[2:]), dtype=torch.float32)
    for part in feat.split(chunk, 1):
        x = part.float()
        mean = gaussian_blur(x, scale)
        var = (gaussian_blur(x * x, scale) - mean ** 2).clamp_min(0)
        spread = x.var(dim=(2, 3), keepdim=True)
        energy += torch.where(spread > CONSTANT, var / spread.clamp_min(CONSTANT), 0.0).sum(1, keepdim=True)
    return (1 - (energy / feat.shape[1]).sqrt()).clamp(0, 1)


def stroke_kernel(angle: float, length: float = LENGTH, width: float = WIDTH) -> Tensor:
    """An elongated Gaussian at ``angle`` (radians from the x axis), of unit energy: white noise through it keeps
    unit variance."""
    half = math.ceil(3 * length)
    r = torch.arange(-half, half + 1, dtype=torch.float32)
    y, x = torch.meshgrid(r, r, indexing="ij")
    along, across = x * math.cos(angle) + y * math.sin(angle), -x * math.sin(angle) + y * math.cos(angle)
    g = torch.exp(-along ** 2 / (2 * length ** 2) - across ** 2 / (2 * width ** 2))
    return g / g.square().sum().sqrt()


def stroke_noise(feat: Tensor, amounts: Sequence[float], seed: int | None = STROKE_SEED,
                 chunk: int = CHUNK) -> Tensor:
    """Oriented noise (N, C, H, W) for features (N, C, H, W), image n's times ``amounts[n]`` (the module
    docstring). The white noise covers the map and a margin of half a kernel, so that every pixel's stroke is
    whole. ``seed``: every image gets the white noise drawn from it on the CPU as one (C, H + 2 m, W + 2 m) array
    (every device and batch gets the same); None: a new draw for each image from the global RNG (training).
    ``chunk`` channels at a time."""
    n, c, h, w = feat.shape
    scale = torch.tensor(list(amounts), dtype=torch.float32, device=feat.device).view(n, 1, 1, 1)
    position = flow_angle(feat, chunk=chunk) * (ORIENTATIONS / math.pi)  # in [0, ORIENTATIONS)
    kernels = [stroke_kernel(math.pi * k / ORIENTATIONS).to(feat.device) for k in range(ORIENTATIONS)]
    m = kernels[0].shape[-1] // 2
    shares = []  # each direction's share of each pixel: the two nearest directions, linearly
    for k in range(ORIENTATIONS):
        distance = torch.remainder(position - k + ORIENTATIONS / 2, ORIENTATIONS) - ORIENTATIONS / 2
        shares.append((1 - distance.abs()).clamp_min(0))
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    out = torch.empty_like(feat)
    for start in range(0, c, chunk):
        part, noise = feat[:, start: start + chunk].float(), 0.0
        p = part.shape[1]
        if generator is None:
            white = torch.randn((1, n * p, h + 2 * m, w + 2 * m), device=feat.device)
        else:  # drawn chunk after chunk from one generator: the values of one (C, ...) array
            drawn = torch.randn((p, h + 2 * m, w + 2 * m), generator=generator).to(feat.device)
            white = drawn.expand(n, -1, -1, -1).reshape(1, n * p, h + 2 * m, w + 2 * m)
        for kernel, share in zip(kernels, shares, strict=True):
            if share.any():
                blurred = F.conv2d(white, kernel.expand(n * p, 1, *kernel.shape), groups=n * p)
                noise = noise + blurred.view(n, p, h, w) * share
        noise = noise / noise.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        out[:, start: start + chunk] = (noise * part.std(dim=(2, 3), keepdim=True) * scale).to(feat.dtype)
    return out.mul_(flatness(feat, chunk=chunk).to(feat.dtype))
