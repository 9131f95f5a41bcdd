"""Shared by the benchmark scripts: weights (real, or random for smoke runs), test images, machine facts, tables."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ADAIN_BENCH_DATA") or ROOT.parent / "shared" / "data")  # content/ and style/


def add_weight_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("weights")
    g.add_argument("--model", help="bundle (default: the default bundle, vgg16-hed)")
    g.add_argument("--encoder", help="encoder file instead of the bundle's")
    g.add_argument("--decoder", help="decoder file instead of the bundle's")
    g.add_argument("--random-weights", choices=("vgg16", "vgg19"),
                   help="random weights of this architecture (smoke runs only: the bf16 error is then meaningless)")


def weight_files(args: argparse.Namespace) -> tuple[str, Path, Path]:
    """(arch, encoder file, decoder file): the bundle's or the given files, or random weights written to a temp dir."""
    if args.random_weights:
        from adain.bundles.layouts import save_safetensors
        from adain.net import Decoder, Encoder

        g = torch.Generator().manual_seed(0)
        folder = Path(tempfile.mkdtemp(prefix="adain-bench-"))
        paths = []
        for net, name in ((Encoder(args.random_weights), "encoder"), (Decoder(args.random_weights), "decoder")):
            for m in net.layers:
                if isinstance(m, torch.nn.Conv2d):
                    fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                    m.weight.data = torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5
                    m.bias.data.zero_()
            save_safetensors(net, folder / f"{name}.safetensors", args.random_weights)
            paths.append(folder / f"{name}.safetensors")
        return args.random_weights, paths[0], paths[1]
    from adain.bundles.cache import resolve

    found = resolve(args.model, args.encoder, args.decoder, quiet=True)
    return found.arch, Path(found.encoder), Path(found.decoder)


def parse_size(text: str) -> tuple[int, int]:
    """'512' -> (512, 512); '3840x2160' (W x H) -> (2160, 3840): (H, W)."""
    if "x" in text:
        w, h = (int(v) for v in text.lower().split("x"))
        return h, w
    return int(text), int(text)


def size_name(hw: tuple[int, int]) -> str:
    return f"{hw[1]}x{hw[0]}"


def photo(kind: str, hw: tuple[int, int], index: int = 0) -> torch.Tensor:
    """A real photo (content) or painting (style) from :data:`DATA` resized to (H, W), float (3, H, W);
    noise when the data is not there."""
    from PIL import Image

    from adain.images import to_tensor

    files = sorted((DATA / kind).glob("*.jpg")) if (DATA / kind).is_dir() else []
    if not files:
        return torch.rand(3, *hw, generator=torch.Generator().manual_seed(index))
    with Image.open(files[index % len(files)]) as img:
        return to_tensor(img.convert("RGB").resize((hw[1], hw[0]), Image.Resampling.BICUBIC))


#: Environment variables that make oneDNN / ATen use a smaller instruction set than the CPU has (an emulation
#: of an older CPU, e.g. ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2).
ISA_LIMITS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")


def cpu_facts() -> dict:
    """CPU model, the bf16-relevant ISA flags, any ISA limit set in the environment, threads."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [f for f in ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16") if f in flags]
    limits = [f"{k}={os.environ[k]}" for k in ISA_LIMITS if os.environ.get(k)]
    return {"cpu": model, "isa": isa, "isa_limit": " ".join(limits), "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "date": time.strftime("%Y-%m-%d %H:%M")}


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1, device: torch.device | str = "cpu",
          budget_s: float = float("inf")) -> tuple[list[float], object]:
    """Seconds of ``repeats`` calls after ``warmup`` untimed ones (fewer, but at least one, once ``budget_s``
    seconds were spent); also the last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    sync(device)
    times: list[float] = []
    spent = 0.0
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
        spent += times[-1]
        if spent > budget_s:
            break
    return times, out


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 3) -> str:
    """Seconds, ratios...: a few significant digits; '-' when missing."""
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:.0f}"


def write_report(args: argparse.Namespace, result: dict, text: str) -> None:
    """Print the markdown ``text``; save it and the raw ``result`` where --markdown / --json ask."""
    print("\n" + text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.markdown:
        args.markdown.write_text(text)
