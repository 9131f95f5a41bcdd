"""Model benchmark: naive baseline vs the fast path, in one run, on this machine.

    python bench/bench_model.py [--sizes 256 512 1024] [--repeats 5] [--json out.json]

Latency of content + 1 style per size (median of --repeats), batched throughput,
cold start (process start to first result), peak RSS, and the error bf16 brings.
Real weights (the default bundle, or --encoder/--decoder), so the bf16 error is measured on real outputs.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from naive import naive_stylize  # noqa: E402

from adain import Decoder, Encoder, Stylizer, Target  # noqa: E402
from adain.bundles import resolve  # noqa: E402
from adain.images import to_uint8  # noqa: E402
from adain.ops import Stats  # noqa: E402
from adain.weights_io import build_decoder, build_encoder  # noqa: E402


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _image(h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, h, w, generator=g)


def _networks(args: argparse.Namespace) -> tuple[Encoder, Decoder]:
    """The bundle's (or given files') networks: real weights, so the bf16 error is a real one."""
    found = resolve(args.model, args.encoder, args.decoder, quiet=True)
    return build_encoder(found.encoder, found.arch), build_decoder(found.decoder, found.arch)


def _fast(enc: Encoder, dec: Decoder, device: str, precision: str) -> Stylizer:
    return Stylizer(copy.deepcopy(enc), copy.deepcopy(dec), device=device, precision=precision)


def latency(enc: Encoder, dec: Decoder, sizes: list[tuple[int, int]], repeats: int, device: str) -> list[dict]:
    """Median seconds per stylization: naive (fp32, re-encode) vs fast (fp32 and bf16, cached style)."""
    fast = {p: _fast(enc, dec, device, p) for p in ("fp32", "bf16")}
    style = _image(512, 512, 1)
    rows = []
    for h, w in sizes:
        content = _image(h, w, 0)
        naive = functools.partial(naive_stylize, enc, dec, content[None], [style[None]], [1.0])
        row = {"size": f"{w}x{h}", "naive_fp32_s": _median_time(naive, repeats)}
        for p, st in fast.items():
            row[f"fast_{p}_s"] = _median_time(functools.partial(st.stylize, content, [style]), repeats)
            row[f"speedup_{p}"] = row["naive_fp32_s"] / row[f"fast_{p}_s"]
        ref, approx = to_uint8(naive()[0]).int(), to_uint8(fast["bf16"].stylize(content, [style])).int()
        diff = (approx - ref).abs()
        row["bf16_mean_abs_err_255"] = diff.float().mean().item()
        row["bf16_within_2_255"] = (diff <= 2).float().mean().item()
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def throughput(enc: Encoder, dec: Decoder, size: int, batch: int, repeats: int, device: str, precision: str) -> dict:
    """Images/s for a batch of equal-size contents with one cached style."""
    st = _fast(enc, dec, device, precision)
    contents = torch.rand(batch, 3, size, size)
    stats = st.compute_stats(_image(size, size, 1))
    target = Target(Stats(stats.mean[None], stats.std[None]), torch.ones(1), 1.0)
    t = _median_time(functools.partial(st.render, contents, [target] * batch), repeats)
    row = {"size": size, "batch": batch, "precision": precision, "images_per_s": batch / t}
    print(json.dumps(row), flush=True)
    return row


def cold_start(args: argparse.Namespace) -> float:
    """Seconds from process start to the first result (import, load weights, one 512x512 image)."""
    code = ("import sys, torch; from adain import Stylizer; from adain.bundles import resolve; "
            f"f = resolve({args.model!r}, {args.encoder!r}, {args.decoder!r}, quiet=True); "
            f"st = Stylizer.from_files(f.encoder, f.decoder, arch=f.arch, device={args.device!r}); "
            "st.stylize(torch.rand(3, 512, 512), [torch.rand(3, 512, 512)])")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="bundle (default: the default bundle)")
    p.add_argument("--encoder", help="encoder file instead of the bundle's")
    p.add_argument("--decoder", help="decoder file instead of the bundle's")
    p.add_argument("--sizes", nargs="+", default=["256", "512", "1024"], help="N (square) or WxH")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    sizes = [tuple(reversed([int(v) for v in s.split("x")])) if "x" in s else (int(s), int(s)) for s in args.sizes]
    enc, dec = _networks(args)
    result = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "device": args.device,
        "latency": latency(enc, dec, sizes, args.repeats, args.device),
        "throughput": [throughput(enc, dec, 256, args.batch, args.repeats, args.device, p) for p in ("fp32", "bf16")],
        "cold_start_s": cold_start(args),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps({k: result[k] for k in ("cold_start_s", "peak_rss_mib")}))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
