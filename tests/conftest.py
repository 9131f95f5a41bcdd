"""Shared fixtures: small random weight files in the canonical layouts, and real images."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from adain import Stylizer
from adain.bundles.layouts import save_safetensors
from adain.images import prepare, read_image
from adain.net import Decoder, Encoder, SkipJoin

from .postgres_fixtures import postgres_server  # noqa: F401  (a session fixture: one server for every module)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not DATA.is_dir():  # a checkout elsewhere: ../shared beside the repository
    DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """../shared/data with content/ and style/."""
    if not (DATA / "content").is_dir():
        pytest.fail(f"test data not found at {DATA}")
    return DATA


@pytest.fixture(scope="session")
def content_paths(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "content").glob("*.jpg"))[:8]


@pytest.fixture(scope="session")
def style_paths(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "style").glob("*.jpg"))[:8]


TINY_SIZE = 40  # shorter side of tiny_content


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread: tiny convolutions gain nothing from more, and the test machines are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """Use with ``pytestmark = pytest.mark.usefixtures("single_thread")``: the module's tests on one thread."""
    with one_thread():
        yield


@pytest.fixture(scope="module")
def tiny_stylizer() -> Stylizer:
    """A CPU Stylizer on random VGG16 weights (seed 1)."""
    enc, dec = random_networks("vgg16", seed=1)
    return Stylizer(enc, dec, device="cpu")


@pytest.fixture(scope="module")
def tiny_content(content_paths: list[Path]) -> torch.Tensor:
    """The first real content photo, shorter side :data:`TINY_SIZE`."""
    return prepare(read_image(content_paths[0]), TINY_SIZE, True)


def random_networks(arch: str, seed: int = 0, layer: str = "relu4_1",
                    skips: tuple[str, ...] = (), extra_convs: int = 0) -> tuple[Encoder, Decoder]:
    """Encoder/decoder (AdaIN at ``layer``, and at ``skips``; ``extra_convs`` in the decoder) with random weights
    scaled so activations stay O(1) and outputs land in [0, 1]. The encoder's weights depend only on ``seed``."""
    g = torch.Generator().manual_seed(seed)
    enc, dec = Encoder(arch, layer), Decoder(arch, layer, skips, extra_convs=extra_convs)
    for net in (enc, dec):
        for m in net.layers:
            if isinstance(m, torch.nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                m.weight.data = torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5
                m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.05
            elif isinstance(m, SkipJoin):
                m.scale.data = 0.5 + torch.rand(m.scale.shape, generator=g)
    last = [m for m in dec.layers if isinstance(m, torch.nn.Conv2d)][-1]
    last.weight.data *= 0.25
    # Centre each output channel on 0.5 for a smooth probe image: without this the random
    # biases push some channels to 0 or 1 and the outputs saturate (vgg16, seed 3: a third of the values).
    probe = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(32, 32), mode="bilinear")
    with torch.no_grad():
        last.bias.data += 0.5 - dec(enc.levels(probe, dec.inputs)).mean((0, 2, 3))
    return enc, dec


WEAK_SKIP_STRENGTH = 0.4
GRAIN = 0.2  # of "decoder_grain"
STROKES = 2.0  # of "decoder_strokes"
EXTRA_CONVS = 2  # of "decoder_extra"


@pytest.fixture(scope="session")
def weight_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """{arch: {"encoder_pth", "decoder_pth", "encoder_st", "decoder_st", "encoder_relu3_1", "decoder_relu3_1",
    "encoder_skips", "decoder_skips", "encoder_weak", "decoder_weak", "encoder_deep", "decoder_deep",
    "encoder_grain", "decoder_grain", "encoder_strokes", "decoder_strokes", "encoder_extra", "decoder_extra"}}: random
    weights on disk. "decoder_relu3_1" (safetensors) decodes relu3_1 of the same encoder (so "encoder_relu3_1" is
    "encoder_st"); "decoder_skips" decodes relu3_1 with skips from relu1_1 and relu2_1; "decoder_weak" is it with
    a skip strength of WEAK_SKIP_STRENGTH in its metadata; "decoder_deep" decodes relu4_1 with skips from
    relu1_1, relu2_1 and relu3_1, the first two at that strength, relu3_1 whole; "decoder_grain" is "decoder_weak"
    with a grain of GRAIN in its metadata, "decoder_strokes" with strokes of STROKES instead; "decoder_extra" is
    a relu3_1 decoder with those weakened skips and EXTRA_CONVS extra convs.

    The .pth files are stored as the original release stores them (a flat state dict;
    the VGG19 encoder holds every layer of VGG19 up to relu5_4, keys '0.weight'...'51.bias').
    """
    root = tmp_path_factory.mktemp("weights")
    files: dict[str, dict[str, Path]] = {}
    for arch in ("vgg19", "vgg16"):
        enc, dec = random_networks(arch)
        state = dict(enc.layers.state_dict())
        if arch == "vgg19":  # the rest of VGG19, as in vgg_normalised.pth
            for idx, cin in ((32, 512), (35, 512), (38, 512), (42, 512), (45, 512), (48, 512), (51, 512)):
                state[f"{idx}.weight"] = torch.randn(512, cin, 3, 3) * 0.01
                state[f"{idx}.bias"] = torch.zeros(512)
        paths = {
            "encoder_pth": root / f"{arch}_vgg_normalised.pth",
            "decoder_pth": root / f"{arch}_decoder.pth",
            "encoder_st": root / f"{arch}_encoder.safetensors",
            "decoder_st": root / f"{arch}_decoder.safetensors",
        }
        torch.save(state, paths["encoder_pth"])
        torch.save(dec.layers.state_dict(), paths["decoder_pth"])
        save_safetensors(enc, paths["encoder_st"], arch)
        save_safetensors(dec, paths["decoder_st"], arch)
        paths["encoder_relu3_1"], paths["decoder_relu3_1"] = paths["encoder_st"], root / f"{arch}_decoder31.safetensors"
        save_safetensors(random_networks(arch, layer="relu3_1")[1], paths["decoder_relu3_1"], arch)
        paths["encoder_skips"], paths["decoder_skips"] = paths["encoder_st"], root / f"{arch}_decoder_skips.safetensors"
        skip_decoder = random_networks(arch, layer="relu3_1", skips=("relu1_1", "relu2_1"))[1]
        save_safetensors(skip_decoder, paths["decoder_skips"], arch)
        paths["encoder_weak"], paths["decoder_weak"] = paths["encoder_st"], root / f"{arch}_decoder_weak.safetensors"
        skip_decoder.skip_strength = WEAK_SKIP_STRENGTH
        save_safetensors(skip_decoder, paths["decoder_weak"], arch)
        paths["encoder_deep"], paths["decoder_deep"] = paths["encoder_st"], root / f"{arch}_decoder_deep.safetensors"
        deep_decoder = random_networks(arch, skips=("relu1_1", "relu2_1", "relu3_1"))[1]
        deep_decoder.skip_strength = (WEAK_SKIP_STRENGTH, WEAK_SKIP_STRENGTH, 1.0)
        save_safetensors(deep_decoder, paths["decoder_deep"], arch)
        paths["encoder_grain"], paths["decoder_grain"] = paths["encoder_st"], root / f"{arch}_decoder_grain.safetensors"
        skip_decoder.grain = GRAIN
        save_safetensors(skip_decoder, paths["decoder_grain"], arch)
        paths["encoder_strokes"] = paths["encoder_st"]
        paths["decoder_strokes"] = root / f"{arch}_decoder_strokes.safetensors"
        skip_decoder.grain, skip_decoder.strokes = 0.0, STROKES
        save_safetensors(skip_decoder, paths["decoder_strokes"], arch)
        paths["encoder_extra"], paths["decoder_extra"] = paths["encoder_st"], root / f"{arch}_decoder_extra.safetensors"
        extra = random_networks(arch, layer="relu3_1", skips=("relu1_1", "relu2_1"), extra_convs=EXTRA_CONVS)[1]
        extra.skip_strength = WEAK_SKIP_STRENGTH
        save_safetensors(extra, paths["decoder_extra"], arch)
        files[arch] = paths
    return files
