"""Peak memory of `adain serve` per request size and batch size (the sizing table of docs/deploy.md).

    python bench/serve_memory.py [--device cpu] [--precision auto] [--layer relu3_1] [--skips relu1_1,relu2_1]
        [--cases idle 512x1 ...] [--json out.json]

Each case runs in a fresh server process (the real vgg16 architecture with random weights, the decoder for
``--layer`` with ``--skips``, relu3_1 with skips from relu1_1 and relu2_1 like the default bundle's: the memory
is that of the trained model) and reports the
process's peak resident memory (VmHWM) once the requests are done; a case NxB sends one N x N content image
(style 512 x 512) alone, so that admission control has measured the size, then B concurrent ones with
--batch-size B, so they form one batch (requests over the server's --large-pixels run one at a time in
their own lane instead); the time is that of the B requests.
On CUDA it also reports the peak of torch.cuda.max_memory_allocated from /metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from adain.bundles.layouts import save_safetensors  # noqa: E402
from adain.net import LAYERS, Decoder, Encoder  # noqa: E402


def _png(size: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)).resize((size, size))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def _gpu_peak_mib(text: str) -> float | None:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("adain_gpu_memory_bytes{") and 'kind="peak_allocated"' in line]
    return max(values) / 2**20 if values else None


def run_case(case: str, weights: dict[str, Path], device: str, precision: str, tmp: Path) -> dict:
    size, batch = (0, 1) if case == "idle" else map(int, case.split("x"))
    port = _port()
    cmd = [sys.executable, "-m", "adain.cli", "serve", "--encoder", str(weights["encoder"]), "--decoder",
           str(weights["decoder"]), "--device", device, "--precision", precision, "--port", str(port),
           "--db", str(tmp / f"{case}.db"),
           "--batch-size", str(batch), "--batch-window-ms", "2000", "--request-timeout", "3600",
           "--log-level", "warning"]
    server = subprocess.Popen(cmd, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            assert server.poll() is None, f"server exited with {server.returncode}"
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        ready_mib = _hwm_mib(server.pid)
        seconds = 0.0
        if batch and size:
            style = _png(512, 99)

            async def send(n: int) -> list[httpx.Response]:
                async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
                    return await asyncio.gather(*(client.post(
                        "/v1/stylize", data={"content_size": "0", "style_size": "512"},
                        files={"content": ("c.png", _png(size, i), "image/png"), "style": ("s.png", style)})
                        for i in range(n)))

            # one request alone first: admission control refuses work of an unmeasured size behind other work
            asyncio.run(send(1))
            t0 = time.perf_counter()
            responses = asyncio.run(send(batch))
            seconds = time.perf_counter() - t0
            assert all(r.status_code == 200 for r in responses), [r.text[:200] for r in responses]
        metrics = httpx.get(f"{url}/metrics").text
        runs = [line for line in metrics.splitlines() if line.startswith("adain_batch_size_count")]
        return {"case": case, "size": size, "batch": batch, "ready_peak_rss_mib": round(ready_mib),
                "peak_rss_mib": round(_hwm_mib(server.pid)), "seconds": round(seconds, 1),
                "gpu_peak_allocated_mib": _gpu_peak_mib(metrics), "model_runs": runs}
    finally:
        server.terminate()
        server.wait(timeout=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    p.add_argument("--layer", default="relu3_1", choices=LAYERS, help="the decoder's layer (default: the bundle's)")
    p.add_argument("--skips", default="relu1_1,relu2_1",
                   help="the decoder's skips, comma-separated, '' for none (default: the bundle's)")
    p.add_argument("--cases", nargs="+", default=["idle", "512x1", "1024x1", "512x4", "1024x4", "2048x1"])
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        weights = {"encoder": tmp / "encoder.safetensors", "decoder": tmp / "decoder.safetensors"}
        save_safetensors(Encoder("vgg16"), weights["encoder"], "vgg16")
        skips = [name for name in args.skips.split(",") if name]
        save_safetensors(Decoder("vgg16", args.layer, skips), weights["decoder"], "vgg16")
        results = []
        for case in args.cases:
            results.append(run_case(case, weights, args.device, args.precision, tmp))
            print(json.dumps(results[-1]), flush=True)
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or
            platform.machine(), "device": args.device, "precision": args.precision, "layer": args.layer,
            "skips": args.skips,
            "results": results}
    if args.json:
        args.json.write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
