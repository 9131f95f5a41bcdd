"""Figures for docs/balance.md: how evenly two styles mixed at 0.5/0.5 improve, with and without balance.

    python bench/balance_figures.py --encoder ENC [--decoder DEC] [--size 128] [--iterations 100] [--json out.json]

For each (content, style A, style B) it reports the ratio r_A / r_B of the two styles' relative improvements
(style loss at the content image / style loss at the result; 1 = equal influence):

* optimisation mode (needs only the encoder): runs from the content image, raw and balanced;
* AdaIN mode (needs a trained decoder; skipped when --decoder is not a file): the 0.5/0.5 blend and the
  balanced blend weights.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from adain import Stylizer
from adain.bundles.layouts import build_decoder, build_encoder, read_arch
from adain.images import prepare, read_image
from adain.optimize.balance import AdainMixer, balance_factors, balanced_weights, optimize_improvements
from adain.optimize.gatys import Objective, OptimizeOptions

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
# content, style A, style B (file numbers in shared/data)
TRIPLES = [("00010", "00300", "00010"), ("00100", "00050", "00450"), ("00200", "00200", "00400"),
           ("00300", "00120", "00250"), ("00400", "00030", "00480")]


def _ratio(improvements: torch.Tensor) -> float:
    return round((improvements[0] / improvements[1]).item(), 4)


def optimisation_row(encoder, content, styles, options: OptimizeOptions) -> dict:
    """Ratio r_A / r_B of runs from the content at 0.5/0.5: raw, and with calibrated style-loss factors."""
    t0 = time.perf_counter()
    objective = Objective(encoder, content, styles, torch.tensor([0.5, 0.5]), None, options)
    raw = optimize_improvements(objective, content[None], torch.ones(2))
    rounds = set()
    factors = balance_factors(objective, content[None], callback=lambda e: rounds.add(e["round"]))
    balanced = optimize_improvements(objective, content[None], factors)
    return {"raw": _ratio(raw), "balanced": _ratio(balanced), "factors": [round(f, 4) for f in factors.tolist()],
            "calibration_runs": len(rounds), "seconds": round(time.perf_counter() - t0, 1)}


def adain_row(stylizer: Stylizer, content, styles, options: OptimizeOptions) -> dict:
    """Ratio r_A / r_B of the AdaIN result: the 0.5/0.5 blend and the balanced blend (losses as in ``options``)."""
    mixer = AdainMixer(stylizer, content, styles, options=options)
    weights = balanced_weights(stylizer, content, styles, options=options)
    return {"raw": _ratio(mixer.improvements(torch.tensor([0.5, 0.5]))),
            "balanced": _ratio(mixer.improvements(weights)), "weights": [round(w, 4) for w in weights.tolist()]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", type=Path, required=True)
    p.add_argument("--decoder", type=Path, default=ROOT / "weights" / "vgg16-hed-decoder.safetensors")
    p.add_argument("--arch", choices=("vgg16", "vgg19"))
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--size", type=int, default=128, help="shorter side of content and styles")
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--style-loss", choices=("gram", "stats"), default="gram")
    p.add_argument("--pairs", type=int, default=len(TRIPLES))
    p.add_argument("--modes", nargs="+", choices=("optimize", "adain"), default=["optimize", "adain"])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    arch = args.arch or read_arch(args.encoder) or "vgg19"
    encoder = build_encoder(args.encoder, arch)
    stylizer = None
    if "adain" in args.modes and args.decoder.is_file():
        stylizer = Stylizer(encoder, build_decoder(args.decoder, arch), device="cpu")
    options = OptimizeOptions(iterations=args.iterations, init="content", style_loss=args.style_loss)
    rows = []
    for c, a, b in TRIPLES[: args.pairs]:
        content = prepare(read_image(args.data / "content" / f"c_{c}.jpg"), args.size, False)
        styles = [prepare(read_image(args.data / "style" / f"s_{s}.jpg"), args.size, False) for s in (a, b)]
        row = {"content": f"c_{c}", "styles": [f"s_{a}", f"s_{b}"]}
        if "optimize" in args.modes:
            row["optimize"] = optimisation_row(encoder, content, styles, options)
        if stylizer is not None:
            row["adain"] = adain_row(stylizer, content, styles, options)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if "adain" in args.modes and stylizer is None:
        print(f"AdaIN mode skipped: no decoder at {args.decoder}")
    if args.json:
        settings = {"encoder": str(args.encoder), "decoder": str(args.decoder) if stylizer else None,
                    "size": args.size, "iterations": args.iterations, "options": repr(options)}
        args.json.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
