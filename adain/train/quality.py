"""Image-quality measures of a stylised output, each from its definition (docs/training.md).

* :func:`shape_score`: how much of the content's shapes the output keeps (1 kept, 0 unrelated or flat);
* :func:`grid_ratio`: a periodic pattern left by the decoder's upsampling (1 none, above 1 a grid);
* :func:`style_distance`: the paper's style loss between output and style image on a fixed encoder;
* :func:`color_transfer`: the plain baseline the style distance is read against;
* :func:`colour_ratio`: how far the output's palette is from the painting's (0 the painting's, 1 the photo's);
* :func:`texture_ratio`: the same for oriented-filter texture statistics (:mod:`adain.train.appearance`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import ops
from ..images import resize_shorter
from ..net import Encoder
from .appearance import colour_distance, random_directions, texture_energies
from .losses import style_losses

_BT601 = (0.299, 0.587, 0.114)


def _luma(img: Tensor) -> Tensor:
    """BT.601 luminance (1, 1, H, W) of an RGB image (3, H, W)."""
    weights = torch.tensor(_BT601, dtype=img.dtype, device=img.device).view(3, 1, 1)
    return (img * weights).sum(0, keepdim=True).unsqueeze(0)


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (1, 1, H, W), radius 3 sigma, reflected at the borders."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    pad_h, pad_w = min(radius, x.shape[-2] - 1), min(radius, x.shape[-1] - 1)
    x = F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
    x = F.conv2d(x, k[radius - pad_h : radius + pad_h + 1].view(1, 1, -1, 1))
    return F.conv2d(x, k[radius - pad_w : radius + pad_w + 1].view(1, 1, 1, -1))


def shape_score(content: Tensor, output: Tensor, blur: float = 2.0, window: float = 1.5) -> float:
    """Local correlation of the two luminances, weighted by the content's local contrast.

    Both (3, H, W) in [0, 1]; ``output`` is resized to the content first. Luminances are blurred
    (Gaussian, ``blur`` px), local means, variances and covariance taken with a Gaussian window
    (``window`` px); rho = cov / (sigma_c sigma_o + 1e-6); the score is sum(sigma_c rho) / sum(sigma_c).
    """
    content, output = content.double(), output.double()
    if output.shape[-2:] != content.shape[-2:]:
        output = F.interpolate(output.unsqueeze(0), size=content.shape[-2:], mode="bilinear", align_corners=False,
                               antialias=True)[0]
    c, o = (_gaussian_blur(_luma(x), blur) for x in (content, output))
    mu_c, mu_o = _gaussian_blur(c, window), _gaussian_blur(o, window)
    var_c = (_gaussian_blur(c * c, window) - mu_c**2).clamp(min=0)
    var_o = (_gaussian_blur(o * o, window) - mu_o**2).clamp(min=0)
    cov = _gaussian_blur(c * o, window) - mu_c * mu_o
    sigma_c = var_c.sqrt()
    rho = cov / (sigma_c * var_o.sqrt() + 1e-6)
    return float((sigma_c * rho).sum() / sigma_c.sum().clamp(min=1e-12))


def grid_ratio(output: Tensor, period: int) -> float:
    """Mean |gradient| of the luminance at its peak phase modulo ``period``, over its mean across phases.

    Taken along x and along y (horizontal differences grouped by column mod ``period``, vertical ones
    by row); the larger of the two. An upsampling grid of that period shows as a ratio above 1.
    """
    y = _luma(output.double())[0, 0]
    ratios = []
    for grad, axis in ((y[:, 1:] - y[:, :-1], 1), (y[1:] - y[:-1], 0)):
        g = grad.abs().mean(dim=1 - axis)  # one value per column (axis 1) or row (axis 0)
        n = len(g) // period * period
        if n == 0:
            continue
        phases = g[:n].view(-1, period).mean(0)
        ratios.append(float(phases.max() / phases.mean().clamp(min=1e-12)))
    return max(ratios, default=1.0)


def color_transfer(content: Tensor, style: Tensor) -> Tensor:
    """The content with each RGB channel's mean and std matched to the style's, clamped to [0, 1]."""
    c_mean, c_std = content.mean((-2, -1), keepdim=True), content.std((-2, -1), keepdim=True)
    s_mean, s_std = style.mean((-2, -1), keepdim=True), style.std((-2, -1), keepdim=True)
    return ((content - c_mean) / (c_std + ops.EPS) * s_std + s_mean).clamp(0, 1)


@torch.no_grad()
def style_distance(encoder: Encoder, output: Tensor, style: Tensor) -> float:
    """Sum over relu1_1..relu4_1 of MSE(channel means) + MSE(channel stds) between output and style (fp32)."""
    device = next(encoder.parameters()).device
    o = encoder.features(output.unsqueeze(0).float().to(device))
    s = encoder.features(style.unsqueeze(0).float().to(device))
    return float(sum(style_losses(o, s)))


COLOUR_DIRECTIONS = 64
COLOUR_PIXELS = 4096
TEXTURE_SIZE = 256  # shorter side the texture statistics are taken at


def _ratio(output_distance: float, content_distance: float) -> float:
    return output_distance / max(content_distance, 1e-12)


def colour_ratio(content: Tensor, output: Tensor, style: Tensor, seed: int = 0) -> float:
    """Sliced Wasserstein distance (CIELAB, 64 random directions, 4,096 random pixels of each image) between
    output and painting, over the same between photo and painting: 0 the painting's palette, 1 the photo's."""
    directions = random_directions(COLOUR_DIRECTIONS, generator=torch.Generator().manual_seed(seed))

    def distance(x: Tensor) -> float:  # the same pixel draws for output and photo
        g = torch.Generator().manual_seed(seed)
        return float(colour_distance(x.unsqueeze(0), style.unsqueeze(0), directions, COLOUR_PIXELS, g)[0])

    return _ratio(distance(output), distance(content))


def _texture(img: Tensor) -> Tensor:
    return texture_energies(_luma(resize_shorter(img.double(), TEXTURE_SIZE)))[0]


def texture_ratio(content: Tensor, output: Tensor, style: Tensor) -> float:
    """Distance between the texture energies (:func:`adain.train.appearance.texture_energies`, each image's
    luminance at a shorter side of 256 px) of output and painting, over that of photo and painting:
    0 the painting's texture statistics, 1 the photo's."""
    e_out, e_photo, e_style = (_texture(x) for x in (output, content, style))
    return _ratio(float((e_out - e_style).norm()), float((e_photo - e_style).norm()))
