"""The production pipeline agrees with the independent float64 numpy oracle (tests/oracle.py).

Same random weights, fp32 on the CPU, no resizing; images are small crops of the
real test images with sides that are not multiples of 8, and styles of
different sizes. The 8-bit outputs must agree to 1/255 on at least 99.9% of the
pixels (all three channels of a pixel within 1).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import load_file

from adain.images import read_image, to_uint8
from adain.masks import read_masks
from adain.net import Encoder
from adain.stylizer import Stylizer

from . import oracle

CONTENT_SIZE = (45, 35)  # W, H: neither a multiple of 8
STYLE_SIZES = ((38, 30), (29, 43), (50, 27))
MIN_AGREEMENT = 0.999

#: case -> (arch, weight files (format, "relu3_1" for a decoder of that layer, "skips" for one with skips, "weak"
#: for one with weakened skips, "deep" for a relu4_1 one with skips down from relu3_1, a strength for each, "grain"
#: for the weakened one with a grain, "strokes" for it with strokes instead, "extra" for a weakened one with extra
#: convs),
#: number of styles, keyword arguments, mask kind)
CASES: dict[str, tuple[str, str, int, dict, str | None]] = {
    "single": ("vgg19", "pth", 1, {}, None),
    "blend3": ("vgg19", "pth", 3, {"weights": (0.5, 0.3, 0.2)}, None),
    "alpha": ("vgg19", "pth", 1, {"alpha": 0.5}, None),
    "coral": ("vgg19", "pth", 1, {"preserve_color": "coral"}, None),
    "luminance": ("vgg19", "pth", 1, {"preserve_color": "luminance"}, None),
    "mask_labels": ("vgg19", "pth", 2, {}, "labels"),
    "mask_soft_alpha": ("vgg19", "pth", 2, {"alpha": 0.7}, "soft"),
    "vgg16": ("vgg16", "st", 1, {}, None),
    "relu3_1": ("vgg16", "relu3_1", 2, {"weights": (0.7, 0.3)}, None),  # a decoder of relu3_1: AdaIN works there
    "relu3_1_mask": ("vgg19", "relu3_1", 2, {"alpha": 0.8}, "labels"),
    # a relu3_1 decoder with skips from relu1_1 and relu2_1: AdaIN at all three
    "skips": ("vgg16", "skips", 2, {"weights": (0.6, 0.4), "alpha": 0.9}, None),
    "skips_mask": ("vgg16", "skips", 2, {}, "soft"),
    "skips_single": ("vgg16", "skips", 1, {}, None),
    # the same decoder trained with weakened skips: its file says how strong they are
    "weak_skips": ("vgg16", "weak", 1, {}, None),
    "weak_skips_alpha": ("vgg16", "weak", 2, {"weights": (0.3, 0.7), "alpha": 0.6}, None),
    # a relu4_1 decoder with weakened skips from relu1_1, relu2_1 and relu3_1: AdaIN at all four
    "deep_skips": ("vgg16", "deep", 2, {"weights": (0.6, 0.4), "alpha": 0.8}, None),
    "deep_skips_mask": ("vgg19", "deep", 2, {}, "labels"),
    # the weak-skips decoder with a grain in its file: noise added to the content before it is encoded
    "grain": ("vgg16", "grain", 2, {"weights": (0.3, 0.7), "alpha": 0.6}, None),
    "grain_luminance": ("vgg19", "grain", 1, {"preserve_color": "luminance"}, None),
    # the weak-skips decoder with strokes in its file: oriented noise added to its deepest input where it is flat
    "strokes": ("vgg16", "strokes", 2, {"weights": (0.3, 0.7), "alpha": 0.6}, None),
    "sky_weak_skips": ("vgg16", "weak", 2, {"weights": (0.3, 0.7), "alpha": 0.6}, None),  # "strokes" without them
    # a relu3_1 decoder with weakened skips and extra convs at relu3_1's resolution
    "extra_convs": ("vgg16", "extra", 2, {"weights": (0.3, 0.7), "alpha": 0.6}, None),
}
#: cases stylizing a photo of SKY_SIZE with a flat sky over its upper part ("sky"), where strokes show (the noise
#: is weighted by flatness in a window of 4 cells, 16 px, at relu3_1), instead of "content"
SKY_CASES = {"strokes", "sky_weak_skips"}
SKY_SIZE = (128, 96)  # W, H


def _crop_png(src: Path, size: tuple[int, int], dest: Path) -> Path:
    """A small RGB PNG (lossless, so both pipelines read the same pixels) from a real JPEG."""
    Image.open(src).convert("RGB").resize(size, Image.Resampling.BICUBIC).save(dest)
    return dest


@pytest.fixture(scope="module")
def images(tmp_path_factory, content_paths, style_paths) -> dict[str, Path | list[Path]]:
    """content.png, three styles of different sizes, a label mask and a soft (grey) mask."""
    root = tmp_path_factory.mktemp("oracle_images")
    w, h = CONTENT_SIZE
    yy, xx = np.mgrid[0:h, 0:w]
    labels = ((xx > 0.4 * w) & ((xx - 0.3 * w) ** 2 + (yy - 0.5 * h) ** 2 > (0.25 * h) ** 2)).astype(np.uint8)
    Image.fromarray(labels, mode="L").save(root / "labels.png")
    Image.fromarray((xx * 255 // (w - 1)).astype(np.uint8), mode="L").save(root / "soft.png")
    sky = np.asarray(Image.open(_crop_png(content_paths[0], SKY_SIZE, root / "sky.png")), dtype=np.float64)
    top = int(0.7 * SKY_SIZE[1])
    sky[:top] = np.array([90.0, 140.0, 210.0]) + 30.0 * np.arange(top)[:, None, None] / top
    Image.fromarray(np.round(sky).astype(np.uint8)).save(root / "sky.png")
    return {
        "content": _crop_png(content_paths[0], CONTENT_SIZE, root / "content.png"),
        "sky": root / "sky.png",
        "styles": [_crop_png(p, s, root / f"style{i}.png")
                   for i, (p, s) in enumerate(zip(style_paths[: len(STYLE_SIZES)], STYLE_SIZES, strict=True))],
        "labels": root / "labels.png",
        "soft": root / "soft.png",
    }


def _metadata(path: Path) -> dict[str, str]:
    """The decoder file's metadata (empty for a .pth), read without the adain package."""
    if path.suffix != ".safetensors":
        return {}
    with safe_open(str(path), framework="numpy") as f:
        return f.metadata() or {}


def _skip_strength(path: Path) -> list[float]:
    """The decoder file's ``skip_strength`` metadata (one or one per skip; 1 when absent)."""
    return [float(v) for v in _metadata(path).get("skip_strength", "1").split(",")]


def _grain(path: Path, size: tuple[int, int]) -> dict:
    """The decoder file's ``grain`` (0 when absent) and, when above 0, the noise for a content of ``size`` (W, H):
    standard normal from torch's generator seeded 0, drawn as (3, H, W) (the spec in tests/oracle.py)."""
    grain = float(_metadata(path).get("grain", "0"))
    if not grain:
        return {}
    noise = torch.randn((3, size[1], size[0]), generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    return {"grain": grain, "noise": noise.double().numpy()}


def _strokes(path: Path, enc: oracle.State, arch: str, size: tuple[int, int]) -> dict:
    """The decoder file's ``strokes`` (0 when absent) and, when above 0, the white noise for a content of ``size``
    (W, H): standard normal from torch's generator seeded 0, drawn as one (C, h + 18, w + 18) array for the
    decoder's deepest input of C channels and h x w cells (the spec in tests/oracle.py)."""
    strokes = float(_metadata(path).get("strokes", "0"))
    if not strokes:
        return {}
    c, h, w = oracle.encode(np.zeros((3, size[1], size[0])), enc, arch, oracle.decoder_depth(_raw_state(path))).shape
    noise = torch.randn((c, h + 18, w + 18), generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    return {"strokes": strokes, "stroke_noise": noise.double().numpy()}


def _content_of(name: str) -> str:
    return "sky" if name in SKY_CASES else "content"


def _size_of(name: str) -> tuple[int, int]:
    return SKY_SIZE if name in SKY_CASES else CONTENT_SIZE


def _raw_state(path: Path) -> oracle.State:
    """The weight file's tensors as float64 numpy arrays, read without the adain package."""
    if path.suffix == ".safetensors":
        return {k: v.astype(np.float64) for k, v in load_file(str(path)).items()}
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.double().numpy() for k, v in state.items()}


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64).transpose(2, 0, 1) / 255.0


def _oracle_masks(kind: str, path: Path) -> np.ndarray:
    grey = np.asarray(Image.open(path), dtype=np.float64)
    if kind == "labels":
        return np.stack([grey == 0, grey == 1]).astype(np.float64)
    return np.stack([1.0 - grey / 255.0, grey / 255.0])


def _files(weight_files, arch: str, fmt: str) -> tuple[Path, Path]:
    return weight_files[arch][f"encoder_{fmt}"], weight_files[arch][f"decoder_{fmt}"]


@pytest.fixture(scope="module")
def oracle_outputs(images, weight_files) -> dict[str, np.ndarray]:
    """Oracle 8-bit output (H, W, 3) of every case."""
    outs, states = {}, {}
    for name, (arch, fmt, n, kwargs, mask) in CASES.items():
        if (arch, fmt) not in states:
            states[arch, fmt] = [_raw_state(p) for p in _files(weight_files, arch, fmt)]
        enc, dec = states[arch, fmt]
        styles = [_pixels(p) for p in images["styles"][:n]]
        masks = _oracle_masks(mask, images[mask]) if mask else None
        decoder_file = _files(weight_files, arch, fmt)[1]
        strength = _skip_strength(decoder_file)
        outs[name] = oracle.to_uint8(oracle.stylize(_pixels(images[_content_of(name)]), styles, enc, dec, arch,
                                                    masks=masks, skip_strength=strength,
                                                    **_grain(decoder_file, CONTENT_SIZE),
                                                    **_strokes(decoder_file, enc, arch, _size_of(name)), **kwargs))
    return outs


@pytest.fixture(scope="module")
def stylizers(weight_files) -> dict[tuple[str, str], Stylizer]:
    """One fp32 CPU stylizer per weight-file pair, loaded through the production path."""
    pairs = {(arch, fmt) for arch, fmt, *_ in CASES.values()}
    return {(arch, fmt): Stylizer.from_files(*_files(weight_files, arch, fmt), arch=arch, device="cpu",
                                             precision="fp32") for arch, fmt in pairs}


def _production(images, stylizers, name: str) -> np.ndarray:
    arch, fmt, n, kwargs, mask = CASES[name]
    stylizer = stylizers[arch, fmt]
    masks = read_masks([images[mask]], n) if mask else None
    out = stylizer.stylize(read_image(images[_content_of(name)]), [read_image(p) for p in images["styles"][:n]],
                           mask=masks, content_size=0, style_size=0, **kwargs)
    return to_uint8(out).permute(1, 2, 0).numpy()


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels (H, W, 3) whose three channels differ by at most 1."""
    assert a.shape == b.shape
    return float((np.abs(a.astype(int) - b.astype(int)).max(axis=2) <= 1).mean())


@pytest.mark.parametrize("name", CASES)
def test_matches_oracle(images, stylizers, oracle_outputs, name):
    expected = oracle_outputs[name]
    got = _production(images, stylizers, name)
    assert got.shape == (_size_of(name)[1], _size_of(name)[0], 3)
    # measured: 100% of pixels within 1/255 in every case (max difference 1)
    assert agreement(got, expected) >= MIN_AGREEMENT


@pytest.mark.parametrize("name", CASES)
def test_outputs_are_not_degenerate(oracle_outputs, name):
    """The comparison above means something only if the output has a healthy spread of values."""
    out = oracle_outputs[name]
    assert (out.reshape(-1, 3).std(axis=0) >= 4).all()  # every channel spreads over several grey levels
    assert np.isin(out, (0, 255)).mean() <= 0.02  # hardly any saturation
    assert all(len(np.unique(out[..., ch])) >= 24 for ch in range(3))


@pytest.mark.parametrize(("a", "b"), [("single", "alpha"), ("single", "coral"), ("single", "luminance"),
                                      ("blend3", "single"), ("mask_labels", "mask_soft_alpha"),
                                      ("skips_single", "weak_skips"), ("weak_skips_alpha", "grain"),
                                      ("sky_weak_skips", "strokes"), ("weak_skips_alpha", "extra_convs")])
def test_cases_are_told_apart(oracle_outputs, a, b):
    """Negative control: the agreement measure fails clearly when the settings differ."""
    assert agreement(oracle_outputs[a], oracle_outputs[b]) < 0.5


def test_cli_output_file_matches_oracle(images, weight_files, oracle_outputs, tmp_path):
    """The whole command, down to the written 8-bit PNG."""
    enc, dec = _files(weight_files, "vgg19", "pth")
    out = tmp_path / "out.png"
    cmd = [sys.executable, "-m", "adain.cli", "stylize", "--content", str(images["content"]),
           *(arg for p in images["styles"] for arg in ("--style", str(p))), "--weights", "5,3,2",
           "--content-size", "0", "--style-size", "0", "--encoder", str(enc), "--decoder", str(dec),
           "--arch", "vgg19", "--device", "cpu", "--precision", "fp32", "-o", str(out)]  # the oracle computes fp32
    subprocess.run(cmd, check=True, capture_output=True)
    assert agreement(np.asarray(Image.open(out).convert("RGB")), oracle_outputs["blend3"]) >= MIN_AGREEMENT


@pytest.mark.parametrize("arch", ["vgg19", "vgg16"])
def test_encoder_features_match_oracle(images, weight_files, arch):
    """relu1_1..relu4_1 of Encoder.features equal the oracle's, layer by layer."""
    path = weight_files[arch]["encoder_pth"]
    encoder = Encoder(arch)
    encoder.layers.load_state_dict({k: v for k, v in torch.load(path, weights_only=True).items()
                                    if k in encoder.layers.state_dict()})
    img = _pixels(images["content"])
    with torch.inference_mode():
        feats = encoder.features(torch.from_numpy(img).float()[None])
    expected = oracle.encode_all(img, _raw_state(path), arch)
    assert len(feats) == len(expected) == 4
    for got, want in zip(feats, expected, strict=True):
        assert got.shape[1:] == want.shape
        np.testing.assert_allclose(got[0].double().numpy(), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
