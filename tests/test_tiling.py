"""Tiled encoder/decoder passes match the untiled ones."""

import os
import subprocess
import sys

import pytest
import torch

from adain import Stylizer, ops, tiling
from adain.errors import InputError
from adain.images import read_image, resize_shorter, to_uint8
from adain.net import Decoder
from tests.conftest import random_networks


@pytest.fixture(scope="module")
def networks():
    return random_networks("vgg19", seed=3)


@pytest.fixture(scope="module")
def image(content_paths):
    # 301 x 451: not a multiple of 8 or of the tile size
    return resize_shorter(read_image(content_paths[2]), 301)[None]


@torch.inference_mode()
@pytest.mark.parametrize("layer", ["relu4_1", "relu3_1", "skips"])
def test_tiled_pipeline_matches_untiled(networks, image, layer):
    if layer == "relu4_1":
        enc, dec = networks
    else:  # "skips": relu3_1 with skips from relu1_1 and relu2_1, each of its own size
        skips = ("relu1_1", "relu2_1") if layer == "skips" else ()
        enc, dec = random_networks("vgg19", seed=3, layer="relu3_1", skips=skips)
    feats = enc.levels(image, dec.inputs)
    tiled_feats = tiling.encode_tiled(enc, image, tile=128, inputs=dec.inputs)
    assert [f.shape for f in tiled_feats] == [f.shape for f in feats]
    torch.testing.assert_close(tiled_feats, feats, atol=1e-4, rtol=1e-4)

    styles = enc.levels(torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0)), dec.inputs)
    # statistics over the whole image, not per tile
    target = [ops.adain(f, ops.channel_stats(s)) for f, s in zip(feats, styles, strict=True)]
    full = dec(target, tuple(image.shape[-2:])).clamp(0, 1)
    tiled = tiling.decode_tiled(dec, target, tuple(image.shape[-2:]), tile=128).clamp(0, 1)
    assert tiled.shape == full.shape == image.shape
    diff = ((tiled - full).abs() * 255).flatten()
    assert (diff <= 2).float().mean() >= 0.99
    assert diff.max() < 1.0  # with wide enough halos the tiles agree to rounding


@torch.inference_mode()
def test_halo_is_what_makes_tiles_agree(networks, image, monkeypatch):
    """With the halo cut to 8 pixels, seams appear: the comparison above can fail."""
    enc, _ = networks
    monkeypatch.setattr(tiling, "ENCODER_HALO", 8)
    diff = (tiling.encode_tiled(enc, image, tile=128)[0] - enc(image)).abs().max()
    assert diff > 1e-2


def test_tile_must_be_multiple_of_8(networks, image):
    with pytest.raises(ValueError, match="multiple of 8"):
        tiling.encode_tiled(networks[0], image, tile=100)


# ---- wired in: the Stylizer (and so the CLI and the service) tiles above a pixel threshold ----------------


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    """Within 2/255 on at least 99% of the 8-bit values."""
    assert a.shape == b.shape
    diff = (to_uint8(a).int() - to_uint8(b).int()).abs()
    assert (diff <= 2).float().mean() >= 0.99, diff.float().mean()


@pytest.fixture(scope="module")
def small(image):
    return resize_shorter(image[0], 161)  # 161 x 241: 2 x 2 tiles of 128


def test_stylizer_tiles_above_the_threshold_only(networks, small, style_paths):
    content, pixels = small, small.shape[-1] * small.shape[-2]
    style = resize_shorter(read_image(style_paths[0]), 64)
    whole = Stylizer(*networks, device="cpu", tiling="never")
    auto = Stylizer(*networks, device="cpu", tile_pixels=pixels - 1, tile_size=128)
    reference = whole.stylize(content, [style])
    assert whole.tiled_passes == 0
    _close(auto.stylize(content, [style]), reference)
    assert auto.tiled_passes == 2  # the content's encoder and decoder passes; the 64 px style runs whole
    auto.tile_pixels = pixels  # not above: whole
    auto.stylize(content, [style])
    assert auto.tiled_passes == 2
    always = Stylizer(*networks, device="cpu", tiling="always", tile_size=128)
    _close(always.stylize(content, [style], preserve_color="luminance", alpha=0.7),
           whole.stylize(content, [style], preserve_color="luminance", alpha=0.7))
    assert always.tiled_passes == 3  # the style's encoder pass too


def test_grain_is_the_same_in_tiles(networks, small, style_paths):
    """The grain's noise is drawn for the whole image, so a tiled image gets the untiled image's."""
    style = resize_shorter(read_image(style_paths[0]), 64)
    whole = Stylizer(*networks, device="cpu", tiling="never", grain=0.2)
    always = Stylizer(*networks, device="cpu", tiling="always", tile_size=128, grain=0.2)
    reference = whole.stylize(content := small, [style])
    _close(always.stylize(content, [style]), reference)
    assert always.tiled_passes == 3
    plain = Stylizer(*networks, device="cpu", tiling="never").stylize(content, [style])
    assert (to_uint8(plain).int() - to_uint8(reference).int()).abs().float().mean() > 2  # the grain shows


def test_strokes_are_the_same_in_tiles(networks, small, style_paths):
    """The stroke noise is made for the whole deepest map before it is decoded, so tiles get the untiled image's."""
    enc, dec = networks
    stroked = Decoder(dec.arch, dec.layer, strokes=2.0)
    stroked.load_state_dict(dec.state_dict())
    style = resize_shorter(read_image(style_paths[0]), 64)
    reference = Stylizer(enc, stroked, device="cpu", tiling="never").stylize(small, [style])
    always = Stylizer(enc, stroked, device="cpu", tiling="always", tile_size=128)
    _close(always.stylize(small, [style]), reference)
    assert always.tiled_passes == 3
    plain = Stylizer(enc, dec, device="cpu", tiling="never").stylize(small, [style])
    assert (to_uint8(plain).int() - to_uint8(reference).int()).abs().float().mean() > 0.5  # the strokes show


def test_tiled_bf16_keeps_bf16_features(networks, small):
    st = Stylizer(*networks, device="cpu", precision="bf16", tiling="always", tile_size=128)
    assert st.encode(small)[-1].dtype == torch.bfloat16 and st.tiled_passes == 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tiling": "sometimes"}, "tiling must be one of auto, always, never"),
    ({"tile_size": 100}, "multiple of 8"),
    ({"tile_size": 0}, "multiple of 8"),
    ({"tile_pixels": 0}, "tile_pixels must be at least 1"),
])
def test_bad_tiling_options(networks, kwargs, message):
    with pytest.raises(InputError, match=message):
        Stylizer(*networks, device="cpu", **kwargs)


def test_cli_tiles_above_tile_pixels(tmp_path, content_paths, style_paths, weight_files):
    """`adain stylize` tiles above --tile-pixels (and says so on stderr), not with --tiling never; same image."""
    w = weight_files["vgg19"]
    common = [sys.executable, "-m", "adain.cli", "stylize", "--content", str(content_paths[2]), "--style",
              str(style_paths[0]), "--content-size", "200", "--style-size", "64", "--encoder", str(w["encoder_st"]),
              "--decoder", str(w["decoder_st"]), "--device", "cpu", "--tile-pixels", "10000", "--tile-size", "64"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {name: subprocess.Popen([*common, *extra, "-o", str(tmp_path / f"{name}.png")], env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for name, extra in (("tiled", []), ("whole", ["--tiling", "never"]))}
    err = {name: p.communicate(timeout=300)[1] for name, p in runs.items()}
    assert all(p.returncode == 0 for p in runs.values()), err
    assert "ran in tiles of 64 px (more than --tile-pixels 10000 pixels" in err["tiled"]
    assert "tiles" not in err["whole"]
    _close(read_image(tmp_path / "tiled.png"), read_image(tmp_path / "whole.png"))
