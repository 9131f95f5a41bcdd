"""Encoder-free statistics of how an image looks: its colours and its texture.

Both are differentiable, batched and written from their definitions (docs/training.md):

* :func:`rgb_to_lab`: sRGB in [0, 1] -> CIELAB (D65);
* :func:`sliced_wasserstein`: the sliced Wasserstein-1 distance between two colour distributions;
* :func:`texture_energies`: log mean energies of first-derivative-of-Gaussian filters at 4 orientations
  and 4 scales, a 16-vector per image;
* :func:`patch_distance`: the sliced Wasserstein distance between two images' distributions of pixel patches,
  at several sizes.

:mod:`adain.train.quality` reads them as the measures of ``adain evaluate``; training uses them as losses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_SRGB_TO_XYZ = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                             [0.2126729, 0.7151522, 0.0721750],
                             [0.0193339, 0.1191920, 0.9503041]])
_WHITE_D65 = (0.95047, 1.0, 1.08883)
_DELTA = 6 / 29
ORIENTATIONS = (0.0, 45.0, 90.0, 135.0)  # degrees
SIGMAS = (1.0, 2.0, 4.0, 8.0)  # pixels


def rgb_to_lab(img: Tensor) -> Tensor:
    """sRGB (..., 3, H, W) in [0, 1] -> CIELAB (L in 0..100, a and b roughly -100..100), D65 white."""
    rgb = img.float().clamp(0, 1)
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055).pow(2.4))
    xyz = torch.einsum("ij,...jhw->...ihw", _SRGB_TO_XYZ.to(linear), linear)
    xyz = xyz / torch.tensor(_WHITE_D65, dtype=xyz.dtype, device=xyz.device).view(3, 1, 1)
    f = torch.where(xyz > _DELTA**3, xyz.clamp(min=_DELTA**3).pow(1 / 3), xyz / (3 * _DELTA**2) + 4 / 29)
    fx, fy, fz = f.unbind(-3)
    return torch.stack((116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)), -3)


def sample_pixels(img: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` pixels of each image of (N, C, H, W), drawn at random with replacement: (N, n, C)."""
    flat = img.flatten(2)
    idx = torch.randint(flat.shape[-1], (img.shape[0], 1, n), generator=generator, device="cpu").to(img.device)
    return flat.gather(2, idx.expand(-1, img.shape[1], -1)).transpose(1, 2)


def sorted_projections(a: Tensor, b: Tensor, directions: Tensor) -> tuple[Tensor, Tensor]:
    """The projections of point sets ``a`` (N, n, C) and ``b`` (N, m, C) on the unit ``directions`` (D, C), each
    sorted along its points: two (N, n, D). Where m != n, ``b``'s quantiles are interpolated to ``a``'s count."""
    pa = torch.sort(a @ directions.T, dim=1).values
    pb = torch.sort(b @ directions.T, dim=1).values
    if pb.shape[1] != pa.shape[1]:
        pb = F.interpolate(pb.transpose(1, 2), size=pa.shape[1], mode="linear").transpose(1, 2)
    return pa, pb


def sliced_wasserstein(a: Tensor, b: Tensor, directions: Tensor) -> Tensor:
    """Per batch item, the mean absolute difference of the sorted projections of point sets ``a`` (N, n, C) and
    ``b`` (N, m, C) on the unit ``directions`` (D, C): the sliced Wasserstein-1 distance, shape (N,)."""
    pa, pb = sorted_projections(a, b, directions)
    return (pa - pb).abs().mean((1, 2))


def random_directions(n: int, dims: int = 3, generator: torch.Generator | None = None) -> Tensor:
    """``n`` random unit vectors in ``dims`` dimensions (uniform on the sphere)."""
    v = torch.randn(n, dims, generator=generator)
    return v / v.norm(dim=1, keepdim=True)


def colour_distance(a: Tensor, b: Tensor, directions: Tensor, pixels: int,
                    generator: torch.Generator | None = None) -> Tensor:
    """Sliced Wasserstein distance between the CIELAB pixel colours of images ``a`` and ``b`` (N, 3, H, W),
    ``pixels`` random pixels of each: (N,)."""
    lab_a = sample_pixels(rgb_to_lab(a), pixels, generator)
    lab_b = sample_pixels(rgb_to_lab(b), pixels, generator)
    return sliced_wasserstein(lab_a, lab_b, directions.to(lab_a))


def _derivative_of_gaussian(sigma: float, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """The 1-D Gaussian and its derivative, radius 3 sigma."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    return g, -t / sigma**2 * g


def texture_energies(luma: Tensor, floor: float = 1e-12) -> Tensor:
    """Log mean energy of first-derivative-of-Gaussian responses of luminance (N, 1, H, W), each energy times
    sigma squared, plus ``floor``, at :data:`ORIENTATIONS` x :data:`SIGMAS`: (N, 16), orientation-major within each
    sigma.

    The oriented response at angle theta is cos(theta) d/dx + sin(theta) d/dy of the Gaussian-blurred image
    (first derivatives of a Gaussian are steerable); borders are reflected.
    """
    out = []
    for sigma in SIGMAS:
        g, dg = _derivative_of_gaussian(sigma, luma.dtype, luma.device)
        r = len(g) // 2
        pad = (min(r, luma.shape[-1] - 1), min(r, luma.shape[-1] - 1), min(r, luma.shape[-2] - 1),
               min(r, luma.shape[-2] - 1))
        x = F.pad(luma, pad, mode="reflect")
        gx_w, g_w = dg[r - pad[0] : r + pad[0] + 1], g[r - pad[0] : r + pad[0] + 1]
        gy_h, g_h = dg[r - pad[2] : r + pad[2] + 1], g[r - pad[2] : r + pad[2] + 1]
        dx = F.conv2d(F.conv2d(x, gx_w.view(1, 1, 1, -1)), g_h.view(1, 1, -1, 1))
        dy = F.conv2d(F.conv2d(x, g_w.view(1, 1, 1, -1)), gy_h.view(1, 1, -1, 1))
        for degrees in ORIENTATIONS:
            theta = math.radians(degrees)
            response = math.cos(theta) * dx + math.sin(theta) * dy
            out.append(torch.log(response.square().mean((1, 2, 3)) * sigma**2 + floor))
    return torch.stack(out, 1)


def patch_distance(a: Tensor, b: Tensor, directions: int, patch: int = 7, scales: int = 3) -> Tensor:
    """Per batch item, the sliced Wasserstein-1 distance between the ``patch`` x ``patch`` pixel patches of images
    ``a`` and ``b`` (N, C, H, W; sizes may differ), summed over ``scales`` sizes (each the previous one's 2x2
    means): the mean absolute difference of the sorted projections on ``directions`` random unit vectors (new ones
    per size, from the global RNG; :func:`sliced_wasserstein`). Shape (N,).

    Patches hold which intensities occur next to which, so strokes and their sizes; a gain per scale, which meets
    :func:`texture_energies`, does not meet this."""
    total = a.new_zeros(a.shape[0], dtype=torch.float32)
    a, b = a.float(), b.float()
    for level in range(scales):
        if level:
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        if min(a.shape[-2:]) < patch or min(b.shape[-2:]) < patch:
            break
        d = random_directions(directions, a.shape[1] * patch * patch).to(a)
        total = total + sliced_wasserstein(F.unfold(a, patch).transpose(1, 2), F.unfold(b, patch).transpose(1, 2), d)
    return total
