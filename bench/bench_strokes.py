"""What stroke noise (``adain.strokes``) costs: one stylization of a real photo by the default bundle's layout (a
relu3_1 decoder with skips from relu1_1 and relu2_1) with and without strokes in its file, at each size and
precision, in one run on this machine.

    python bench/bench_strokes.py --sizes 512 1024 --precisions fp32 bf16 --json bench/strokes-epyc.json

Weights are random in the canonical layouts (timing depends on the shapes only, and the noise is made wherever the
features are flat or not); prints a table of median seconds and their ratio.
"""

from __future__ import annotations

import torch
from bench_skips import randomised, render_times, timing_cases, timing_parser
from common import cpu_facts, fmt, median, size_name, table, write_report

from adain.net import Decoder, Encoder
from adain.stylizer import Stylizer

SKIPS = ("relu1_1", "relu2_1")


def stylizer(strokes: float, precision: str) -> Stylizer:
    """A CPU stylizer of random weights whose decoder file would say ``strokes``."""
    decoder = randomised(Decoder("vgg16", "relu3_1", SKIPS, strokes=strokes), 1)
    return Stylizer(randomised(Encoder("vgg16", "relu3_1"), 0), decoder, device="cpu", precision=precision,
                    tiling="never")


def main() -> None:
    p = timing_parser(__doc__)
    p.add_argument("--strokes", type=float, default=0.5, help="the amount in the decoder file (its cost does not "
                                                               "depend on it, only on whether it is 0)")
    args = p.parse_args()
    rows, cells = [], []
    for hw, content, style, precision in timing_cases(args):
        seconds = {}
        for strokes in (0.0, args.strokes):
            times = render_times(stylizer(strokes, precision), content, style, args.repeats)
            seconds[strokes] = median(times)
            cells.append({"size": size_name(hw), "precision": precision, "strokes": strokes, "seconds": times})
        plain, stroked = seconds[0.0], seconds[args.strokes]
        rows.append([size_name(hw), precision, fmt(plain), fmt(stroked), fmt(stroked / plain)])
    text = table(["size", "precision", "no strokes (s)", "strokes (s)", "strokes / none"], rows)
    write_report(args, {"machine": cpu_facts(), "cells": cells}, text)


if __name__ == "__main__":
    with torch.inference_mode():
        main()
