"""`adain serve` as a real process on 127.0.0.1: concurrency, batching, the CLI's results, restarts, SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from adain.precision import auto_precision

from .service_fixtures import (
    REPO,
    SIZE,
    assert_batched_equal,
    bad_inputs,
    image_bytes,
    metric,
    pixels,
    png_header,
    serve,
)

# `adain serve` on a device that breaks (as a GPU does after an illegal memory access) on images larger than
# 64 pixels a side. There is no GPU on the test machines, so the fault is made up here.
BREAKING_DEVICE = """
import sys
import time
import torch
import service.runtime.engine
from adain.cli import main

class BreakingDevice(service.runtime.engine.Stylizer):
    def render(self, contents, targets):
        if min(contents.shape[-2:]) > 64:
            raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
        return super().render(contents, targets)

service.runtime.engine.Stylizer = BreakingDevice
sys.exit(main(sys.argv[1:]))
"""


def _cli_stylize(weights: dict[str, Path], contents: list[Path], styles: list[Path], out: Path,
                 tmp_path: Path) -> subprocess.Popen:
    """`adain stylize` over ``contents`` (through a folder of links) with a 0.7/0.3 blend of ``styles``."""
    folder = tmp_path / "contents"
    folder.mkdir()
    for p in contents:
        (folder / p.name).symlink_to(p)
    cmd = [sys.executable, "-m", "adain.cli", "stylize", "--content-dir", str(folder), "--weights", "0.7,0.3",
           "--content-size", str(SIZE), "--style-size", str(SIZE), "--encoder", str(weights["encoder_st"]),
           "--decoder", str(weights["decoder_st"]), "--device", "cpu", "--output-dir", str(out)]
    for s in styles:
        cmd += ["--style", str(s)]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_parallel_requests_are_batched_over_two_workers_and_equal_the_cli(
        tmp_path: Path, weight_files: dict, content_paths: list[Path], style_paths: list[Path]) -> None:
    weights, contents, styles = weight_files["vgg16"], content_paths[:4], style_paths[:2]
    cli = _cli_stylize(weights, contents, styles, tmp_path / "cli", tmp_path)  # runs while the server starts
    style_files = [("style", (p.name, p.read_bytes(), "image/jpeg")) for p in styles]

    async def send_all(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            return await asyncio.gather(*(
                client.post("/v1/stylize", data={"weights": "0.7,0.3"},
                            files=[("content", ("c.jpg", contents[i % 4].read_bytes(), "image/jpeg")), *style_files])
                for i in range(64)))

    with serve(weights, tmp_path / "styles.db", tmp_path / "server.log", "--workers", "2", "--batch-size", "8",
               "--batch-window-ms", "20", "--queue-size", "64") as server:
        responses = asyncio.run(send_all(server.url))
        text = httpx.get(f"{server.url}/metrics").text
    assert cli.wait(timeout=300) == 0, cli.stdout.read().decode()
    expected = {p: pixels((tmp_path / "cli" / f"{p.stem}_stylized_{styles[0].stem}_{styles[1].stem}.png").read_bytes())
                for p in contents}
    for i, r in enumerate(responses):
        assert r.status_code == 200, r.text
        assert_batched_equal(pixels(r.content), expected[contents[i % 4]], i)
    runs = metric(text, "adain_batch_size_count")
    assert runs - metric(text, "adain_batch_size_bucket", le="1.0") > 0  # some model runs held several requests
    assert metric(text, "adain_batch_size_sum") == 64 + 2  # every request once, plus one warm-up per worker
    for worker in ("cpu#0", "cpu#1"):  # both workers took requests
        assert metric(text, "adain_batch_size_sum", worker=worker) > 1, worker
    assert metric(text, "adain_style_cache_hits_total") > 0  # styles encoded once per worker, then cached
    assert metric(text, "adain_http_requests_total", route="/v1/stylize", status="200") == 64


def test_lifecycle_sigterm_finishes_queued_work_styles_survive_restart_and_a_broken_device_exits_1(
        tmp_path: Path, weight_files: dict, content_paths: list[Path], style_paths: list[Path]) -> None:
    weights, db, log = weight_files["vgg16"], tmp_path / "styles.db", tmp_path / "server.log"
    content = content_paths[0].read_bytes()
    spool = tmp_path / "tmp"
    spool.mkdir()

    async def sigterm_while_queued(server) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            tasks = [asyncio.create_task(client.post("/v1/stylize", files={"content": ("c.jpg", content)},
                                                     data={"style_id": ids[i % 2], "content_size": "96"}))
                     for i in range(8)]
            for _ in range(500):
                if metric((await client.get("/metrics")).text, "adain_queue_depth") >= 3:
                    break
                await asyncio.sleep(0.02)
            server.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            try:  # no new connections once shutting down
                httpx.get(f"{server.url}/healthz", timeout=2)
                refused = False
            except httpx.ConnectError:
                refused = True
            responses = await asyncio.gather(*tasks)
        assert refused
        return responses

    # 1. Store two styles; bad inputs neither kill the process nor leave temp files; SIGTERM with requests
    #    queued: they all finish, then the process exits with status 0.
    with serve(weights, db, log, "--batch-size", "1", "--max-upload-bytes", "2000000",
               env={"TMPDIR": str(spool)}) as server:
        ids = []
        for p in style_paths[:2]:
            r = httpx.post(f"{server.url}/v1/styles", files={"image": (p.name, p.read_bytes(), "image/jpeg")})
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        for name, bad in bad_inputs(content, style_paths[0].read_bytes()).items():
            r = httpx.post(f"{server.url}/v1/stylize", files=bad.files, data=bad.data, timeout=30)
            assert (r.status_code, r.json()["error"]["code"]) == (bad.status, bad.code), name
        ready = httpx.get(f"{server.url}/readyz")
        assert ready.status_code == 200 and ready.json()["precision"] == auto_precision("cpu")  # the default: auto
        responses = asyncio.run(sigterm_while_queued(server))
        assert [r.status_code for r in responses] == [200] * 8
        assert server.process.wait(timeout=60) == 0
    assert list(spool.iterdir()) == []
    assert "Traceback" not in log.read_text()

    # 2. Restarted on the same database (on a device that breaks on anything larger than 64 pixels):
    #    the styles are there; then the device breaks, the worker dies, the process exits with status 1.
    with serve(weights, db, log, launcher=(sys.executable, "-c", BREAKING_DEVICE)) as server:
        listed = httpx.get(f"{server.url}/v1/styles").json()["styles"]
        assert [s["id"] for s in listed] == ids
        assert [s["name"] for s in listed] == [p.stem for p in style_paths[:2]]
        assert httpx.get(f"{server.url}/v1/styles/{ids[1]}/thumbnail").headers["content-type"] == "image/jpeg"
        r = httpx.post(f"{server.url}/v1/stylize", files={"content": ("c.jpg", content)}, data={"style_id": ids[0]})
        assert r.status_code == 200 and pixels(r.content).shape[:2] == (SIZE, SIZE * 3 // 2)
        r = httpx.post(f"{server.url}/v1/stylize", files={"content": ("c.jpg", content)},
                       data={"style_id": ids[0], "content_size": "96"}, timeout=60)
        assert r.status_code == 503 and r.json()["error"]["code"] == "worker_failed"
        assert server.process.wait(timeout=60) == 1  # so that the supervisor restarts it
    assert "worker cpu#0 died: CUDA error" in log.read_text()


def test_requests_still_running_past_the_shutdown_timeout_get_a_json_503(
        tmp_path: Path, weight_files: dict, content_paths: list[Path], style_paths: list[Path]) -> None:
    files = {"content": ("c.jpg", content_paths[0].read_bytes()), "style": ("s.jpg", style_paths[0].read_bytes())}

    async def sigterm_while_running(server) -> httpx.Response:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            big = asyncio.create_task(client.post("/v1/stylize", files=files, data={"content_size": "1536"}))
            await asyncio.sleep(1)  # decoded and in the model: 2304x1536 takes many seconds on a CPU
            server.process.send_signal(signal.SIGTERM)
            return await big

    with serve(weight_files["vgg16"], tmp_path / "styles.db", tmp_path / "server.log",
               "--shutdown-timeout", "0.5") as server:
        r = asyncio.run(sigterm_while_running(server))
        assert server.process.wait(timeout=120) == 0
    assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
    assert r.json()["error"]["code"] == "shutting_down"


def test_late_work_is_abandoned_hopeless_work_refused_and_large_work_runs_beside_small_work(
        tmp_path: Path, weight_files: dict, content_paths: list[Path], style_paths: list[Path]) -> None:
    files = {"content": ("c.jpg", content_paths[0].read_bytes()), "style": ("s.jpg", style_paths[0].read_bytes())}
    big = {"content_size": "512"}  # 768x512, in six tiles of 256 px: seconds on a CPU

    async def scenario(url: str) -> dict[str, object]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            async def scrape(name: str, **labels: str) -> float:
                return metric((await client.get("/metrics")).text, name, **labels)

            async def until(name: str, value: float, **labels: str) -> None:
                for _ in range(1000):
                    if await scrape(name, **labels) >= value:
                        return
                    await asyncio.sleep(0.05)
                raise AssertionError(f"{name}{labels} never reached {value}")

            seen: dict[str, object] = {}
            # (a) past its deadline, the work stops at the next safe point (between tiles): the decoder never runs
            seen["late"] = await client.post("/v1/stylize", files=files, data=big, headers={"x-request-timeout": "0.5"})
            await until("adain_dropped_total", 1, reason="abandoned")
            seen["tiled_passes"] = await scrape("adain_tiled_passes_total")
            # (c) a large request runs in its own lane: small ones are answered while it runs
            large = asyncio.create_task(client.post("/v1/stylize", files=files, data=big))
            await until("adain_backlog_seconds", 1e-9, lane="large")
            seen["small"] = await asyncio.gather(*(client.post("/v1/stylize", files=files) for _ in range(3)))
            seen["large_running"] = not large.done()
            # (b) one that could not finish before its deadline behind the large one is refused at once
            seen["hopeless"] = await client.post("/v1/stylize", files=files, data=big,
                                                 headers={"x-request-timeout": "1"})
            seen["overloaded"] = await scrape("adain_dropped_total", reason="overloaded")
            seen["too_slow"] = await scrape("adain_dropped_total", reason="too_slow")
            seen["large"] = await large
        return seen

    with serve(weight_files["vgg16"], tmp_path / "styles.db", tmp_path / "server.log", "--tile-pixels", "65536",
               "--tile-size", "256", "--large-pixels", "65536") as server:
        seen = asyncio.run(scenario(server.url))
    late, hopeless = seen["late"], seen["hopeless"]
    assert late.status_code == 504 and late.json()["error"]["code"] == "deadline_exceeded", late.text
    assert seen["tiled_passes"] == 1  # the encoder's, cut short; no decoder pass
    assert [r.status_code for r in seen["small"]] == [200] * 3 and seen["large_running"]
    assert seen["large"].status_code == 200
    # refused at once either way: behind the queue (503), or, on a machine where even alone it takes about its
    # 1 s deadline, as too slow for it (504 before any work)
    if hopeless.status_code == 503:
        assert hopeless.json()["error"]["code"] == "overloaded", hopeless.text
        assert int(hopeless.headers["retry-after"]) >= 1 and seen["overloaded"] == 1
    else:
        assert hopeless.status_code == 504 and "ask for a smaller size or allow more time" in hopeless.text
        assert seen["too_slow"] == 1


def test_work_that_must_be_refused_is_refused_from_its_header_before_any_pixel_is_decoded(
        tmp_path: Path, weight_files: dict, style_paths: list[Path]) -> None:
    # A 768x512 PNG, and a file with the same header whose pixels are missing: decoding it fails (422), so only a
    # refusal that comes before decoding can answer it otherwise.
    style = ("s.jpg", style_paths[0].read_bytes(), "image/jpeg")
    good = [("content", ("c.png", image_bytes((768, 512), "PNG", color=(90, 120, 200)), "image/png")), ("style", style)]
    hollow = [("content", ("c.png", png_header(768, 512), "image/png")), ("style", style)]
    size = {"content_size": "512"}
    with serve(weight_files["vgg16"], tmp_path / "styles.db", tmp_path / "server.log") as server:
        measured = httpx.post(f"{server.url}/v1/stylize", files=good, data=size, timeout=120)
        assert measured.status_code == 200, measured.text
        model_s = float(re.search(r"model;dur=([\d.]+)", measured.headers["server-timing"]).group(1)) / 1000
        # the same size in half the time it was measured to take: too slow, refused from the header alone
        refused = httpx.post(f"{server.url}/v1/stylize", files=hollow, data=size, timeout=120,
                             headers={"X-Request-Timeout": f"{model_s / 2:.3f}"})
        dropped = metric(httpx.get(f"{server.url}/metrics").text, "adain_dropped_total", reason="too_slow")
        decoded = httpx.post(f"{server.url}/v1/stylize", files=hollow, data=size, timeout=120)
    assert refused.status_code == 504, refused.text
    assert refused.json()["error"]["code"] == "deadline_exceeded" and "ask for a smaller size" in refused.text
    assert dropped == 1
    assert decoded.status_code == 422 and decoded.json()["error"]["code"] == "invalid_image", decoded.text
    assert "truncated or corrupt" in decoded.text


def test_queued_work_that_falls_behind_is_refused_with_503_before_its_deadline(
        tmp_path: Path, weight_files: dict) -> None:
    # An uploaded style is encoded unless the worker's cache holds it, but the cost model counts its pixels either
    # way: after requests whose style is cached, the estimate for their size is far below what a new style costs.
    # A burst of new styles is then admitted on that estimate, and the first of them to finish shows it.
    content = ("c.png", image_bytes((64, 64), "PNG", color=(90, 120, 200)), "image/png")
    size = {"content_size": "64", "style_size": "768"}

    async def scenario(url: str) -> tuple[list[httpx.Response], str]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            async def post(style: int, **headers: str) -> httpx.Response:
                image = ("s.png", image_bytes((768, 768), "PNG", color=(style, 255 - style, 40)), "image/png")
                r = await client.post("/v1/stylize", files=[("content", content), ("style", image)], data=size,
                                      headers=headers)
                assert r.status_code in (200, 503, 504), r.text
                return r

            await post(0)  # the first run at these shapes
            new = await post(1)  # a new style, encoded
            took = float(re.search(r"model;dur=([\d.]+)", new.headers["server-timing"]).group(1)) / 1000
            for _ in range(12):  # the same style, cached: the estimate falls towards these runs
                await post(1)
            # eight new styles at once, with time for three of them
            burst = await asyncio.gather(*(post(10 + i, **{"x-request-timeout": f"{3 * took:.3f}"})
                                           for i in range(8)))
            return burst, (await client.get("/metrics")).text

    with serve(weight_files["vgg16"], tmp_path / "styles.db", tmp_path / "server.log", "--batch-size", "1") as server:
        burst, metrics = asyncio.run(scenario(server.url))
    # refused once queued (shed) rather than left to reach their deadline; any that came after the first result
    # are refused when queued (overloaded) instead
    refused = [r for r in burst if r.status_code == 503]
    shed = metric(metrics, "adain_dropped_total", reason="shed")
    assert 200 in [r.status_code for r in burst] and shed >= 1
    assert len(refused) == shed + metric(metrics, "adain_dropped_total", reason="overloaded")
    assert sum("the queue fell behind" in r.text for r in refused) == shed
    for r in refused:
        assert r.json()["error"]["code"] == "overloaded" and int(r.headers["retry-after"]) >= 1, r.text


def test_sighup_drains_like_sigterm_and_says_so(tmp_path: Path, weight_files: dict, content_paths: list[Path],
                                                style_paths: list[Path]) -> None:
    files = {"content": ("c.jpg", content_paths[0].read_bytes()), "style": ("s.jpg", style_paths[0].read_bytes())}
    log = tmp_path / "server.log"

    async def sighup_while_queued(server) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            tasks = [asyncio.create_task(client.post("/v1/stylize", files=files, data={"content_size": "96"}))
                     for _ in range(6)]
            for _ in range(500):
                if metric((await client.get("/metrics")).text, "adain_queue_depth") >= 2:
                    break
                await asyncio.sleep(0.02)
            server.process.send_signal(signal.SIGHUP)  # a closed terminal, or a supervisor's reload
            return await asyncio.gather(*tasks)

    with serve(weight_files["vgg16"], tmp_path / "styles.db", log, "--batch-size", "1") as server:
        responses = asyncio.run(sighup_while_queued(server))
        assert server.process.wait(timeout=60) == 0
    assert [r.status_code for r in responses] == [200] * 6
    assert "SIGHUP" in log.read_text()


def test_work_of_clients_that_hung_up_is_dropped_and_counted(
        tmp_path: Path, weight_files: dict, content_paths: list[Path], style_paths: list[Path]) -> None:
    files = {"content": ("c.jpg", content_paths[0].read_bytes()), "style": ("s.jpg", style_paths[0].read_bytes())}

    def stylize() -> float:
        start = time.monotonic()
        answer = httpx.post(f"{server.url}/v1/stylize", files=files, data={"content_size": "480"}, timeout=120)
        assert answer.status_code == 200
        return time.monotonic() - start

    async def impatient(url: str, patience: float) -> int:  # as `curl -m`: each gives up after `patience` seconds
        async with httpx.AsyncClient(base_url=url, timeout=patience) as client:
            results = await asyncio.gather(*(client.post("/v1/stylize", files=files, data={"content_size": "480"})
                                             for _ in range(6)), return_exceptions=True)
        assert all(isinstance(r, httpx.TimeoutException) or r.status_code == 200 for r in results), results
        return sum(isinstance(r, httpx.TimeoutException) for r in results)

    with serve(weight_files["vgg16"], tmp_path / "styles.db", tmp_path / "server.log", "--batch-size", "1") as server:
        stylize()  # the size is measured: admission lets the next ones queue behind it
        # half of one request's time, whatever the machine: the first may still finish, the queued ones cannot
        gave_up = asyncio.run(impatient(server.url, stylize() / 2))
        assert gave_up >= 5
        for _ in range(600):  # until the server is done with all six: answered, nothing queued or running, and
            text = httpx.get(f"{server.url}/metrics").text  # each counted (a running one when its worker stops)
            dropped = sum(metric(text, "adain_dropped_total", reason=r) for r in ("given_up", "abandoned"))
            idle = metric(text, "adain_queue_depth") == 0 and metric(text, "adain_backlog_seconds") == 0
            if metric(text, "adain_http_requests_total", route="/v1/stylize") == 8 and idle and dropped >= gave_up:
                break
            time.sleep(0.1)
    assert metric(text, "adain_http_requests_total", route="/v1/stylize", status="200") == 2 + 6 - gave_up
    assert metric(text, "adain_http_requests_total", route="/v1/stylize", status="499") == gave_up
    assert metric(text, "adain_dropped_total", reason="given_up") + metric(text, "adain_dropped_total",
                                                                           reason="abandoned") == gave_up
