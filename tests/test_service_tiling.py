"""The service runs images above --tile-pixels in tiles: Server-Timing and /metrics say so, the image barely changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adain.images import read_resized, to_uint8
from adain.stylizer import Stylizer
from service.settings import load_settings

from .service_fixtures import SIZE, app_settings, metric, pixels, running_app

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def networks(weight_files: dict) -> dict[str, Path]:
    return weight_files["vgg16"]


def _timing_names(response) -> dict[str, str]:
    """Server-Timing entries, name -> the rest of the entry."""
    parts = (p.strip().split(";", 1) for p in response.headers["server-timing"].split(","))
    return {p[0]: p[1] if len(p) > 1 else "" for p in parts}


@pytest.mark.parametrize("decoder", ["decoder_st", "decoder_skips"])
async def test_images_above_tile_pixels_run_in_tiles(tmp_path: Path, networks: dict[str, Path],
                                                     content_paths: list[Path], style_paths: list[Path],
                                                     decoder: str) -> None:
    content, style = content_paths[0].read_bytes(), style_paths[0].read_bytes()
    files = [("content", ("c.jpg", content, "image/jpeg")), ("style", ("s.jpg", style, "image/jpeg"))]
    st = Stylizer.from_files(networks["encoder_st"], networks[decoder], device="cpu")
    # the 480x320 content at SIZE (96x64) is above the threshold; at SIZE / 2, or the square style at SIZE, not
    threshold = SIZE * SIZE * 5 // 4
    async with running_app(app_settings(tmp_path, tile_pixels=threshold, tile_size=32), [st]) as app:
        big = await app.client.post("/v1/stylize", files=files)
        passes = metric((await app.client.get("/metrics")).text, "adain_tiled_passes_total")
        small = await app.client.post("/v1/stylize", files=files, data={"content_size": str(SIZE // 2)})
        after = metric((await app.client.get("/metrics")).text, "adain_tiled_passes_total")
    assert big.status_code == 200 and small.status_code == 200, (big.text, small.text)
    out = pixels(big.content)
    assert out.shape[0] * out.shape[1] > threshold
    assert _timing_names(big)["tiled"] == 'desc="32px"'
    assert "tiled" not in _timing_names(small)
    assert passes == 2 and after == passes  # encoder and decoder of the big content; nothing for the small one

    whole = Stylizer.from_files(networks["encoder_st"], networks[decoder], device="cpu", tiling="never")
    reference = to_uint8(whole.stylize(read_resized(content, SIZE).image, [read_resized(style, SIZE).image],
                                       content_size=SIZE, style_size=SIZE)).permute(1, 2, 0).numpy()
    diff = np.abs(out.astype(int) - reference.astype(int))
    assert (diff <= 2).mean() >= 0.99


async def test_tile_pixels_zero_never_tiles(tmp_path: Path, networks: dict[str, Path],
                                            content_paths: list[Path], style_paths: list[Path]) -> None:
    settings = load_settings([], {"ADAIN_TILE_PIXELS": "0", "ADAIN_TILE_SIZE": "64"})
    assert (settings.tile_pixels, settings.tile_size) == (0, 64)
    st = Stylizer.from_files(networks["encoder_st"], networks["decoder_st"], device="cpu")
    files = [("content", ("c.jpg", content_paths[0].read_bytes(), "image/jpeg")),
             ("style", ("s.jpg", style_paths[0].read_bytes(), "image/jpeg"))]
    async with running_app(app_settings(tmp_path, tile_pixels=0, tile_size=64), [st]) as app:
        r = await app.client.post("/v1/stylize", files=files)
    assert r.status_code == 200 and "tiled" not in _timing_names(r)
    assert st.tiling == "never" and st.tiled_passes == 0


@pytest.mark.parametrize("value", ["100", "4", "x"])
def test_tile_size_must_be_a_multiple_of_8(value: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        load_settings(["--tile-size", value], {})
    assert "--tile-size" in capsys.readouterr().err
