"""An independent float64 numpy reference of AdaIN style transfer (Huang & Belongie, ICCV 2017).

Written from the paper's equations and the original release's network layout,
sharing no code with the ``adain`` package (which it must not import). Images
are float arrays (3, H, W) in [0, 1]; weights are the canonical flat state dict
(``"<index>.weight"``, ``"<index>.bias"``) as numpy arrays.

Equations:

* statistics: mu(x) = mean over H, W; sigma(x) = sqrt(population variance + eps), eps = 1e-5;
* AdaIN(x, y) = sigma(y) * (x - mu(x)) / sigma(x) + mu(y), on relu4_1 features as
  in the paper (or relu3_1, for a decoder that decodes that layer);
* a decoder with skips (relu1_1, relu2_1, and relu3_1 for one of relu4_1) takes AdaIN at each of its inputs, every
  one with the style's own statistics at that layer, and after the upsampling that reaches a skip's resolution
  appends the skip's channels, each times its fixed scale (the weight file's ``"<index>.scale"``), to the path
  cropped to the skip's size; blends, masks and alpha apply at every input alike; a decoder trained with weakened
  skips (the file's ``skip_strength`` s, one for all or one per skip, 1 when absent) is fed each skip times
  1 - alpha * (1 - s), after the blend with alpha;
* a blend of styles is sum_i w_i AdaIN(f(c), f(s_i)), with w normalised to sum 1;
* the strength alpha gives t = alpha * target + (1 - alpha) * f(c), decoded by g;
* a mask gives region k of the content style k, with the content statistics of
  region k taken over that region only (soft masks are per-position weights,
  averaged down to the feature grid);
* grain (ours, not the paper's): a decoder file's ``grain`` g (0 when absent) adds g * alpha * n to what the
  encoder sees of the content, clipped to [0, 1], n (3, H, W) being given noise (the production draws it from
  torch's generator seeded 0);
* strokes (ours, not the paper's): a decoder file's ``strokes`` k adds k * alpha * s to its deepest input t (C, h, w)
  (after the blend with alpha), where, per channel c, s_c = psi_c / std(psi_c) * std(t_c) * flat (stds over the
  map, with Bessel's correction):
  - G: a Gaussian of sigma 4 cells, radius 12, normalised to sum 1, applied with the map's edges replicated;
  - theta, the flow: J = G * (sum_c gx^2, sum_c gx gy, sum_c gy^2), gx and gy central differences of t (edges
    replicated); theta = 1/2 atan2(2 J_xy, J_xx - J_yy) + pi/2, modulo pi;
  - psi_c = sum_j w_j (n_c correlated with K_j), n (C, h + 18, w + 18) being given white noise (the production
    draws it from torch's generator seeded 0 as one array), the correlation "valid"; K_j (19 x 19) the Gaussian
    exp(-u^2 / 18 - v^2 / 0.72) with u, v the offsets along and across the angle pi j / 8, scaled to a sum of
    squares of 1; w_j = max(0, 1 - |d_j|), d_j the difference of 8 theta / pi and j taken modulo 8 into [-4, 4);
  - flat = clip(1 - sqrt(mean_c((G * t_c^2 - (G * t_c)^2) / var(t_c))), 0, 1), the local variance clipped at 0 and
    a channel of variance at most 1e-10 (one that does not vary, up to rounding) counting 0;
* colour preservation (Gatys et al., 2016): ``coral`` maps the style's pixels
  x -> Sigma_c^(1/2) Sigma_s^(-1/2) (x - mu_s) + mu_c; ``luminance`` stylizes
  Y (BT.601) of content and style and keeps the content's Cb, Cr.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

EPS = 1e-5
#: 3x3 convolutions per VGG block up to conv4_1 (the encoder stops at relu4_1).
BLOCKS = {"vgg19": (2, 2, 4, 1), "vgg16": (2, 2, 3, 1)}
State = dict[str, np.ndarray]


# ---- the networks, layer by layer in the original nn.Sequential order -------------

def encoder_layout(arch: str) -> list[str]:
    """Layer kinds in order: a fixed 1x1 conv, then per block (pad, conv, relu) x n and a max-pool."""
    layout = ["conv"]
    blocks = BLOCKS[arch]
    for b, n in enumerate(blocks):
        layout += ["pad", "conv", "relu"] * n
        if b < len(blocks) - 1:
            layout.append("pool")
    return layout


def decoder_layout(arch: str, depth: int = 4, skips: Sequence[int] = (), extra: int = 0) -> list[str]:
    """The encoder's blocks up to relu<depth>_1 backwards, pools becoming nearest 2x upsampling; no ReLU
    after the last conv; a "join" after the upsampling that reaches relu<k>_1 for each k in ``skips``; ``extra``
    more (pad, conv, relu) in the first block."""
    blocks = (*BLOCKS[arch][: depth - 1], 1 + extra)[::-1]
    layout: list[str] = []
    for b, n in enumerate(blocks):
        layout += ["pad", "conv", "relu"] * n
        if b < len(blocks) - 1:
            layout.append("up")
            if depth - b - 1 in skips:
                layout.append("join")
    return layout[:-1]


def decoder_depth(dec: State) -> int:
    """Which relu<depth>_1 a decoder decodes, from the input channels of its first conv (256: 3, 512: 4)."""
    return {256: 3, 512: 4}[dec["1.weight"].shape[1]]


def decoder_extra(arch: str, dec: State) -> int:
    """How many more convs a decoder holds than the mirror of the encoder up to its layer."""
    mirror = decoder_layout(arch, decoder_depth(dec), decoder_skips(dec)).count("conv")
    return sum(k.endswith(".weight") and v.ndim == 4 for k, v in dec.items()) - mirror


def decoder_skips(dec: State) -> list[int]:
    """The relu<k>_1 a decoder takes besides its own layer, from the length of its scales (64: 1, 128: 2,
    256: 3)."""
    return sorted({64: 1, 128: 2, 256: 3}[v.shape[0]] for k, v in dec.items() if k.endswith(".scale"))


def conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Valid cross-correlation of x (C, H, W) with weight (O, C, kh, kw), plus bias."""
    windows = sliding_window_view(x, weight.shape[2:], axis=(1, 2))  # C H' W' kh kw
    out = np.tensordot(windows, weight, axes=([0, 3, 4], [1, 2, 3]))  # H' W' O
    return out.transpose(2, 0, 1) + bias[:, None, None]


def max_pool_ceil(x: np.ndarray) -> np.ndarray:
    """2x2 max-pool, stride 2, keeping a last partial row/column (ceil mode)."""
    c, h, w = x.shape
    padded = np.full((c, h + h % 2, w + w % 2), -np.inf)
    padded[:, :h, :w] = x
    return padded.reshape(c, padded.shape[1] // 2, 2, padded.shape[2] // 2, 2).max(axis=(2, 4))


def run_layers(x: np.ndarray, layout: Sequence[str], state: State, skips: Sequence[np.ndarray] = ()
               ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Apply the layers (each "join" appending the next of ``skips``); returns the output and the output of the
    first ReLU after each pool (relu*_1)."""
    taps, block_start, pending = [], True, list(skips)
    for i, kind in enumerate(layout):
        if kind == "join":
            skip = pending.pop(0)
            x = np.concatenate([x[:, : skip.shape[1], : skip.shape[2]], skip * state[f"{i}.scale"][:, None, None]])
            continue
        if kind == "pad":
            x = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="reflect")
        elif kind == "conv":
            x = conv(x, state[f"{i}.weight"], state[f"{i}.bias"])
        elif kind == "relu":
            x = np.maximum(x, 0.0)
            if block_start:
                taps.append(x)
            block_start = False
        elif kind == "pool":
            x, block_start = max_pool_ceil(x), True
        else:  # "up"
            x = x.repeat(2, axis=1).repeat(2, axis=2)
    return x, taps


def encode_all(img: np.ndarray, state: State, arch: str) -> list[np.ndarray]:
    """relu1_1, relu2_1, relu3_1, relu4_1 of an image (3, H, W)."""
    return run_layers(img, encoder_layout(arch), state)[1]


def encode(img: np.ndarray, state: State, arch: str, depth: int = 4) -> np.ndarray:
    """relu<depth>_1 of an image (3, H, W): relu4_1 as in the paper."""
    return encode_all(img, state, arch)[depth - 1]


def decode(feats: Sequence[np.ndarray], state: State, arch: str, size: tuple[int, int]) -> np.ndarray:
    """Decode features (of the decoder's skips, shallowest first, then its layer) to an image, keeping the
    top-left ``size`` (H, W), clipped."""
    layout = decoder_layout(arch, decoder_depth(state), decoder_skips(state), decoder_extra(arch, state))
    out = run_layers(feats[-1], layout, state, skips=list(feats[:-1])[::-1])[0]
    return np.clip(out[:, : size[0], : size[1]], 0.0, 1.0)


# ---- AdaIN ------------------------------------------------------------------------

def stats(feat: np.ndarray, weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and sqrt(population variance + eps) of (C, H, W), optionally weighted by (H, W)."""
    w = np.ones(feat.shape[1:]) if weight is None else weight
    w = w / w.sum()
    mean = (feat * w).sum(axis=(1, 2))
    var = (((feat - mean[:, None, None]) ** 2) * w).sum(axis=(1, 2))
    return mean, np.sqrt(var + EPS)


def adain(content: np.ndarray, style_mean: np.ndarray, style_std: np.ndarray,
          content_stats: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """sigma(y) * (x - mu(x)) / sigma(x) + mu(y), with the content's own statistics unless given."""
    mean, std = stats(content) if content_stats is None else content_stats
    return style_std[:, None, None] * (content - mean[:, None, None]) / std[:, None, None] + style_mean[:, None, None]


def adaptive_avg_pool(mask: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Average (H, W) into (h, w) cells; cell i spans [floor(i*H/h), ceil((i+1)*H/h))."""
    h_in, w_in = mask.shape
    out = np.empty(out_hw)
    for i in range(out_hw[0]):
        r0, r1 = (i * h_in) // out_hw[0], -((-(i + 1) * h_in) // out_hw[0])
        for j in range(out_hw[1]):
            c0, c1 = (j * w_in) // out_hw[1], -((-(j + 1) * w_in) // out_hw[1])
            out[i, j] = mask[r0:r1, c0:c1].mean()
    return out


# ---- strokes ----------------------------------------------------------------------

def gaussian(x: np.ndarray, sigma: float = 4.0) -> np.ndarray:
    """Each channel of (C, H, W) filtered by a normalised Gaussian of radius 3 sigma, edges replicated."""
    radius = int(3 * sigma)
    g = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma ** 2))
    g /= g.sum()
    padded = np.pad(x, ((0, 0), (radius, radius), (radius, radius)), mode="edge")
    rows = (sliding_window_view(padded, 2 * radius + 1, axis=2) * g).sum(-1)
    return (sliding_window_view(rows, 2 * radius + 1, axis=1) * g).sum(-1)


def flow(t: np.ndarray) -> np.ndarray:
    """The direction (h, w) in [0, pi) in which the map t (C, h, w) changes least."""
    p = np.pad(t, ((0, 0), (1, 1), (1, 1)), mode="edge")
    gx, gy = (p[:, 1:-1, 2:] - p[:, 1:-1, :-2]) / 2, (p[:, 2:, 1:-1] - p[:, :-2, 1:-1]) / 2
    jxx, jxy, jyy = gaussian(np.stack([(gx * gx).sum(0), (gx * gy).sum(0), (gy * gy).sum(0)]))
    return np.mod(0.5 * np.arctan2(2 * jxy, jxx - jyy) + np.pi / 2, np.pi)


def stroke_field(t: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """s (C, h, w) of the deepest input t, from white ``noise`` (C, h + 18, w + 18)."""
    theta = flow(t)
    r = np.arange(-9, 10)
    yy, xx = np.meshgrid(r, r, indexing="ij")
    psi = np.zeros_like(t)
    for j in range(8):
        a = np.pi * j / 8
        u, v = xx * np.cos(a) + yy * np.sin(a), -xx * np.sin(a) + yy * np.cos(a)
        kernel = np.exp(-u ** 2 / 18 - v ** 2 / 0.72)
        kernel /= np.sqrt((kernel ** 2).sum())
        d = np.mod(8 * theta / np.pi - j + 4, 8) - 4
        filtered = (sliding_window_view(noise, kernel.shape, axis=(1, 2)) * kernel).sum(axis=(-2, -1))
        psi += np.maximum(0.0, 1 - np.abs(d)) * filtered
    local = np.maximum(gaussian(t * t) - gaussian(t) ** 2, 0.0)
    var = t.var(axis=(1, 2), ddof=1)[:, None, None]
    ratio = np.divide(local, var, out=np.zeros_like(local), where=var > 1e-10)  # a constant channel: 0
    flat = np.clip(1 - np.sqrt(ratio.mean(0)), 0.0, 1.0)
    scale = t.std(axis=(1, 2), ddof=1) / psi.std(axis=(1, 2), ddof=1)
    return psi * scale[:, None, None] * flat


# ---- colour -----------------------------------------------------------------------

def _sqrtm(cov: np.ndarray, power: float) -> np.ndarray:
    vals, vecs = np.linalg.eigh(cov)
    return (vecs * vals**power) @ vecs.T


def coral(style: np.ndarray, content: np.ndarray) -> np.ndarray:
    """The style image (3, H, W) with the colour mean and covariance of the content."""
    s, c = style.reshape(3, -1), content.reshape(3, -1)
    mu_s, mu_c = s.mean(1, keepdims=True), c.mean(1, keepdims=True)
    a = _sqrtm(np.cov(c, bias=True), 0.5) @ _sqrtm(np.cov(s, bias=True), -0.5)
    return (a @ (s - mu_s) + mu_c).reshape(style.shape)


def luma(img: np.ndarray) -> np.ndarray:
    """BT.601 luma Y of an RGB image (3, H, W) -> (H, W)."""
    return 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]


def grey(img: np.ndarray) -> np.ndarray:
    """The luma of ``img`` as a three-channel grey image."""
    return np.repeat(luma(img)[None], 3, axis=0)


def with_content_chroma(stylized: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Y of ``stylized`` with the (JPEG/JFIF) Cb, Cr of ``content``, back to RGB in [0, 1]."""
    y = luma(stylized)
    cb, cr = (content[2] - luma(content)) / 1.772, (content[0] - luma(content)) / 1.402
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb])
    return np.clip(rgb, 0.0, 1.0)


# ---- the whole transfer -----------------------------------------------------------

def stylize(content: np.ndarray, styles: Sequence[np.ndarray], enc: State, dec: State, arch: str,
            weights: Sequence[float] | None = None, alpha: float = 1.0, preserve_color: str = "none",
            masks: np.ndarray | None = None, skip_strength: float | Sequence[float] = 1.0, grain: float = 0.0,
            noise: np.ndarray | None = None, strokes: float = 0.0, stroke_noise: np.ndarray | None = None
            ) -> np.ndarray:
    """Stylize ``content`` (3, H, W) with ``styles``; ``masks`` (K, H, W) sum to 1 per pixel; ``noise`` (3, H, W)
    is needed for a ``grain`` above 0, ``stroke_noise`` (C, h + 18, w + 18) for ``strokes`` above 0. Returns
    [0, 1]."""
    w = np.ones(len(styles)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    if preserve_color == "coral":
        styles = [coral(s, content) for s in styles]
    c_in = content
    if preserve_color == "luminance":
        c_in, styles = grey(content), [grey(s) for s in styles]
    if grain:
        c_in = np.clip(c_in + grain * alpha * noise, 0.0, 1.0)
    levels = [*decoder_skips(dec), decoder_depth(dec)]  # AdaIN works at every input of the decoder
    c_feats, s_feats = encode_all(c_in, enc, arch), [encode_all(s, enc, arch) for s in styles]
    inputs = []
    for level in levels:
        f = c_feats[level - 1]
        style_stats = [stats(sf[level - 1]) for sf in s_feats]
        if masks is None:
            target = sum(wi * adain(f, *st) for wi, st in zip(w, style_stats, strict=True))
        else:
            fm = [adaptive_avg_pool(m, f.shape[1:]) for m in masks]
            target = sum(m * adain(f, *st, content_stats=stats(f, m)) for m, st in zip(fm, style_stats,
                                                                                     strict=True))
        inputs.append(alpha * target + (1.0 - alpha) * f)
    strengths = np.broadcast_to(np.asarray(skip_strength, dtype=np.float64), (len(levels) - 1,))
    inputs = [x * (1.0 - alpha * (1.0 - s)) for x, s in zip(inputs[:-1], strengths, strict=True)] + inputs[-1:]
    if strokes:
        inputs[-1] = inputs[-1] + strokes * alpha * stroke_field(inputs[-1], stroke_noise)
    out = decode(inputs, dec, arch, content.shape[1:])
    return with_content_chroma(out, content) if preserve_color == "luminance" else out


def to_uint8(img: np.ndarray) -> np.ndarray:
    """8-bit (H, W, 3) like torchvision's save_image: clamp to [0, 1], x255, +0.5, truncate."""
    return np.floor(np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)
