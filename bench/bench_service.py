"""Service load test: `adain serve` on 127.0.0.1, 512x512 JPEG requests from 1, 8 and 32 concurrent clients.

    python bench/bench_service.py --json bench/service.json --markdown bench/service.md

Starts the server itself (a subprocess on a free port, its own temporary style store), waits for /readyz,
then for each way of naming the style and each concurrency runs a bounded cell (--requests requests or
--cell-seconds seconds, whichever comes first; requests in flight are awaited) with httpx + asyncio:

* stored: the style uploaded once (POST /v1/styles), then only its style_id is sent;
* upload: the same style file uploaded with every request (decoded and hashed each time; its statistics
  come from the worker's cache);
* upload-new: a different style image with every request, so it is encoded every time.

Reports requests/s, p50 / p99 latency (client side), the mean micro-batch size (from /metrics) and the
server's own model / queue times (Server-Timing). The clients share the machine with the server: on a
small CPU machine that costs the server a little.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import ROOT, add_weight_args, cpu_facts, fmt, photo, table, weight_files, write_report  # noqa: E402

MODES = ("stored", "upload", "upload-new")


def jpeg(img, quality: int = 90) -> bytes:
    """A float (3, H, W) tensor or uint8 (H, W, 3) array as JPEG bytes."""
    arr = img if isinstance(img, np.ndarray) else (img.clamp(0, 1) * 255 + 0.5).byte().permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace, weights, folder: Path) -> tuple[subprocess.Popen, str, Path]:
    arch, enc, dec = weights
    port = free_port()
    log = folder / "server.log"
    cmd = [sys.executable, "-m", "adain.cli", "serve", "--encoder", str(enc), "--decoder", str(dec), "--arch", arch,
           "--device", args.device, "--precision", args.precision, "--host", "127.0.0.1", "--port", str(port),
           "--db", str(folder / "styles.db"), "--content-size", str(args.size), "--style-size", str(args.size),
           "--batch-size", str(args.batch_size), "--queue-size", "256", "--request-timeout", "600",
           "--log-level", "warning", *args.server_args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + args.start_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}); its log:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url, log
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise SystemExit(f"the server was not ready within {args.start_timeout} s; its log:\n{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _metric(text: str, name: str) -> float:
    """Sum of the samples of one metric in a Prometheus exposition."""
    return sum(float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def _timings(header: str) -> dict[str, float]:
    out = {}
    for part in header.split(","):
        name, _, rest = part.strip().partition(";")
        m = re.search(r"dur=([\d.]+)", rest)
        if m:
            out[name] = float(m.group(1))
    return out


async def cell(client: httpx.AsyncClient, mode: str, clients: int, contents: list[bytes], style: bytes,
               new_styles: list[bytes], style_id: str, args: argparse.Namespace) -> dict:
    """``clients`` concurrent clients sending requests until --requests were sent or --cell-seconds passed."""
    total = max(args.requests, 2 * clients)
    sent = 0
    latencies: list[float] = []
    model_ms: list[float] = []
    queue_ms: list[float] = []
    errors: dict[str, int] = {}
    metrics_before = (await client.get("/metrics")).text
    t0 = time.perf_counter()
    stop_at = t0 + args.cell_seconds

    async def one_client() -> None:
        nonlocal sent
        while sent < total and time.perf_counter() < stop_at:
            i = sent
            sent += 1
            files = [("content", ("c.jpg", contents[i % len(contents)], "image/jpeg"))]
            data = {"format": "jpeg", "quality": "90"}
            if mode == "stored":
                data["style_id"] = style_id
            else:
                files.append(("style", ("s.jpg", style if mode == "upload" else new_styles[i % len(new_styles)],
                                        "image/jpeg")))
            start = time.perf_counter()
            try:
                r = await client.post("/v1/stylize", files=files, data=data)
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            if r.status_code != 200:
                errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                continue
            latencies.append(time.perf_counter() - start)
            t = _timings(r.headers.get("server-timing", ""))
            model_ms.append(t.get("model", 0.0))
            queue_ms.append(t.get("queue", 0.0))

    await asyncio.gather(*(one_client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    metrics_after = (await client.get("/metrics")).text
    runs = _metric(metrics_after, "adain_batch_size_count") - _metric(metrics_before, "adain_batch_size_count")
    images = _metric(metrics_after, "adain_batch_size_sum") - _metric(metrics_before, "adain_batch_size_sum")
    lat = np.array(latencies) * 1e3
    row = {"mode": mode, "clients": clients, "requests": len(latencies), "errors": errors, "wall_s": wall,
           "requests_per_s": len(latencies) / wall,
           "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
           "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
           "mean_batch": images / runs if runs else None,
           "model_ms_median": float(np.median(model_ms)) if model_ms else None,
           "queue_ms_median": float(np.median(queue_ms)) if queue_ms else None}
    print(json.dumps(row), flush=True)
    return row


async def run_all(url: str, args: argparse.Namespace) -> list[dict]:
    size = (args.size, args.size)
    contents = [jpeg(photo("content", size, i)) for i in range(8)]
    base = (photo("style", size, 0).clamp(0, 1) * 255 + 0.5).byte().permute(1, 2, 0).numpy()
    style = jpeg(base)
    new_styles = []
    if "upload-new" in args.modes:  # distinct images (a different 8x8 corner each), so each misses the cache
        for i in range(max(args.requests, 2 * max(args.concurrency)) * 2):
            arr = base.copy()
            arr[:8, :8] = [(i * 37) % 256, (i * 91) % 256, (i * 13) % 256]
            new_styles.append(jpeg(arr))
    limits = httpx.Limits(max_connections=max(args.concurrency) + 4, max_keepalive_connections=max(args.concurrency))
    rows = []
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        r = await client.post("/v1/styles", files=[("image", ("style.jpg", style, "image/jpeg"))])
        r.raise_for_status()
        style_id = r.json()["id"]
        for i in range(args.warmup):  # warm the server's paths (and its style cache) before measuring
            await client.post("/v1/stylize", files=[("content", ("c.jpg", contents[i % 8], "image/jpeg")),
                                                    ("style", ("s.jpg", style, "image/jpeg"))],
                              data={"format": "jpeg"})
        for mode in args.modes:
            for c in args.concurrency:
                rows.append(await cell(client, mode, c, contents, style, new_styles, style_id, args))
    return rows


def markdown(r: dict) -> str:
    m, s = r["machine"], r["settings"]
    out = [f"### Service: {m['cpu']} ({m['threads']} threads), torch {m['torch']}, {m['date']}", "",
           f"`adain serve` on 127.0.0.1 ({s['device']}, {s['precision']}, batch size {s['batch_size']}, "
           f"{r['weights']}); {s['size']}x{s['size']} JPEG contents, JPEG out; each cell at most {s['requests']} "
           f"requests (2 per client at least) or {s['cell_seconds']:g} s. Latency as the client sees it; "
           "mean batch from /metrics; model / queue = the server's median Server-Timing.", ""]
    rows = [[x["mode"], x["clients"], x["requests"], f"**{x['requests_per_s']:.2f}**", fmt(x["p50_ms"], 4),
             fmt(x["p99_ms"], 4), fmt(x["mean_batch"]), fmt(x["model_ms_median"], 4), fmt(x["queue_ms_median"], 4),
             ", ".join(f"{k}: {v}" for k, v in x["errors"].items()) or "0"] for x in r["cells"]]
    out.append(table(["style", "clients", "requests", "req/s", "p50 ms", "p99 ms", "mean batch", "model ms",
                      "queue ms", "errors"], rows))
    out.append(f"\n(server start to ready {r['server_ready_s']:.1f} s; load test wall time {r['wall_s']:.0f} s)")
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_weight_args(p)
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--requests", type=int, default=48, help="most requests per cell (at least 2 per client)")
    p.add_argument("--cell-seconds", type=float, default=25.0, help="no new requests after this many seconds")
    p.add_argument("--warmup", type=int, default=2, help="untimed requests before the first cell")
    p.add_argument("--size", type=int, default=512, help="content and style side (the server's sizes too)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--batch-size", type=int, default=8, help="the server's --batch-size")
    p.add_argument("--start-timeout", type=float, default=300)
    p.add_argument("--server-args", nargs=argparse.REMAINDER, default=[],
                   help="more `adain serve` flags (last on the line)")
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    args = p.parse_args()
    started = time.perf_counter()
    weights = weight_files(args)
    with tempfile.TemporaryDirectory(prefix="adain-bench-service-") as tmp:
        t0 = time.perf_counter()
        proc, url, log = start_server(args, weights, Path(tmp))
        ready = time.perf_counter() - t0
        try:
            cells = asyncio.run(run_all(url, args))
        finally:
            stop_server(proc)
        if proc.returncode not in (0, -signal.SIGTERM):
            print(f"server exit status {proc.returncode}; log tail:\n{log.read_text()[-2000:]}", file=sys.stderr)
    arch, enc, dec = weights
    result = {"machine": cpu_facts(), "weights": f"random {arch} (smoke run)" if args.random_weights else
              f"{arch}: {enc.name}, {dec.name}",
              "settings": {k: getattr(args, k) for k in ("device", "precision", "batch_size", "size", "requests",
                                                          "cell_seconds", "concurrency", "modes")},
              "server_ready_s": ready, "cells": cells, "wall_s": time.perf_counter() - started}
    text = markdown(result)
    write_report(args, result, text)


if __name__ == "__main__":
    main()
