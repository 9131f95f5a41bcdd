"""Helpers for the service tests: an app running in-process, a real server in a subprocess, bad inputs."""

from __future__ import annotations

import asyncio
import io
import os
import re
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from adain.stylizer import Stylizer
from service.app import create_app
from service.runtime.engine import Engine
from service.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SIZE = 64  # content_size / style_size in the tests: small and fast


def app_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings for an in-process app: small images, a store in ``tmp_path``."""
    base = Settings(db=str(tmp_path / "styles.db"), content_size=SIZE, style_size=SIZE, batch_window_ms=10,
                    decode_threads=2)
    return replace(base, **overrides)


@dataclass
class App:
    """An app in this process, with its lifespan running, and a client talking to it through ASGI."""

    client: httpx.AsyncClient
    engine: Engine
    fatal: list[bool] = field(default_factory=list)  # one entry each time the engine called on_fatal


@asynccontextmanager
async def running_app(settings: Settings, stylizers: Sequence[Stylizer]) -> AsyncIterator[App]:
    """Start engine and app (lifespan included), wait until ready; stop them (finishing queued work) after."""
    engine = Engine(stylizers, settings, fingerprint="test")
    app = create_app(settings, engine)
    running = App(httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=60),
                  engine)
    engine.on_fatal = lambda: running.fatal.append(True)
    async with app.router.lifespan_context(app), running.client:
        for _ in range(600):
            if engine.ready:
                break
            await asyncio.sleep(0.05)
        assert engine.ready, engine.state
        yield running


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` in a Prometheus exposition."""
    total = 0.0
    for line in text.splitlines():
        m = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def pixels(data: bytes) -> np.ndarray:
    """Decoded RGB pixels of an image file."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def assert_batched_equal(got: np.ndarray, want: np.ndarray, label: object = "") -> None:
    """``got`` (computed in a batch) equals ``want`` (computed alone) up to float rounding.

    CPU convolutions are not batch-invariant everywhere: on some CPUs (an AMD EPYC here) oneDNN's batch-2
    result differs from batch 1 by about 1e-5, which flips the 8-bit rounding of a few pixels by one level.
    """
    assert got.shape == want.shape, label
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.01, (label, int(diff.max()), float((diff > 0).mean()))


# ---- a real server -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_ready(url: str, timeout: float, check: Callable[[], None] = lambda: None) -> bool:
    """Poll ``url`` until it answers 200 (True) or ``timeout`` seconds pass (False), calling ``check`` first
    each time (it raises when waiting is pointless)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check()
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return False


@dataclass
class Server:
    """``adain serve`` in a subprocess."""

    process: subprocess.Popen
    url: str


ADAIN = (sys.executable, "-m", "adain.cli")


@contextmanager
def serve(weights: dict[str, Path], db: Path, log: Path, *flags: str, env: dict[str, str] | None = None,
          launcher: Sequence[str] = ADAIN, timeout: float = 120, ready: str = "/readyz") -> Iterator[Server]:
    """Start ``adain serve`` (``launcher`` + ``serve ...``) on a free port with ``weights`` (encoder_st and
    decoder_st); wait until ``ready`` answers 200. The server is stopped with SIGTERM on the way out (if it still
    runs).
    """
    port = free_port()
    cmd = [*launcher, "serve", "--encoder", str(weights["encoder_st"]), "--decoder",
           str(weights["decoder_st"]), "--device", "cpu", "--port", str(port), "--db", str(db),
           "--content-size", str(SIZE), "--style-size", str(SIZE), "--log-level", "warning", *flags]
    with open(log, "ab") as out:
        process = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, **(env or {})})
    server = Server(process, f"http://127.0.0.1:{port}")

    def alive() -> None:
        assert process.poll() is None, f"server exited with {process.returncode}:\n{log.read_text()}"

    try:
        if not wait_until_ready(f"{server.url}{ready}", timeout, alive):
            raise AssertionError(f"server not ready after {timeout} s:\n{log.read_text()}")
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=60)


def make_key(name: str, role: str) -> tuple[str, str]:
    """(key, key-file line) from `adain key`, as a user makes them."""
    out = subprocess.run([*ADAIN, "key", name, "--role", role], cwd=REPO, check=True, capture_output=True,
                         text=True).stdout.splitlines()
    return out[0].rsplit(" ", 1)[1], out[1].split(": ", 1)[1]


# ---- bad inputs ------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels but holds almost no data (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(
        b"IEND", b"")


def image_bytes(size: tuple[int, int], fmt: str, mode: str = "RGB", color: int | tuple = 0) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format=fmt)
    return buf.getvalue()


@dataclass
class BadInput:
    """A stylize request that must fail with ``status`` and ``code``."""

    files: list[tuple[str, tuple[str, bytes, str]]]
    data: dict[str, str | list[str]]
    status: int
    code: str
    says: str = ""  # a part of the message


def bad_inputs(content: bytes, style: bytes) -> dict[str, BadInput]:
    """The bad-input table: name -> request and expected error."""
    good = [("content", ("c.jpg", content, "image/jpeg")), ("style", ("s.jpg", style, "image/jpeg"))]
    two_styles = good + [("style", ("s2.jpg", style, "image/jpeg"))]

    def with_content(name: str, data: bytes, mime: str = "image/png") -> list:
        return [("content", (name, data, mime)), good[1]]

    return {
        "truncated_jpeg": BadInput(with_content("c.jpg", content[: len(content) // 2], "image/jpeg"), {}, 422,
                                   "invalid_image"),
        "text_named_png": BadInput(with_content("c.png", b"just some text, not an image\n" * 10), {}, 415,
                                   "unsupported_image"),
        "png_header_20000x20000": BadInput(with_content("bomb.png", png_header(20000, 20000)), {}, 413,
                                           "image_too_large"),
        "empty_file": BadInput(with_content("c.jpg", b"", "image/jpeg"), {}, 422, "empty_file"),
        "gif_not_accepted": BadInput(with_content("c.gif", image_bytes((32, 32), "GIF", "P"), "image/gif"), {},
                                     415, "unsupported_image"),
        "negative_weight": BadInput(two_styles, {"weights": "0.5,-1"}, 422, "invalid_input"),
        "weights_count_mismatch": BadInput(two_styles, {"weights": ["0.2", "0.3", "0.5"]}, 422, "invalid_input"),
        "weights_not_numbers": BadInput(good, {"weights": "lots"}, 422, "invalid_request"),
        "alpha_2": BadInput(good, {"alpha": "2"}, 422, "invalid_input"),
        "alpha_not_a_number": BadInput(good, {"alpha": "strong"}, 422, "invalid_request"),
        "unknown_style_id": BadInput(good[:1], {"style_id": "0123456789abcdef"}, 422, "unknown_style"),
        "mask_wrong_size": BadInput(two_styles + [("mask", ("m.png", image_bytes((10, 10), "PNG", "L"),
                                                            "image/png"))], {}, 422, "invalid_input"),
        "no_style": BadInput(good[:1], {}, 422, "invalid_request"),
        "no_content": BadInput(good[1:], {}, 422, "invalid_request"),
        "too_many_styles": BadInput(good + [good[1]] * 8, {}, 422, "too_many_styles"),
        "content_size_too_large": BadInput(good, {"content_size": "100000"}, 422, "invalid_request"),
        "negative_style_size": BadInput(good, {"style_size": "-5"}, 422, "invalid_request"),
        "unknown_output_format": BadInput(good, {"format": "gif"}, 422, "invalid_request"),
        "unknown_preserve_color": BadInput(good, {"preserve_color": "sepia"}, 422, "invalid_request"),
        "thin_content_upscaled": BadInput(with_content("thin.png", image_bytes((400, 1), "PNG")),
                                          {"content_size": "64"}, 422, "invalid_image", "is 25600x64"),
        "thin_content_at_2048": BadInput(with_content("thin.png", image_bytes((4000, 1), "PNG")),
                                         {"content_size": "2048"}, 413, "image_too_large", "is 8192000x2048"),
        "style_upscaled_past_max_pixels": BadInput(
            good[:1] + [("style", ("s.png", image_bytes((128, 8), "PNG"), "image/png"))], {"style_size": "2048"},
            413, "image_too_large", "style 1: 128x8 at a shorter side of 2048 is 32768x2048"),
        "two_contents": BadInput(good + [("content", ("c2.jpg", content, "image/jpeg"))], {}, 422,
                                 "invalid_request", "content was given 2 times"),
        "style_scale_below_0.25": BadInput(good, {"style_scale": "0.2"}, 422, "invalid_input",
                                           "style_scale must be between 0.25 and 4, got 0.2"),
        "style_scale_not_a_number": BadInput(good, {"style_scale": "big"}, 422, "invalid_request"),
        "style_scale_past_max_size": BadInput(good, {"style_size": "1024", "style_scale": "4"}, 422,
                                              "invalid_request", "style_size x style_scale must be at most 2048"),
        "style_scale_past_max_pixels": BadInput(
            good[:1] + [("style", ("s.png", image_bytes((128, 8), "PNG"), "image/png"))],
            {"style_size": "512", "style_scale": "4"}, 413, "image_too_large",
            "style 1: 128x8 at a shorter side of 2048 is 32768x2048"),
        "two_style_scales": BadInput(good, {"style_scale": ["1", "2"]}, 422, "invalid_request",
                                     "style_scale was given 2 times"),
        "two_alphas": BadInput(good, {"alpha": ["0.5", "0.7"]}, 422, "invalid_request", "alpha was given 2 times"),
        "misspelt_field": BadInput(good, {"preserve_colour": "luminance"}, 422, "invalid_request",
                                   "unknown field 'preserve_colour': did you mean preserve_color?"),
        "unknown_field": BadInput(good, {"zzz": "1"}, 422, "invalid_request",
                                  "unknown field 'zzz': the fields are content, style, style_id"),
        "text_for_content": BadInput(good[1:], {"content": "hello"}, 422, "invalid_request",
                                     "content: must be a file (curl: -F content=@FILE), not text"),
        "long_style_id": BadInput(good[:1], {"style_id": "x" * 10_000}, 422, "unknown_style", "(10000 characters)"),
        "long_content_size": BadInput(good, {"content_size": "9" * 1000}, 422, "invalid_request",
                                      "(1000 characters)"),
        "body_too_large": BadInput(with_content("big.png", b"\0" * 3_000_000), {}, 413, "payload_too_large"),
    }
