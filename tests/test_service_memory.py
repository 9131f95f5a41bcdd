"""Memory per request and per process, against `adain serve` on 127.0.0.1: requests of a few kilobytes that name
large images (a content and 8 styles of 2000x2000 asking for 64 px) stay within the worst case that
service.runtime.memory computes, and docs/deploy.md states, from the server's limits."""

from __future__ import annotations

import asyncio
import io
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from PIL import Image

from service.runtime.memory import worst_case
from service.settings import Settings

from .service_fixtures import SIZE, metric, serve

SIDE = 2000  # the images' side: 4 MP, the server's --max-pixels
CONCURRENT = 4
LIMITS = Settings(max_pixels=SIDE * SIDE, max_upload_bytes=2_000_000, max_connections=8, decode_threads=2,
                  batch_size=2, large_pixels=16384, tile_pixels=16384, max_work_bytes=400 * 2**20, workers=1)


def flags(settings: Settings) -> list[str]:
    return [f for name in ("max_pixels", "max_upload_bytes", "max_connections", "decode_threads", "batch_size",
                           "large_pixels", "tile_pixels", "max_work_bytes")
            for f in (f"--{name.replace('_', '-')}", str(getattr(settings, name)))]


def big_image(fmt: str) -> bytes:
    """A 2000x2000 image of a few kilobytes: RGBA for PNG (the costliest to decode), RGB for JPEG."""
    g = Image.linear_gradient("L").resize((SIDE, SIDE))
    img = Image.merge("RGBA", (g, g.rotate(90), g.transpose(Image.Transpose.FLIP_LEFT_RIGHT), g.rotate(270)))
    buf = io.BytesIO()
    (img if fmt == "PNG" else img.convert("RGB")).save(buf, format=fmt)
    return buf.getvalue()


def status(pid: int, key: str) -> int:
    """A /proc/PID/status memory field in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def stylize_form(image: bytes, fmt: str) -> list[tuple]:
    mime = f"image/{fmt.lower()}"
    return [("content", (f"c.{fmt.lower()}", image, mime))] + [("style", (f"s{i}.{fmt.lower()}", image, mime))
                                                               for i in range(8)]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_concurrent_worst_case_requests_stay_within_the_documented_bound(tmp_path: Path, weight_files: dict,
                                                                         fmt: str) -> None:
    image = big_image(fmt)
    files = stylize_form(image, fmt)

    async def send(url: str, n: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            return await asyncio.gather(*(client.post("/v1/stylize", files=files) for _ in range(n)))

    with serve(weight_files["vgg16"], tmp_path / "styles.db", tmp_path / "server.log", *flags(LIMITS)) as server:
        pid = server.process.pid
        assert [r.status_code for r in asyncio.run(send(server.url, 1))] == [200]  # every code path warmed up
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here
        before = status(pid, "VmRSS")
        responses = asyncio.run(send(server.url, CONCURRENT))
        peak = status(pid, "VmHWM") - before
        held = metric(httpx.get(f"{server.url}/metrics").text, "adain_work_bytes")
    assert [r.status_code for r in responses] == [200] * CONCURRENT, responses[0].text
    assert held == 0  # every reservation was given back
    bound = sum(worst_case(LIMITS, workers=1).values())
    assert peak <= bound, f"{CONCURRENT} requests took {peak / 2**20:.0f} MiB, over the bound of {bound / 2**20:.0f}"


def test_a_request_whose_images_alone_need_more_than_the_server_allows_gets_413(tmp_path: Path,
                                                                               weight_files: dict) -> None:
    limits = replace(LIMITS, max_work_bytes=32 * 2**20)  # less than decoding one 2000x2000 RGBA PNG takes
    with serve(weight_files["vgg16"], tmp_path / "styles.db", tmp_path / "server.log", *flags(limits)) as server:
        r = httpx.post(f"{server.url}/v1/stylize", files=stylize_form(big_image("PNG"), "PNG"), timeout=60)
        small = httpx.post(f"{server.url}/v1/stylize", files=stylize_form(big_image("JPEG"), "JPEG"),
                           data={"content_size": str(SIZE)}, timeout=60)  # JPEGs decode at 1/8 for 64 px
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large", r.text
    assert "--max-work-bytes" in r.json()["error"]["message"]
    assert small.status_code == 200, small.text


def test_the_memory_this_process_may_use_is_the_machine_or_its_cgroup_limit(tmp_path: Path) -> None:
    from service.runtime.memory import memory_available

    physical = memory_available(cgroup_limits=())
    assert physical > 2**28  # a machine with some memory
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    v2.write_text("max\n")  # cgroup v2 without a limit
    assert memory_available((v2, tmp_path / "absent")) == physical
    v1.write_text(f"{2**30}\n")
    assert memory_available((v2, v1)) == min(physical, 2**30)


def test_a_worst_case_over_the_memory_available_is_warned_of_at_start(tmp_path: Path, weight_files: dict) -> None:
    from service.runtime.memory import memory_available, memory_warning

    parts = worst_case(LIMITS, workers=1)
    assert memory_warning(parts, sum(parts.values())) is None
    warning = memory_warning(parts, sum(parts.values()) - 1)
    assert warning is not None and "--max-work-bytes" in warning and "--max-connections" in warning
    # A real server whose admitted images alone could take more than the machine has says so in its log.
    too_much = replace(LIMITS, max_work_bytes=2 * memory_available())
    log = tmp_path / "server.log"
    with serve(weight_files["vgg16"], tmp_path / "styles.db", log, *flags(too_much)):
        pass
    assert "could be killed for memory" in log.read_text()
    with serve(weight_files["vgg16"], tmp_path / "styles.db", log.with_name("fits.log"), *flags(LIMITS)):
        pass
    assert "could be killed for memory" not in log.with_name("fits.log").read_text()
