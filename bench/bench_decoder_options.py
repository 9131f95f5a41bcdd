"""What a decoder file's options cost: one stylization of a real photo by the default bundle's layout (a relu3_1
decoder with skips from relu1_1 and relu2_1) without options, with stroke noise (``adain.strokes``) and with extra
convs at relu3_1's resolution (``Decoder.extra_convs``), at each size and precision, in one run on this machine.

    python bench/bench_decoder_options.py --sizes 512 1024 --precisions fp32 bf16 --json bench/options-epyc.json

Weights are random in the canonical layouts (timing depends on the shapes only, and the noise is made wherever the
features are flat or not); prints a table of median seconds and their ratios to the plain decoder.
"""

from __future__ import annotations

import torch
from bench_skips import randomised, render_times, timing_cases, timing_parser
from common import cpu_facts, fmt, median, size_name, table, write_report

from adain.net import Decoder, Encoder
from adain.stylizer import Stylizer

SKIPS = ("relu1_1", "relu2_1")


def stylizer(precision: str, **options: float) -> Stylizer:
    """A CPU stylizer of random weights whose decoder file would say ``options`` (strokes, extra_convs)."""
    decoder = randomised(Decoder("vgg16", "relu3_1", SKIPS, **options), 1)
    return Stylizer(randomised(Encoder("vgg16", "relu3_1"), 0), decoder, device="cpu", precision=precision,
                    tiling="never")


def main() -> None:
    p = timing_parser(__doc__)
    p.add_argument("--strokes", type=float, default=0.5, help="the amount in the decoder file (its cost does not "
                                                               "depend on it, only on whether it is 0)")
    p.add_argument("--extra-convs", type=int, default=3)
    args = p.parse_args()
    variants = {"plain": {}, f"strokes {args.strokes:g}": {"strokes": args.strokes},
                f"{args.extra_convs} extra convs": {"extra_convs": args.extra_convs}}
    rows, cells = [], []
    for hw, content, style, precision in timing_cases(args):
        seconds = {}
        for name, options in variants.items():
            times = render_times(stylizer(precision, **options), content, style, args.repeats)
            seconds[name] = median(times)
            cells.append({"size": size_name(hw), "precision": precision, "decoder": name, **options,
                          "seconds": times})
        plain = seconds["plain"]
        rows.append([size_name(hw), precision, fmt(plain),
                     *(f"{fmt(seconds[name])} ({fmt(seconds[name] / plain)}x)" for name in list(variants)[1:])])
    text = table(["size", "precision", "plain (s)", *(f"{name} (s, ratio)" for name in list(variants)[1:])], rows)
    write_report(args, {"machine": cpu_facts(), "cells": cells}, text)


if __name__ == "__main__":
    with torch.inference_mode():
        main()
