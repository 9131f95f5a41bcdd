"""Model benchmark: the naive baseline vs the fast path, side by side in one run, on this machine.

    python bench/bench_model.py --json bench/model.json --markdown bench/model.md

* naive: fp32, batch 1, NCHW, no cache, the style re-encoded on every call, never tiled (bench/naive.py);
* fast: ``adain.Stylizer``: channels_last, the style statistics cached, bf16 autocast (AVX-512 BF16 / AMX on
  the CPU), images above ``--tile-pixels`` in tiles (``adain.tiling``); fast fp32 is shown too up to 1024.

Per size: median seconds of several runs (fewer for the large sizes), the ratios, conv GFLOP/s against the
untiled conv FLOP count, and the error bf16 brings (8-bit outputs of fast bf16 vs naive fp32; at tiled sizes
this includes tiling). Then batched throughput, cold start (process start to the first 512x512 result),
peak RSS, and the peak RSS of 4K and 8K runs through tiling, each in its own process (resource.getrusage).
The conv FLOPs of one 512x512 pass (encoder + decoder) are counted so that rates can be set against the
measured matmul rate of the device.

With a GPU (``torch.cuda.is_available()``) a GPU section runs as well: naive fp32 vs fast fp32/bf16/fp16 per
size, batched throughput, CUDA graphs and torch.compile at 512x512, TFLOP/s against the measured bf16 matmul
rate, and peak GPU memory. Without one it is skipped (and says so).

Real weights (the default bundle, or --model / --encoder / --decoder) so that the bf16 error is a real one;
``--random-weights vgg16`` only for smoke runs. Inputs are photos / paintings from ../shared/data resized
to each size (noise when that folder is missing).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import (  # noqa: E402
    add_weight_args,
    cpu_facts,
    fmt,
    median,
    parse_size,
    photo,
    size_name,
    sync,
    table,
    timed,
    weight_files,
    write_report,
)
from naive import naive_stylize  # noqa: E402

from adain import Decoder, Encoder, Stylizer, Target, ops  # noqa: E402
from adain.bundles.layouts import build_decoder, build_encoder  # noqa: E402
from adain.images import to_uint8  # noqa: E402
from adain.net import channels_of, scale_of  # noqa: E402
from adain.stylizer import PRECISIONS, TILE_PIXELS, TILE_SIZE, stack_stats  # noqa: E402

DEFAULT_SIZES = ["256", "512", "1024", "2048", "3840x2160"]
DEFAULT_MEMORY = ["3840x2160:bf16", "7680x4320:bf16"]


# ---- counting ----------------------------------------------------------------------------------


def conv_flops(enc: Encoder, dec: Decoder, hw: tuple[int, int]) -> dict[str, float]:
    """FLOPs (2 x multiply-adds) of every convolution of one untiled pass at (H, W), on the meta device, as the
    networks are written (the fused decoder of the fast path does fewer: adain.upconv)."""
    counts = {"encoder": 0.0, "decoder": 0.0}
    for name, net in (("encoder", enc), ("decoder", dec)):
        meta = copy.deepcopy(net).to("meta")
        hooks = []
        for m in meta.modules():
            if isinstance(m, torch.nn.Conv2d):
                k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups

                def hook(mod, inputs, output, k=k, name=name):
                    counts[name] += 2.0 * output.numel() * k
                hooks.append(m.register_forward_hook(hook))
        x = torch.empty(1, 3, *hw, device="meta") if name == "encoder" else \
            [torch.empty(1, channels_of(layer), -(-hw[0] // scale_of(layer)), -(-hw[1] // scale_of(layer)),
                         device="meta") for layer in dec.inputs]  # one map per input: the skips, then its layer
        with torch.no_grad():
            meta(x)
        for h in hooks:
            h.remove()
    counts["total"] = counts["encoder"] + counts["decoder"]
    return counts


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 5) -> float:
    """Measured FLOP/s of an n x n x n matmul: the practical ceiling the convolutions are set against."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    times, _ = timed(lambda: torch.mm(a, b), repeats, warmup=2, device=device)
    return 2.0 * n ** 3 / median(times)


# ---- the CPU (or --device) measurements ----------------------------------------------------------------


def _err(approx: torch.Tensor, ref: torch.Tensor) -> dict:
    diff = (to_uint8(approx).int() - to_uint8(ref).int()).abs().float()
    return {"within_2_255": diff.le(2).float().mean().item(), "mean_abs_255": diff.mean().item(),
            "max_abs_255": diff.max().item()}


def latency(enc: Encoder, dec: Decoder, fast: dict[str, Stylizer], sizes: list[tuple[int, int]],
            args: argparse.Namespace) -> list[dict]:
    """Per size: naive fp32 vs fast (fp32 up to --fp32-max-pixels, and bf16), medians, ratios, bf16 error."""
    style = photo("style", (512, 512))
    for st in fast.values():
        st.style_stats(style)  # the fast path's cache holds the style from the start, as in a service
    rows = []
    for hw in sizes:
        content = photo("content", hw)
        pixels = hw[0] * hw[1]
        large = pixels >= args.large_pixels
        repeats, warmup = (args.large_repeats, 0) if large else (args.repeats, 1)
        flops = conv_flops(enc, dec, hw)["total"]
        row: dict = {"size": size_name(hw), "pixels": pixels, "conv_gflop": flops / 1e9, "runs": repeats,
                     "tiled": next(iter(fast.values())).tile_for(hw) or None}
        naive = functools.partial(naive_stylize, enc, dec, content[None], [style[None]], [1.0])
        t, ref = timed(naive, repeats, warmup, budget_s=args.cell_budget)
        ref = ref[0]
        row["naive_fp32_s"], row["naive_runs"] = median(t), len(t)
        for p, st in fast.items():
            if p == "fp32" and pixels > args.fp32_max_pixels:
                continue
            t, out = timed(functools.partial(st.stylize, content, [style]), repeats, warmup,
                           budget_s=args.cell_budget)
            row[f"fast_{p}_s"], row[f"fast_{p}_runs"] = median(t), len(t)
            row[f"speedup_{p}"] = row["naive_fp32_s"] / row[f"fast_{p}_s"]
            row[f"fast_{p}_gflops"] = flops / row[f"fast_{p}_s"] / 1e9
            row[f"{p}_vs_naive"] = _err(out, ref)
        row["naive_gflops"] = flops / row["naive_fp32_s"] / 1e9
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def throughput(fast: dict[str, Stylizer], size: int, batch: int, repeats: int, naive_s: float | None) -> list[dict]:
    """Images/s of batches of equal-size contents with one cached style (fast), vs naive batch 1."""
    contents = torch.stack([photo("content", (size, size), i) for i in range(batch)])
    style = photo("style", (512, 512))
    rows = []
    if naive_s is not None:
        rows.append({"path": "naive fp32", "size": size, "batch": 1, "images_per_s": 1 / naive_s})
    for p, st in fast.items():
        target = Target(stack_stats([st.style_stats(style)]), torch.ones(1), 1.0)
        t, _ = timed(functools.partial(st.render, contents, [target] * batch), repeats, warmup=1)
        rows.append({"path": f"fast {p}", "size": size, "batch": batch, "images_per_s": batch / median(t),
                     "runs": len(t)})
        print(json.dumps(rows[-1]), flush=True)
    if naive_s is not None:
        for r in rows[1:]:
            r["vs_naive"] = r["images_per_s"] * naive_s
    return rows


def _variant(st: Stylizer, kind: str) -> Stylizer:
    """A copy of ``st`` as one variant of the fast path: "unfused" decodes with the decoder as written (no
    adain.upconv), "compiled" runs torch.compile'd encoder and decoder (inductor, weights frozen, static shapes)."""
    v = copy.copy(st)
    if kind == "unfused":
        v.decoder_fused = st.decoder
    else:
        v.encoder, v.decoder_fused = (torch.compile(m, dynamic=False, options={"freezing": True})
                                      for m in (st.encoder, st.decoder_fused))
    return v


def variants(fast: dict[str, Stylizer], hw: tuple[int, int], naive_s: float | None, repeats: int) -> list[dict]:
    """At one size, per precision: the fast path with the decoder unfused, as shipped, and torch.compile'd
    (first-call compile time stated); seconds, ratio to naive, 8-bit difference from the shipped fast path."""
    content, style = photo("content", hw), photo("style", (512, 512))
    rows = []
    for p, st in fast.items():
        t, ref = timed(functools.partial(st.stylize, content, [style]), repeats, warmup=1)
        rows.append({"precision": p, "variant": "fast (shipped)", "s": median(t), "runs": len(t)})
        for kind in ("unfused", "compiled"):
            v = _variant(st, kind)
            t0 = time.perf_counter()
            out = v.stylize(content, [style])  # the warm-up; compiles for "compiled"
            first = time.perf_counter() - t0
            t, _ = timed(functools.partial(v.stylize, content, [style]), repeats, warmup=0)
            rows.append({"precision": p, "variant": kind, "s": median(t), "runs": len(t), "first_call_s": first,
                         "vs_shipped": _err(out, ref)})
        for r in rows[-3:]:
            r["size"], r["vs_naive"] = size_name(hw), naive_s / r["s"] if naive_s else None
            print(json.dumps(r), flush=True)
    return rows


# ---- in a fresh process: cold start and peak memory ----------------------------------------------

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import torch
from adain import Stylizer
from adain.bundles.layouts import build_decoder, build_encoder
sys.path.insert(0, {here!r})
from naive import naive_stylize
torch.set_num_threads({threads})
def status_mib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
t_import = time.perf_counter()
mode, dev = {mode!r}, torch.device({device!r})
if mode == "naive":
    dec = build_decoder({dec!r}, {arch!r}).to(dev)
    enc = build_encoder({enc!r}, {arch!r}).at(dec.layer).to(dev)
    run = lambda c, s: naive_stylize(enc, dec, c[None].to(dev), [s[None].to(dev)], [1.0])[0].cpu()
else:
    st = Stylizer.from_files({enc!r}, {dec!r}, arch={arch!r}, device=dev, precision=mode,
                             tile_pixels={tile_pixels}, tile_size={tile_size})
    run = lambda c, s: st.stylize(c, [s])
t_load = time.perf_counter()
g = torch.Generator().manual_seed(0)
content, style = torch.rand(3, {h}, {w}, generator=g), torch.rand(3, 512, 512, generator=g)
base = status_mib("VmRSS")
t1 = time.perf_counter()
out = run(content, style)
if dev.type == "cuda":
    torch.cuda.synchronize(dev)
t2 = time.perf_counter()
print(json.dumps({{"import_s": t_import - t0, "load_s": t_load - t_import, "first_result_s": t2 - t1,
                  "run_s": t2 - t1, "rss_before_mib": base, "peak_rss_mib": status_mib("VmHWM"),
                  "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_gpu_mib": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
                  "tiled": getattr(locals().get("st"), "tiled_passes", 0) > 0, "out": list(out.shape)}}))
"""


def child(weights: tuple[str, Path, Path], mode: str, hw: tuple[int, int], device: str, threads: int,
          timeout: float, tile_pixels: int = TILE_PIXELS, tile_size: int = TILE_SIZE) -> dict:
    """Run one stylization of an (H, W) image in a fresh Python process; its timings and peak RSS."""
    arch, enc, dec = weights
    code = CHILD.format(here=str(HERE), threads=threads, mode=mode, device=device, enc=str(enc), dec=str(dec),
                        arch=arch, h=hw[0], w=hw[1], tile_pixels=tile_pixels, tile_size=tile_size)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"mode": mode, "size": size_name(hw), "error": (proc.stderr.strip().splitlines() or ["?"])[-1],
                "returncode": proc.returncode}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"mode": mode, "size": size_name(hw), "process_wall_s": wall, **result}


def cold_start(weights, device: str, threads: int, precisions: list[str]) -> list[dict]:
    """Process start (interpreter included) to the first 512x512 result, fast path in each of ``precisions``."""
    rows = []
    for mode in precisions:
        r = child(weights, mode, (512, 512), device, threads, timeout=600)
        rows.append(r)
        print(json.dumps(r), flush=True)
    return rows


def memory(weights, specs: list[str], device: str, threads: int, tile_pixels: int, tile_size: int) -> list[dict]:
    """Peak RSS of one run per 'WxH:mode' (mode: bf16 / fp32 / fp16 = the fast path, tiled above tile_pixels;
    naive = never tiled), each in a fresh process.

    getrusage's ru_maxrss survives fork and exec (Linux keeps the larger of the parent's at the fork and the
    child's), so it is right only while the child outgrows this process; these runs therefore come first, and
    the child's own high-water mark (VmHWM, the same counter for its own address space) is reported beside it.
    """
    rows = []
    for spec in specs:
        size, _, mode = spec.partition(":")
        r = child(weights, mode or "bf16", parse_size(size), device, threads, 900, tile_pixels, tile_size)
        rows.append(r)
        print(json.dumps(r), flush=True)
    return rows


# ---- GPU ------------------------------------------------------------------------------------------------


def _graphed(st: Stylizer, contents: torch.Tensor, target: Target):
    """Encoder -> AdaIN -> decoder for fixed-shape ``contents`` captured as one CUDA graph; returns run()."""
    size = tuple(contents.shape[-2:])
    mix = ops.blend_stats(ops.Stats(target.stats.mean.to(st.device), target.stats.std.to(st.device)),
                          target.weights)
    style = ops.Stats(mix.mean[None], mix.std[None])
    static = contents.to(st.device).contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast("cuda", dtype=PRECISIONS[st.precision], enabled=st.precision != "fp32",
                            cache_enabled=False):
            return st.decoder_fused(ops.adain(st.encoder(static), style), size).float().clamp_(0, 1)

    with torch.inference_mode():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = step()

    def run():
        graph.replay()
        return out
    return run


def _compiled(st: Stylizer, contents: torch.Tensor, target: Target):
    """The same pipeline with torch.compile'd encoder and decoder; returns run() (the first call compiles)."""
    enc, dec = torch.compile(st.encoder, dynamic=False), torch.compile(st.decoder_fused, dynamic=False)
    size = tuple(contents.shape[-2:])
    mix = ops.blend_stats(ops.Stats(target.stats.mean.to(st.device), target.stats.std.to(st.device)),
                          target.weights)
    style = ops.Stats(mix.mean[None], mix.std[None])
    x = contents.to(st.device).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def run():
        with st._autocast():
            return dec(ops.adain(enc(x), style), size).float().clamp_(0, 1)
    return run


def gpu_section(enc: Encoder, dec: Decoder, weights, args: argparse.Namespace) -> dict:
    """Naive vs fast fp32/bf16/fp16 on the GPU, batches, CUDA graphs, torch.compile, TFLOP/s vs matmul."""
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 matmul rate is a true fp32 one
    result: dict = {"device": torch.cuda.get_device_name(dev), "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                    "matmul_tflops": {name: matmul_rate(dev, PRECISIONS[name], 8192, 20) / 1e12
                                      for name in ("bf16", "fp16", "fp32")}}
    peak = result["matmul_tflops"]["bf16"] * 1e12
    print(json.dumps(result), flush=True)
    style = photo("style", (512, 512))
    fast = {p: Stylizer(copy.deepcopy(enc), copy.deepcopy(dec), device=dev, precision=p,
                        tile_pixels=args.tile_pixels, tile_size=args.gpu_tile_size) for p in ("fp32", "bf16", "fp16")}
    targets = {p: Target(stack_stats([st.style_stats(style)]), torch.ones(1), 1.0) for p, st in fast.items()}
    enc_n, dec_n = copy.deepcopy(enc).to(dev), copy.deepcopy(dec).to(dev)
    style_n = style[None].to(dev)
    rows = []
    for hw in [parse_size(s) for s in args.gpu_sizes]:
        content = photo("content", hw).to(dev)
        flops = conv_flops(enc, dec, hw)["total"]
        row: dict = {"size": size_name(hw), "conv_gflop": flops / 1e9, "tiled": fast["bf16"].tile_for(hw) or None}
        try:
            t, ref = timed(functools.partial(naive_stylize, enc_n, dec_n, content[None], [style_n], [1.0]),
                           args.gpu_repeats, 2, dev)
            row["naive_fp32_ms"] = median(t) * 1e3
        except torch.OutOfMemoryError:
            ref, row["naive_fp32_ms"] = None, None
            torch.cuda.empty_cache()
        for p, st in fast.items():
            torch.cuda.reset_peak_memory_stats(dev)
            try:
                t, out = timed(functools.partial(st.render, content, [targets[p]]), args.gpu_repeats, 2, dev)
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                continue
            s = median(t)
            row[f"{p}_ms"], row[f"{p}_tflops"] = s * 1e3, flops / s / 1e12
            row[f"{p}_pct_bf16_matmul"] = 100 * flops / s / peak
            row[f"{p}_peak_gpu_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
            if row["naive_fp32_ms"]:
                row[f"speedup_{p}"] = row["naive_fp32_ms"] / row[f"{p}_ms"]
            if ref is not None:
                row[f"{p}_vs_naive"] = _err(out, ref)
        rows.append(row)
        print(json.dumps(row), flush=True)
    result["latency"] = rows

    flops512 = conv_flops(enc, dec, (512, 512))["total"]
    batch_rows = []
    for batch in (1, args.gpu_batch):
        contents = torch.stack([photo("content", (512, 512), i) for i in range(batch)]).to(dev)
        variants = [(f"eager {p}", p, None) for p in fast] + \
                   [(f"CUDA graph {p}", p, _graphed) for p in ("bf16", "fp16")] + \
                   ([(f"torch.compile {p}", p, _compiled) for p in ("bf16",)] if args.compile else [])
        for name, p, make in variants:
            st, target = fast[p], targets[p]
            entry: dict = {"variant": name, "batch": batch}
            try:
                t_make = time.perf_counter()
                if make is None:
                    fn = functools.partial(st.render, contents, [target] * batch)
                else:
                    fn = make(st, contents, target)
                    fn()  # capture / compile
                    sync(dev)
                entry["setup_s"] = time.perf_counter() - t_make
                t, _ = timed(fn, args.gpu_repeats, 3, dev)
                s = median(t)
                entry |= {"ms": s * 1e3, "images_per_s": batch / s, "tflops": batch * flops512 / s / 1e12,
                          "pct_bf16_matmul": 100 * batch * flops512 / s / peak}
            except Exception as exc:  # report, do not lose the rest of the GPU run
                entry["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            batch_rows.append(entry)
            print(json.dumps(entry), flush=True)
    result["batches"] = batch_rows
    result["memory"] = memory(weights, args.gpu_memory, "cuda", torch.get_num_threads(), args.tile_pixels,
                              args.gpu_tile_size)
    return result


# ---- report -------------------------------------------------------------------------------------------


def _errcell(e: dict | None) -> str:
    if not e:
        return "-"
    return f"{100 * e['within_2_255']:.2f}% / {e['mean_abs_255']:.2f} / {e['max_abs_255']:.0f}"


def markdown(r: dict) -> str:
    m = r["machine"]
    limit = f", **ISA limited to {m['isa_limit']}**" if m.get("isa_limit") else ""
    out = [f"### Model: {m['cpu']} ({m['threads']} threads; {', '.join(m['isa']) or 'no AVX-512'}{limit}), "
           f"torch {m['torch']}, {m['date']}", "",
           f"Weights: {r['weights']}. Conv FLOPs of one 512x512 pass: encoder {r['flops_512']['encoder'] / 1e9:.1f}"
           f" + decoder {r['flops_512']['decoder'] / 1e9:.1f} = **{r['flops_512']['total'] / 1e9:.1f} GFLOP**. "
           f"Measured matmul rate ({r['device']}): "
           + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in r["matmul_flops"].items()) + ". "
           f"Tiling above {r['tile_pixels']} pixels, tiles of {r['tile_size']} px.", "",
           "Latency, content + 1 style (median seconds; naive = fp32, batch 1, NCHW, style re-encoded every call; "
           "fast = channels_last, style cache, tiling above the threshold). bf16 error vs naive fp32 on 8-bit "
           "outputs: share within 2/255 / mean / max (at tiled sizes tiling included); for fast fp32 only the "
           "naive port's unbiased variance, the fused decoder's rounding and tiling differ. GFLOP/s = untiled conv "
           "FLOPs of the networks as written / time.", ""]
    precisions = r.get("precisions", ["fp32", "bf16"])
    rows = []
    for x in r.get("latency", []):
        rows.append([x["size"], f"{x['tiled']} px" if x["tiled"] else "no", fmt(x["naive_fp32_s"])]
                    + [fmt(x.get(f"fast_{p}_s")) for p in precisions]
                    + [f"**{fmt(x[f'speedup_{p}'])}x**" if f"speedup_{p}" in x else "-" for p in precisions]
                    + [f"{x['naive_gflops']:.0f}"]
                    + [f"{x[f'fast_{p}_gflops']:.0f}" if f"fast_{p}_gflops" in x else "-" for p in precisions]
                    + [_errcell(x.get(f"{p}_vs_naive")) for p in precisions]
                    + ["/".join(str(x.get(k, "-")) for k in ("naive_runs", *(f"fast_{p}_runs" for p in precisions)))])
    out += [table(["size", "tiled", "naive fp32 s", *(f"fast {p} s" for p in precisions),
                   *(f"{p} speed-up" for p in precisions), "naive GFLOP/s", *(f"{p} GFLOP/s" for p in precisions),
                   *(f"{p} error" for p in precisions), "runs naive/" + "/".join(precisions)], rows), ""]
    if r.get("variants"):
        out += ["Variants of the fast path at one size (median seconds; unfused = the decoder as written, without "
                "adain.upconv; compiled = torch.compile with inductor freezing, static shapes, its first call "
                "compiling; difference from the shipped fast path in 8-bit values as above):", "",
                table(["precision", "variant", "size", "s", "vs naive", "first call s", "vs shipped", "runs"],
                      [[x["precision"], x["variant"], x["size"], fmt(x["s"]),
                        f"**{fmt(x['vs_naive'])}x**" if x.get("vs_naive") else "-", fmt(x.get("first_call_s")),
                        _errcell(x.get("vs_shipped")), x["runs"]] for x in r["variants"]]), ""]
    if r.get("throughput"):
        out += ["Throughput, one cached style (images/s):", "",
                table(["path", "size", "batch", "images/s", "vs naive"],
                      [[x["path"], x["size"], x["batch"], f"{x['images_per_s']:.2f}", fmt(x.get("vs_naive"))]
                       for x in r["throughput"]]), ""]
    if r.get("cold_start"):
        out += ["Cold start (fresh process: interpreter, imports, weights, first 512x512 result):", "",
                table(["precision", "total s", "imports s", "load s", "first result s"],
                      [[x["mode"], fmt(x.get("process_wall_s")), fmt(x.get("import_s")), fmt(x.get("load_s")),
                        fmt(x.get("first_result_s"))] if "error" not in x else [x["mode"], x["error"]]
                       for x in r["cold_start"]]), ""]
    if "peak_rss_mib" in r:
        out += [f"Peak RSS of the whole benchmark process: {r['peak_rss_mib']:.0f} MiB (naive untiled runs "
                "included)."]
    if r.get("memory"):
        out += ["", "Peak memory of one stylization, each in a fresh process (resource.getrusage):", "",
                table(["size", "path", "tiled", "seconds", "RSS before MiB", "peak RSS MiB (VmHWM)",
                       "getrusage ru_maxrss MiB"],
                      [[x["size"], x["mode"], "yes" if x.get("tiled") else "no", fmt(x.get("run_s")),
                        f"{x['rss_before_mib']:.0f}", f"**{x['peak_rss_mib']:.0f}**", f"{x['ru_maxrss_mib']:.0f}"]
                       if "error" not in x else [x["size"], x["mode"], "-", x["error"], "-", "-", "-"]
                       for x in r["memory"]])]
    g = r.get("gpu")
    if not g:
        out += ["", f"GPU section: {r.get('gpu_note', 'not run')}."]
        return "\n".join(out) + "\n"
    out += ["", f"### GPU: {g['device']}", "", "Measured matmul rate (8192^3): " +
            ", ".join(f"{k} {v:.0f} TFLOP/s" for k, v in g["matmul_tflops"].items()) +
            f" (fp32 convs {'may use' if g['cudnn_allow_tf32'] else 'do not use'} TF32: cuDNN's default).", "",
            "Latency, batch 1, style cached (median ms; TFLOP/s = untiled conv FLOPs / time, % of the bf16 matmul "
            "rate):", ""]
    rows = [[x["size"], f"{x['tiled']} px" if x["tiled"] else "no", fmt(x.get("naive_fp32_ms"))]
            + [f"{fmt(x[f'{p}_ms'])} ({x[f'{p}_tflops']:.1f} TF, {x[f'{p}_pct_bf16_matmul']:.0f}%)"
               if f"{p}_ms" in x else "OOM" for p in ("fp32", "bf16", "fp16")]
            + [fmt(x.get("speedup_bf16")), _errcell(x.get("bf16_vs_naive")), _errcell(x.get("fp16_vs_naive")),
               fmt(x.get("bf16_peak_gpu_mib"), 5)] for x in g["latency"]]
    out += [table(["size", "tiled", "naive fp32 ms", "fp32 ms", "bf16 ms", "fp16 ms", "bf16 speed-up",
                   "bf16 error", "fp16 error", "bf16 peak MiB"], rows), "",
            "512x512 batches (eager, CUDA graph, torch.compile):", "",
            table(["variant", "batch", "ms", "images/s", "TFLOP/s", "% bf16 matmul", "setup s"],
                  [[x["variant"], x["batch"], fmt(x.get("ms")), fmt(x.get("images_per_s")), fmt(x.get("tflops")),
                    fmt(x.get("pct_bf16_matmul")), fmt(x.get("setup_s"))] if "error" not in x
                   else [x["variant"], x["batch"], x["error"], "", "", "", ""] for x in g["batches"]])]
    if g.get("memory"):
        out += ["", table(["size", "path", "tiled", "seconds", "peak GPU MiB", "peak RSS MiB"],
                          [[x["size"], x["mode"], "yes" if x.get("tiled") else "no", fmt(x.get("run_s")),
                            fmt(x.get("peak_gpu_mib")), f"{x.get('peak_rss_mib', 0):.0f}"] for x in g["memory"]])]
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_weight_args(p)
    p.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES, help="N (square) or WxH (default %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per cell below --large-pixels")
    p.add_argument("--large-repeats", type=int, default=3, help="timed runs per cell from --large-pixels on")
    p.add_argument("--large-pixels", type=int, default=1024 * 1024, help="from here on: no warm-up run, fewer runs")
    p.add_argument("--cell-budget", type=float, default=30.0,
                   help="stop repeating a cell (at least one run) after this many seconds")
    p.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"],
                   help="precisions of the fast path (fp32 only where bf16 is emulated)")
    p.add_argument("--variant-size", default="1024", help="size of the variants section ('' to skip it)")
    p.add_argument("--fp32-max-pixels", type=int, default=1024 * 1024, help="fast fp32 only up to this size")
    p.add_argument("--batch", type=int, default=8, help="batch of the throughput measurement (0: skip it)")
    p.add_argument("--throughput-precisions", nargs="+", choices=("fp32", "bf16"), default=["bf16"])
    p.add_argument("--throughput-repeats", type=int, default=3)
    p.add_argument("--batch-size-px", type=int, default=512, help="image side of the throughput measurement")
    p.add_argument("--memory", nargs="*", default=DEFAULT_MEMORY,
                   help="WxH:mode runs for peak RSS, each in a fresh process; mode bf16, fp32 or naive "
                        "(default %(default)s)")
    p.add_argument("--no-cold-start", action="store_true")
    p.add_argument("--tile-pixels", type=int, default=TILE_PIXELS)
    p.add_argument("--tile-size", type=int, default=TILE_SIZE)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--device", default="cpu", help="device of the main (CPU) section")
    p.add_argument("--sections", nargs="+", choices=("cpu", "gpu"), default=["cpu", "gpu"],
                   help="cpu: the main section on --device; gpu: the GPU section (only with a CUDA device)")
    g = p.add_argument_group("GPU section (runs only when torch.cuda.is_available())")
    g.add_argument("--gpu-sizes", nargs="+", default=["512", "1024", "2048", "3840x2160", "7680x4320"])
    g.add_argument("--gpu-repeats", type=int, default=10)
    g.add_argument("--gpu-batch", type=int, default=32)
    g.add_argument("--gpu-tile-size", type=int, default=2048)
    g.add_argument("--gpu-memory", nargs="*", default=["7680x4320:bf16", "7680x4320:fp16"])
    g.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--markdown", type=Path, help="write the tables (for bench/RESULTS.md) here; also printed")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    weights = weight_files(args)
    arch, enc_path, dec_path = weights
    dec = build_decoder(dec_path, arch)
    enc = build_encoder(enc_path, arch).at(dec.layer)  # the naive path runs it too
    device = torch.device(args.device)
    fast = {p: Stylizer(copy.deepcopy(enc), copy.deepcopy(dec), device=device, precision=p,
                        tile_pixels=args.tile_pixels, tile_size=args.tile_size) for p in args.precisions}
    sizes = [parse_size(s) for s in args.sizes]
    result: dict = {
        "machine": cpu_facts(), "device": str(device), "precisions": args.precisions,
        "tile_pixels": args.tile_pixels, "tile_size": args.tile_size,
        "weights": f"random {arch} (smoke run)" if args.random_weights else f"{arch}: {enc_path.name}, "
                                                                           f"{dec_path.name}",
        "flops_512": conv_flops(enc, dec, (512, 512)),
        "matmul_flops": {p: matmul_rate(device, PRECISIONS[p], 2048) for p in args.precisions},
    }
    print(json.dumps({k: result[k] for k in ("machine", "flops_512", "matmul_flops")}), flush=True)
    spent = result["section_s"] = {}

    def section(name, fn):
        t0 = time.perf_counter()
        result[name] = fn()
        spent[name] = round(time.perf_counter() - t0, 1)
        print(f"# {name}: {spent[name]} s", flush=True)

    if "cpu" in args.sections:
        # fresh processes first, while this one is still small (see memory())
        section("cold_start", lambda: [] if args.no_cold_start else cold_start(weights, args.device, args.threads,
                                                                                 args.precisions))
        section("memory", lambda: memory(weights, args.memory, args.device, args.threads, args.tile_pixels,
                                         args.tile_size))
        section("latency", lambda: latency(enc, dec, fast, sizes, args))
        naive_at = {x["size"]: x["naive_fp32_s"] for x in result["latency"]}
        bs = args.batch_size_px
        section("throughput", lambda: throughput(
            {p: fast[p] for p in args.throughput_precisions if p in fast}, bs, args.batch, args.throughput_repeats,
            naive_at.get(f"{bs}x{bs}")) if args.batch else [])
        vhw = parse_size(args.variant_size) if args.variant_size else None
        section("variants", lambda: variants(fast, vhw, naive_at.get(size_name(vhw)), args.large_repeats)
                if vhw else [])
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    fast.clear()  # free the CPU models before the GPU section
    if "gpu" not in args.sections:
        result["gpu_note"] = "skipped (--sections)"
    elif torch.cuda.is_available():
        section("gpu", lambda: gpu_section(enc, dec, weights, args))
    else:
        result["gpu_note"] = "skipped: no CUDA device on this machine (it runs when torch.cuda.is_available())"
    result["wall_s"] = time.perf_counter() - started
    text = markdown(result) + (f"\n(benchmark wall time {result['wall_s']:.0f} s: "
                               + ", ".join(f"{k} {v:.0f} s" for k, v in spent.items()) + ")\n")
    write_report(args, result, text)


if __name__ == "__main__":
    main()
