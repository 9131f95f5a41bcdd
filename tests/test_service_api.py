"""The HTTP API, in-process through ASGI: real images, real (random) weights, a real SQLite store."""

from __future__ import annotations

import asyncio
import io
import json
import pickle
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adain.images import read_resized, style_read_size, to_uint8
from adain.masks import fitted_masks, read_mask_images
from adain.stylizer import StyleRef, Stylizer, prepare_content
from service.metrics import Metrics
from service.runtime.admission import Refused
from service.runtime.engine import warm_up_job
from service.runtime.jobs import RenderJob, Ticket
from service.runtime.worker import Worker

from .service_fixtures import (
    REPO,
    SIZE,
    app_settings,
    assert_batched_equal,
    bad_inputs,
    image_bytes,
    metric,
    pixels,
    running_app,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def stylizers(weight_files: dict) -> list[Stylizer]:
    w = weight_files["vgg16"]
    return [Stylizer.from_files(w["encoder_st"], w["decoder_st"], device="cpu")]


@pytest.fixture(scope="module")
def content(content_paths: list[Path]) -> bytes:
    return content_paths[0].read_bytes()


@pytest.fixture(scope="module")
def styles(style_paths: list[Path]) -> list[bytes]:
    return [p.read_bytes() for p in style_paths[:2]]


def form(content: bytes, styles: list[bytes] = (), masks: list[bytes] = ()) -> list[tuple]:
    files = [("content", ("content.jpg", content, "image/jpeg"))]
    files += [("style", (f"style{i}.jpg", s, "image/jpeg")) for i, s in enumerate(styles)]
    return files + [("mask", (f"mask{i}.png", m, "image/png")) for i, m in enumerate(masks)]


def expected(stylizer: Stylizer, content: bytes, styles: list[bytes], style_size: int = SIZE,
             masks: list[bytes] = (), style_scale: float = 1.0, **kwargs) -> np.ndarray:
    """What the library computes from images read as `adain stylize` reads them (at the size asked for), as 8-bit
    pixels."""
    image = read_resized(content, SIZE)
    if masks:
        images, labels = read_mask_images(masks)
        kwargs["mask"] = fitted_masks(images, len(styles), image.source_hw, SIZE, labels=labels)
    read_size = style_read_size(style_size, style_scale)
    out = stylizer.stylize(image.image, [read_resized(s, read_size).image for s in styles], content_size=SIZE,
                           style_size=style_size, style_scale=style_scale, **kwargs)
    return to_uint8(out).permute(1, 2, 0).numpy()


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "request_id"} <= set(body["error"]), body
    assert "Traceback" not in response.text
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    return body["error"]


async def test_health_readiness_metrics_and_docs(tmp_path: Path, stylizers: list[Stylizer]) -> None:
    async with running_app(app_settings(tmp_path), stylizers) as app:
        c = app.client
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        assert (await c.get("/readyz")).json() == {"status": "ready", "workers": ["cpu#0"], "precision": "fp32",
                                                   "store": "ok"}
        assert "swagger" in (await c.get("/docs")).text.lower()
        schema = (await c.get("/openapi.json")).json()
        fields = schema["components"]["schemas"]
        stylize_body = next(v for k, v in fields.items() if "stylize" in k.lower())
        assert {"content", "style", "style_id", "weights", "alpha", "preserve_color", "mask", "content_size",
                "style_size", "format", "quality"} <= set(stylize_body["properties"])
        video_body = next(v for k, v in fields.items() if "video" in k.lower())  # the still's fields, where they apply
        assert {"clip", "style", "style_id", "weights", "alpha", "preserve_color", "mask", "content_size", "style_size",
                "style_scale", "stability", "audio", "quality"} <= set(video_body["properties"])
        assert {"/v1/styles", "/v1/styles/{style_id}", "/v1/styles/{style_id}/thumbnail"} <= set(schema["paths"])
        text = (await c.get("/metrics")).text
        for name in ("adain_http_requests_total", "adain_http_request_duration_seconds_bucket", "adain_queue_depth",
                     "adain_batch_size_bucket", "adain_style_cache_hits_total", "adain_style_cache_misses_total",
                     "adain_worker_up", "adain_ready", "# TYPE adain_gpu_memory_bytes gauge"):
            assert name in text, name
        assert metric(text, "adain_http_requests_total", route="/readyz", status="200") == 1
        assert metric(text, "adain_ready") == 1
        missing = await c.get("/nope")
        assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"


#: mask variant -> the mask's size as a fraction of the content's (480x320; the output is 96x64)
MASK_SCALES = {"mask": 1, "mask_of_the_output_size": 0.2, "mask_at_half_the_content_size": 0.5}


@pytest.mark.parametrize("variant", ["blend", "huge_weights", "luminance", "coral", "style_scale", "grain",
                                     *MASK_SCALES])
async def test_stylize_equals_the_library(tmp_path: Path, stylizers: list[Stylizer], content: bytes,
                                          styles: list[bytes], variant: str) -> None:
    data: dict[str, str] = {}
    kwargs: dict = {}
    masks: list[bytes] = []
    if variant == "blend":
        data, kwargs = {"weights": "0.7,0.3", "alpha": "0.8"}, {"weights": [0.7, 0.3], "alpha": 0.8}
    elif variant == "huge_weights":  # their sum overflows
        data, kwargs = {"weights": "1e308,1e308"}, {"weights": [1, 1]}
    elif variant == "style_scale":
        data, kwargs = {"style_scale": "1.5"}, {"style_scale": 1.5}
    elif variant == "grain":  # the request's own, whatever the server's
        data, kwargs = {"grain": "0.2", "alpha": "0.7"}, {"grain": 0.2, "alpha": 0.7}
    elif variant in MASK_SCALES:
        w, h = (round(side * MASK_SCALES[variant]) for side in Image.open(io.BytesIO(content)).size)
        label = np.zeros((h, w), np.uint8)
        label[:, w // 2 :] = 1
        buf = io.BytesIO()
        Image.fromarray(label).save(buf, format="PNG")
        masks = [buf.getvalue()]
        kwargs = {"masks": masks}
    else:
        data, kwargs = {"preserve_color": variant}, {"preserve_color": variant}
    async with running_app(app_settings(tmp_path), stylizers) as app:
        r = await app.client.post("/v1/stylize", files=form(content, styles, masks), data=data)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert len(r.headers["x-request-id"]) == 32
    timing = dict(part.strip().split(";dur=") for part in r.headers["server-timing"].split(","))
    assert set(timing) == {"decode", "queue", "model", "encode"} and all(float(v) >= 0 for v in timing.values())
    assert np.array_equal(pixels(r.content), expected(stylizers[0], content, styles, **kwargs))
    if variant == "grain":  # which differs from the picture without
        without = expected(stylizers[0], content, styles, alpha=0.7)
        assert np.abs(pixels(r.content).astype(float) - without).mean() > 1


async def test_a_grain_out_of_range_is_refused(tmp_path: Path, stylizers: list[Stylizer], content: bytes,
                                               styles: list[bytes]) -> None:
    async with running_app(app_settings(tmp_path), stylizers) as app:
        r = await app.client.post("/v1/stylize", files=form(content, styles), data={"grain": "0.9"})
    assert r.status_code == 422 and "grain must be between 0 and 0.5, got 0.9" in error_of(r)["message"]


async def test_output_format_from_field_then_accept_header(tmp_path: Path, stylizers: list[Stylizer],
                                                          content: bytes, styles: list[bytes]) -> None:
    cases = [({}, {}, "PNG"), ({"format": "jpeg", "quality": "80"}, {}, "JPEG"),
             ({}, {"accept": "image/webp,image/*;q=0.8"}, "WEBP"), ({}, {"accept": "image/jpeg"}, "JPEG"),
             ({"format": "png"}, {"accept": "image/webp"}, "PNG"), ({}, {"accept": "text/html,*/*;q=0.8"}, "PNG")]
    async with running_app(app_settings(tmp_path), stylizers) as app:
        for data, headers, fmt in cases:
            r = await app.client.post("/v1/stylize", files=form(content, styles[:1]), data=data, headers=headers)
            assert r.status_code == 200, r.text
            assert Image.open(io.BytesIO(r.content)).format == fmt, (data, headers)
            assert r.headers["content-type"] == f"image/{fmt.lower()}"


async def test_request_id_is_taken_from_the_client_when_sane(tmp_path: Path, stylizers: list[Stylizer]) -> None:
    async with running_app(app_settings(tmp_path), stylizers) as app:
        r = await app.client.get("/healthz", headers={"x-request-id": "abc-123"})
        assert r.headers["x-request-id"] == "abc-123"
        r = await app.client.get("/healthz", headers={"x-request-id": "bad id\twith spaces"})
        assert r.headers["x-request-id"] != "bad id\twith spaces" and len(r.headers["x-request-id"]) == 32


@pytest.mark.parametrize("decoder", ["decoder_st", "decoder_skips"])  # skips: statistics at three layers are stored
async def test_stored_styles(tmp_path: Path, weight_files: dict, stylizers: list[Stylizer], content: bytes,
                             styles: list[bytes], decoder: str) -> None:
    if decoder != "decoder_st":
        w = weight_files["vgg16"]
        stylizers = [Stylizer.from_files(w["encoder_st"], w[decoder], device="cpu")]
    async with running_app(app_settings(tmp_path), stylizers) as app:
        c = app.client
        r = await c.post("/v1/styles", files={"image": ("starry.jpg", styles[0], "image/jpeg")})
        assert r.status_code == 201, r.text
        info = r.json()
        style_id = info["id"]
        w, h = Image.open(io.BytesIO(styles[0])).size
        assert info["name"] == "starry" and (info["width"], info["height"], info["bytes"]) == (w, h, len(styles[0]))
        assert r.headers["location"] == f"/v1/styles/{style_id}"
        named = (await c.post("/v1/styles", files={"image": ("x.jpg", styles[1], "image/jpeg")},
                              data={"name": "Wave"})).json()
        assert [s["name"] for s in (await c.get("/v1/styles")).json()["styles"]] == ["starry", "Wave"]
        assert (await c.get(f"/v1/styles/{style_id}")).json() == info
        thumb = await c.get(f"/v1/styles/{named['id']}/thumbnail")
        assert thumb.headers["content-type"] == "image/jpeg"
        assert max(Image.open(io.BytesIO(thumb.content)).size) == 256

        for mode in ("none", "luminance", "coral"):
            misses = metric((await c.get("/metrics")).text, "adain_style_cache_misses_total")
            by_id = await c.post("/v1/stylize", files=form(content), data={"style_id": style_id,
                                                                            "preserve_color": mode})
            assert by_id.status_code == 200, by_id.text
            if mode != "coral":  # stored statistics: the style is not encoded again
                assert metric((await c.get("/metrics")).text, "adain_style_cache_misses_total") == misses
            by_file = await c.post("/v1/stylize", files=form(content, styles[:1]), data={"preserve_color": mode})
            assert np.array_equal(pixels(by_id.content), pixels(by_file.content)), mode
        scaled = {"style_scale": "0.75"}  # the stored statistics are those at scale 1: the stored image is encoded
        by_id = await c.post("/v1/stylize", files=form(content), data={"style_id": style_id, **scaled})
        by_file = await c.post("/v1/stylize", files=form(content, styles[:1]), data=scaled)
        assert np.array_equal(pixels(by_id.content), pixels(by_file.content))
        assert np.array_equal(pixels(by_id.content), expected(stylizers[0], content, styles[:1], style_scale=0.75))
        mixed = await c.post("/v1/stylize", files=form(content, styles[1:]),
                             data={"style_id": style_id, "weights": "1,3", "style_size": "48"})
        assert mixed.status_code == 200, mixed.text
        assert np.array_equal(pixels(mixed.content),
                              expected(stylizers[0], content, [styles[1], styles[0]], 48, weights=[1, 3]))

        assert (await c.delete(f"/v1/styles/{style_id}")).status_code == 204
        for r in (await c.get(f"/v1/styles/{style_id}"), await c.get(f"/v1/styles/{style_id}/thumbnail"),
                  await c.delete(f"/v1/styles/{style_id}")):
            assert r.status_code == 404 and error_of(r)["code"] == "not_found"
        gone = await c.post("/v1/stylize", files=form(content), data={"style_id": style_id})
        assert gone.status_code == 422 and error_of(gone)["code"] == "unknown_style"
        assert [s["id"] for s in (await c.get("/v1/styles")).json()["styles"]] == [named["id"]]


async def test_the_docs_example_of_a_stored_style_matches_a_real_answer(tmp_path: Path, stylizers: list[Stylizer],
                                                                        styles: list[bytes]) -> None:
    text = (REPO / "docs" / "service.md").read_text()
    command, answer = re.search(r"^(curl -F image=@\S+ -F name=.*)\n# (\{.*\})$", text, re.M).groups()
    example = json.loads(answer)
    file_name, name = re.fullmatch(r'curl -F image=@(\S+) -F name="([^"]+)" \S+', command).groups()
    assert example["name"] == name
    async with running_app(app_settings(tmp_path), stylizers) as app:
        r = await app.client.post("/v1/styles", files={"image": (file_name, styles[0], "image/jpeg")},
                                  data={"name": name})
        assert r.status_code == 201, r.text
        assert r.json().keys() == example.keys()
        assert {k: type(v) for k, v in r.json().items()} == {k: type(v) for k, v in example.items()}


@pytest.mark.parametrize("case", list(bad_inputs(b"x", b"y")))
async def test_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stylizers: list[Stylizer], content: bytes,
                         styles: list[bytes], case: str) -> None:
    bad = bad_inputs(content, styles[0])[case]
    spool = tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))  # where uploads would spill to disk
    async with running_app(app_settings(tmp_path, max_upload_bytes=2_000_000), stylizers) as app:
        r = await app.client.post("/v1/stylize", files=bad.files, data=bad.data)
        assert (r.status_code, error_of(r)["code"]) == (bad.status, bad.code), r.text
        assert bad.says in error_of(r)["message"] and len(error_of(r)["message"]) <= 300
        assert (await app.client.get("/readyz")).status_code == 200
    assert list(spool.iterdir()) == []


async def test_body_limit_applies_to_streamed_bodies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     stylizers: list[Stylizer]) -> None:
    async def chunks():  # no Content-Length: the limit is checked while the body streams in
        yield b'--xyz\r\nContent-Disposition: form-data; name="content"; filename="a.png"\r\n\r\n'
        for _ in range(30):
            yield b"-" * 100_000

    spool = tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))  # uploads over 1 MB spill to disk
    async with running_app(app_settings(tmp_path, max_upload_bytes=2_000_000), stylizers) as app:
        r = await app.client.post("/v1/stylize", content=chunks(),
                                  headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 413 and error_of(r)["code"] == "payload_too_large"
    assert list(spool.iterdir()) == []


async def test_full_queue_answers_503_with_retry_after(tmp_path: Path, stylizers: list[Stylizer], content: bytes,
                                                      styles: list[bytes]) -> None:
    settings = app_settings(tmp_path, batch_size=1, queue_size=1, batch_window_ms=0)
    async with running_app(settings, stylizers) as app:
        responses = await asyncio.gather(*(app.client.post("/v1/stylize", files=form(content, styles[:1]),
                                                           data={"content_size": "128"}) for _ in range(6)))
        text = (await app.client.get("/metrics")).text
    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses and 503 in statuses and set(statuses) == {200, 503}, statuses
    for r in responses:
        if r.status_code == 503:
            assert error_of(r)["code"] == "overloaded" and int(r.headers["retry-after"]) >= 1
    shed = metric(text, "adain_dropped_total", reason="queue_full") + metric(text, "adain_dropped_total",
                                                                             reason="overloaded")
    assert shed == statuses.count(503)


class SmallDevice(Stylizer):
    """A device whose memory holds at most two 64x96 images per pass; beyond that, CUDA's out-of-memory error.

    There is no GPU on the test machines, so this is how the out-of-memory path is exercised.
    """

    budget = 2 * 64 * 96

    def render(self, contents: torch.Tensor, targets: list) -> torch.Tensor:
        n = contents.shape[0] if contents.ndim == 4 else 1
        if n * contents.shape[-2] * contents.shape[-1] > self.budget:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().render(contents, targets)


async def test_out_of_memory_splits_batches_and_rejects_what_cannot_fit(
        tmp_path: Path, weight_files: dict, content: bytes, styles: list[bytes]) -> None:
    w = weight_files["vgg16"]
    small = SmallDevice.from_files(w["encoder_st"], w["decoder_st"], device="cpu")
    async with running_app(app_settings(tmp_path, batch_window_ms=300), [small]) as app:
        responses = await asyncio.gather(*(app.client.post("/v1/stylize", files=form(content, styles[:1]))
                                           for _ in range(4)))
        reference = expected(small, content, styles[:1])
        for r in responses:
            assert r.status_code == 200, r.text
            assert_batched_equal(pixels(r.content), reference)  # split into batches of 2
        too_big = await app.client.post("/v1/stylize", files=form(content, styles[:1]), data={"content_size": "128"})
        assert too_big.status_code == 413 and error_of(too_big)["code"] == "too_large_for_device"
        assert "pixels" in error_of(too_big)["message"]
        text = (await app.client.get("/metrics")).text
        assert metric(text, "adain_oom_total", outcome="split") >= 1
        assert metric(text, "adain_oom_total", outcome="rejected") == 1
        assert (await app.client.get("/readyz")).status_code == 200  # the worker lives on


async def test_a_dead_worker_fails_requests_and_readiness(tmp_path: Path, stylizers: list[Stylizer],
                                                          content: bytes, styles: list[bytes]) -> None:
    async with running_app(app_settings(tmp_path), stylizers) as app:
        app.engine.workers[0].lanes[0]._executor.shutdown()  # the compute thread is gone: the lane's loop breaks
        r = await app.client.post("/v1/stylize", files=form(content, styles[:1]))
        assert r.status_code == 503 and error_of(r)["code"] == "worker_failed"
        ready = await app.client.get("/readyz")
        assert ready.status_code == 503 and "failed" in error_of(ready)["message"]
        assert app.fatal == [True]  # `adain serve` exits with status 1 on this
        assert metric((await app.client.get("/metrics")).text, "adain_worker_up") == 0
        later = await app.client.post("/v1/stylize", files=form(content, styles[:1]))
        assert later.status_code == 503 and error_of(later)["code"] == "not_ready"


async def test_uploads_are_checked_like_stylize_inputs(tmp_path: Path, stylizers: list[Stylizer]) -> None:
    cases = [(b"", 422, "empty_file"), (b"not an image" * 20, 415, "unsupported_image"),
             (image_bytes((32, 32), "GIF", "P"), 415, "unsupported_image")]
    async with running_app(app_settings(tmp_path), stylizers) as app:
        for data, status, code in cases:
            r = await app.client.post("/v1/styles", files={"image": ("s.png", data, "image/png")})
            assert (r.status_code, error_of(r)["code"]) == (status, code)
        png = ("a.png", image_bytes((32, 32), "PNG"), "image/png")
        twice = await app.client.post("/v1/styles", files=[("image", png), ("image", png)])
        assert (twice.status_code, error_of(twice)["message"]) == (422, "image was given 2 times; it takes one value")
        misspelt = await app.client.post("/v1/styles", files={"image": png}, data={"title": "sky"})
        assert (misspelt.status_code, error_of(misspelt)["message"]) == (
            422, "unknown field 'title': the fields are image, name")
        assert (await app.client.get("/v1/styles")).json() == {"styles": []}


async def test_work_gathered_outside_the_queues_is_admitted_like_queued_work(stylizers: list[Stylizer]) -> None:
    """What a Ray model replica does (service.ray_app.Model.run): work that Serve's @serve.batch gathers, instead
    of the worker's queues, is judged on the worker's own measurements and counted in its backlog."""
    worker = Worker("cpu#0", stylizers[0], Metrics(), 8, 0.0, 8, on_death=lambda w: None)
    loop = asyncio.get_running_loop()

    def ticket(work: RenderJob, seconds: float) -> Ticket:
        return Ticket(work, loop.create_future(), loop.time(), loop.time() + seconds)

    def refused(t: Ticket) -> Refused:
        with pytest.raises(Refused) as caught, worker.admitted(t):
            pass
        return caught.value

    content, weights, _ = prepare_content(torch.rand(3, 256, 256), 1)
    larger = RenderJob(content, [StyleRef(image=torch.rand(3, 64, 64))], weights, 1.0, None, "none", 64)
    worker.start()
    try:
        first = ticket(warm_up_job(), 600)
        with worker.admitted(first):  # nothing measured and nothing ahead: taken, and run
            await worker.run_batch([first])
        first.future.result()
        took = worker.cost.estimate(first.pixels)
        assert took > 0 and worker.lanes[0].backlog_s == 0
        too_slow = refused(ticket(warm_up_job(), took / 2))
        assert too_slow.reason == "too_slow" and "ask for a smaller size" in too_slow.message
        with worker.admitted(ticket(warm_up_job(), 600)):  # admitted, and waiting for its batch
            assert worker.lanes[0].backlog_s == pytest.approx(took)
            busy = refused(ticket(larger, 600))  # behind it, a size never measured
            assert busy.reason == "overloaded" and busy.retry_s == pytest.approx(took)
        assert worker.lanes[0].backlog_s == 0  # released with its block
        back = pickle.loads(pickle.dumps(busy))  # it crosses from the model replica to the ingress
        assert type(back) is Refused and vars(back) == vars(busy) and str(back) == str(busy)
    finally:
        await worker.stop()
