"""Overload test: 64 closed-loop clients, 10% large (2048 px) and 90% small (256 px) requests, for a fixed time.

    python bench/bench_overload.py --seconds 60 --markdown /tmp/overload.md

Starts `adain serve` (see bench_service.py) with its default admission control, stores one style, then
each client sends requests back to back: with probability --large-share a content_size of --large,
else --small. A 503 is retried after its Retry-After (at most --max-backoff seconds). Reports, per size,
the share of each status, p50 / p99 latency of the 2xx, and the server's adain_dropped_total by reason.
A 504 means the server accepted work it could not finish before the deadline. `--log-level debug
--server-log FILE` keeps the server's log, with a line per batch: its time against the estimate it was
admitted on.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_service import jpeg, start_server, stop_server  # noqa: E402
from common import add_weight_args, cpu_facts, fmt, photo, table, weight_files, write_report  # noqa: E402


async def load(url: str, args: argparse.Namespace) -> tuple[list[dict], str]:
    content = jpeg(photo("content", (512, 768), 0))
    style = jpeg(photo("style", (256, 256), 0))
    limits = httpx.Limits(max_connections=args.clients + 4, max_keepalive_connections=args.clients)
    results: list[dict] = []
    async with httpx.AsyncClient(base_url=url, timeout=args.timeout + 30, limits=limits) as client:
        r = await client.post("/v1/styles", files=[("image", ("style.jpg", style, "image/jpeg"))])
        r.raise_for_status()
        style_id = r.json()["id"]
        began = time.monotonic()
        stop_at = began + args.seconds

        async def one_client(seed: int) -> None:
            rng = random.Random(seed)
            while time.monotonic() < stop_at:
                size = args.large if rng.random() < args.large_share else args.small
                t0 = time.monotonic()
                try:
                    r = await client.post("/v1/stylize", files=[("content", ("c.jpg", content, "image/jpeg"))],
                                          data={"style_id": style_id, "content_size": str(size), "format": "jpeg"})
                except httpx.TransportError as exc:  # counted as "other", by exception name
                    results.append({"size": size, "status": type(exc).__name__, "at": t0 - began,
                                    "s": time.monotonic() - t0})
                    continue
                results.append({"size": size, "status": r.status_code, "at": t0 - began, "s": time.monotonic() - t0})
                if r.status_code == 503:
                    await asyncio.sleep(min(args.max_backoff, float(r.headers.get("retry-after", 1))))

        await asyncio.gather(*(one_client(i) for i in range(args.clients)))
        metrics = (await client.get("/metrics")).text
    return results, metrics


def summary(results: list[dict], size: int) -> dict:
    mine = [r for r in results if r["size"] == size]
    statuses = Counter(r["status"] for r in mine)
    ok = sorted(r["s"] for r in mine if r["status"] in range(200, 300))
    n = len(mine) or 1
    return {"size": size, "requests": len(mine), "share_2xx": len(ok) / n,
            "share_503": statuses[503] / n, "n_504": statuses[504],
            "other": {k: v for k, v in statuses.items() if k not in (200, 503, 504)},
            "p50_ms": float(np.percentile(ok, 50)) * 1000 if ok else None,
            "p99_ms": float(np.percentile(ok, 99)) * 1000 if ok else None}


def markdown(r: dict) -> str:
    m, s = r["machine"], r["settings"]
    out = [f"### Overload: {m['cpu']} ({m['threads']} threads), torch {m['torch']}, {m['date']}", "",
           f"`adain serve` on 127.0.0.1 (cpu, {s['precision']}, defaults otherwise: --request-timeout "
           f"{s['timeout']:g}, --large-pixels 1 MiP), {r['weights']}; {s['clients']} closed-loop clients for "
           f"{s['seconds']:g} s, {s['large_share']:.0%} at content_size {s['large']} and the rest at {s['small']} "
           "(a 768x512 JPEG, a stored style); a 503 is retried after its Retry-After (at most "
           f"{s['max_backoff']:g} s). Latency as the client sees it, 2xx only.", ""]
    rows = [[x["size"], x["requests"], f"{x['share_2xx']:.1%}", f"{x['share_503']:.1%}", x["n_504"],
             fmt(x["p50_ms"], 4), fmt(x["p99_ms"], 4), ", ".join(f"{k}: {v}" for k, v in x["other"].items()) or "0"]
            for x in r["sizes"]]
    out.append(table(["content_size", "requests", "2xx", "503", "504", "p50 ms", "p99 ms", "other"], rows))
    out.append(f"\nadain_dropped_total by reason: {r['dropped'] or 'none'}")
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_weight_args(p)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--large-share", type=float, default=0.1)
    p.add_argument("--large", type=int, default=2048)
    p.add_argument("--small", type=int, default=256)
    p.add_argument("--timeout", type=float, default=60.0, help="the server's --request-timeout")
    p.add_argument("--max-backoff", type=float, default=2.0)
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--start-timeout", type=float, default=300)
    p.add_argument("--log-level", default="warning", help="the server's --log-level (debug: one line per batch)")
    p.add_argument("--server-log", type=Path, help="keep the server's log here")
    p.add_argument("--json", type=Path, help="the tables' numbers, and each request (size, status, start, seconds)")
    p.add_argument("--markdown", type=Path)
    args = p.parse_args()
    server = argparse.Namespace(device="cpu", precision=args.precision, size=args.small, batch_size=8,
                                start_timeout=args.start_timeout,
                                server_args=["--request-timeout", str(args.timeout), "--queue-size", "64",
                                             "--log-level", args.log_level])
    weights = weight_files(args)
    with tempfile.TemporaryDirectory(prefix="adain-bench-overload-") as tmp:
        proc, url, log = start_server(server, weights, Path(tmp))
        try:
            results, metrics = asyncio.run(load(url, args))
        finally:
            stop_server(proc)
            if args.server_log:
                shutil.copyfile(log, args.server_log)
        if proc.returncode not in (0, -signal.SIGTERM):
            print(f"server exit status {proc.returncode}; log tail:\n{log.read_text()[-2000:]}", file=sys.stderr)
    dropped = {line.split('reason="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
               for line in metrics.splitlines() if line.startswith("adain_dropped_total{")}
    arch, enc, dec = weights
    result = {"machine": cpu_facts(), "weights": f"random {arch} (smoke run)" if args.random_weights else
              f"{arch}: {enc.name}, {dec.name}",
              "settings": {k: getattr(args, k) for k in ("clients", "seconds", "large_share", "large", "small",
                                                          "timeout", "max_backoff", "precision")},
              "sizes": [summary(results, args.small), summary(results, args.large)], "dropped": dropped,
              "requests": [[r["size"], r["status"], round(r["at"], 3), round(r["s"], 3)] for r in results]}
    write_report(args, result, markdown(result))


if __name__ == "__main__":
    main()
