"""Encoder normalisation: exact up to per-channel scales, mean activations of 1, rarely active channels kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adain.bundles.layouts import save_safetensors
from adain.bundles.normalize import DEAD, apply_scales, load_scales, mean_activations, normalise
from adain.images import prepare, read_image
from adain.net import Encoder
from adain.train.calibrate import main
from tests.conftest import random_networks

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def photos(content_paths: list[Path]) -> list[torch.Tensor]:
    return [prepare(read_image(p), 48, True) for p in content_paths[:4]]


def taps(enc: Encoder, images: list[torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        return enc.features(torch.stack(images))


def test_normalised_features_are_the_original_divided_by_their_scales(photos: list[torch.Tensor]) -> None:
    enc, _ = random_networks("vgg16", seed=3)
    state, scales = normalise(enc, photos)
    normalised = Encoder("vgg16")
    normalised.layers.load_state_dict(state)
    tap_keys = ["2", "9", "16", "26"]  # the convs before relu1_1 .. relu4_1 in the vgg16 layout
    for key, raw, norm in zip(tap_keys, taps(enc, photos), taps(normalised, photos), strict=True):
        s = torch.tensor(scales[key])
        s = torch.where(s >= DEAD * s.median(), s, torch.ones_like(s)).view(1, -1, 1, 1).float()
        torch.testing.assert_close(norm, raw / s, rtol=1e-3, atol=1e-3 * float(norm.abs().max()))
        active = s.flatten() != 1
        channel_means = norm.mean((0, 2, 3))[active]
        torch.testing.assert_close(channel_means, torch.ones_like(channel_means), rtol=1e-3, atol=1e-3)


def test_rarely_active_channels_keep_their_scale() -> None:
    enc, _ = random_networks("vgg16", seed=5)
    state = {k: v.clone() for k, v in enc.layers.state_dict().items()}
    scales = {"2": [1.0] * 63 + [1e-4]}
    out = apply_scales(state, scales)
    torch.testing.assert_close(out["2.weight"][-1], state["2.weight"][-1])
    torch.testing.assert_close(out["5.weight"][:, -1], state["5.weight"][:, -1])


def test_no_images_is_an_error() -> None:
    with pytest.raises(ValueError, match="no images"):
        mean_activations(Encoder("vgg16"), [])


def test_the_command_writes_scales_that_load(tmp_path: Path, data_dir: Path) -> None:
    enc, _ = random_networks("vgg16", seed=6)
    enc_file = tmp_path / "enc.safetensors"
    save_safetensors(enc, enc_file, "vgg16")
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted((data_dir / "content").glob("*.jpg"))[:5]:
        (photos / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "scales.json"
    assert main(["--encoder", str(enc_file), "--photos", str(photos), "--holdout", "2", "--size", "32",
                 "-o", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["photos"] == 3 and record["size"] == 32
    scales = load_scales(out)
    assert list(scales) == ["2", "5", "9", "12", "16", "19", "22", "26"]
    assert all(v >= 0 for values in scales.values() for v in values)
