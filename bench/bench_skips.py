"""What a decoder with skips (issue 29) costs: one stylization of a real photo by a relu3_1 decoder with and
without skips from relu1_1 and relu2_1, each with the fused upsampling convs and without them (the plain
baseline), at each size and precision, in one run on this machine.

    python bench/bench_skips.py --sizes 512 1024 --precisions fp32 bf16 --json bench/skips-epyc.json

Weights are random in the canonical layouts (timing depends on the shapes only); the encoder is HED's VGG16
layout. Prints a table of median seconds and the ratios: skips against no skips (fused), and fused against
unfused for each decoder.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import torch
from common import cpu_facts, fmt, median, parse_size, photo, size_name, table, timed, write_report

from adain import ops
from adain.net import Decoder, Encoder
from adain.stylizer import Stylizer, Target

DECODERS = {"relu3_1": (), "relu3_1 + skips": ("relu1_1", "relu2_1")}


def randomised(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """``net`` with He-scaled random conv weights (the skips' scales stay 1)."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            m.weight.data = torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5
            m.bias.data.zero_()
    return net


def stylizer(skips: tuple[str, ...], precision: str, fused: bool) -> Stylizer:
    """A CPU stylizer of random weights; ``fused=False`` decodes with the plain modules."""
    st = Stylizer(randomised(Encoder("vgg16", "relu3_1"), 0), randomised(Decoder("vgg16", "relu3_1", skips), 1),
                  device="cpu", precision=precision, tiling="never")
    if not fused:
        st.decoder_fused = st.decoder
    return st


def timing_parser(doc: str) -> argparse.ArgumentParser:
    """The options of a decoder-timing run (sizes, precisions, repeats, reports), described by ``doc``'s first
    paragraph."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["512", "1024"], help="N (square) or WxH")
    p.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    return p


def timing_cases(args: argparse.Namespace) -> Iterator[tuple[tuple[int, int], torch.Tensor, torch.Tensor, str]]:
    """(size, content photo, style photo, precision) for each of ``args``' sizes and precisions."""
    for text in args.sizes:
        hw = parse_size(text)
        content, style = photo("content", hw), photo("style", (256, 256))
        for precision in args.precisions:
            yield hw, content, style, precision


def render_times(st: Stylizer, content: torch.Tensor, style: torch.Tensor, repeats: int) -> list[float]:
    """Seconds of ``repeats`` renders of ``content`` with ``style`` at full strength (its statistics taken once)."""
    stats = st.style_stats(style)
    times, _ = timed(lambda: st.render(content[None], [_target(stats)]), repeats)
    return times


def main() -> None:
    args = timing_parser(__doc__).parse_args()
    rows, cells = [], []
    for hw, content, style, precision in timing_cases(args):
        seconds = {}
        for name, skips in DECODERS.items():
            for fused in (True, False):
                times = render_times(stylizer(skips, precision, fused), content, style, args.repeats)
                seconds[name, fused] = median(times)
                cells.append({"size": size_name(hw), "precision": precision, "decoder": name, "fused": fused,
                              "seconds": times})
        plain, skip = seconds["relu3_1", True], seconds["relu3_1 + skips", True]
        rows.append([size_name(hw), precision, fmt(plain), fmt(skip), fmt(skip / plain),
                     fmt(seconds["relu3_1", False] / plain), fmt(seconds["relu3_1 + skips", False] / skip)])
    text = table(["size", "precision", "no skips (s)", "skips (s)", "skips / no skips",
                  "unfused / fused, no skips", "unfused / fused, skips"], rows)
    write_report(args, {"machine": cpu_facts(), "cells": cells}, text)


def _target(stats: ops.Stats) -> Target:
    """One style at full strength."""
    return Target(ops.Stats(stats.mean[None], stats.std[None]), torch.ones(1))


if __name__ == "__main__":
    with torch.inference_mode():
        main()
