"""``adain evaluate``: how well a bundle keeps the photo and carries the painting, on held-out pairs.

    adain evaluate --content-dir photos/ --style-dir paintings/ [more/] --sheet sheet.jpg --json report.json
    adain evaluate ... --decoder new.safetensors --against report.json    # pair by pair against that report

The pairs come from the training script's held-out split of the given folders (same counts and
seed as ``adain train``), so no image was trained on. Per pair and as medians it reports the shape
score, the colour and texture ratios (encoder-free: 0 the painting's, 1 the photo's), the style
distance relative to a plain colour transfer, and the grid ratios at periods 4 and 8
(:mod:`adain.train.quality`); and the ceiling: the median shape score of the photos decoded back (alpha 0),
what no amount of style can exceed. The contact sheet shows content | style | output for every pair.
``--against`` an earlier report of the same pairs compares pair by pair: a median of 24 moves by a few
hundredths with the pairs, a paired difference much less.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from ..bundles.layouts import build_encoder
from ..errors import AdainError, InputError, exit_status
from ..images import read_image, resize_shorter, to_pil
from ..net import Encoder
from .data import list_images, split
from .quality import color_transfer, colour_ratio, grid_ratio, shape_score, style_distance, texture_ratio

METRIC_MODEL = "vgg16-hed"  # style distances are taken on its encoder, unnormalised, whatever bundle is evaluated
SHEET_TILE = 160


@dataclass
class PairResult:
    """The measures of one (content, style) pair."""

    content: str
    style: str
    shape: float
    colour: float  # sliced Wasserstein colour distance to the painting, output / photo
    texture: float  # oriented-filter texture distance to the painting, output / photo
    style_ratio: float  # style distance of the output / that of a plain colour transfer
    grid4: float
    grid8: float

MEASURES = ("shape", "colour", "texture", "style_ratio", "grid4", "grid8")
HIGHER_IS_BETTER = ("shape",)  # the others are distances or ratios down to 0 (the grids down to 1)


def held_out(content_dir: Path, style_dirs: list[Path], holdout_content: int = 50, holdout_style: int = 20,
             seed: int = 0) -> tuple[list[Path], list[Path]]:
    """The held-out photos and paintings, as ``adain train`` splits these folders (each style folder on its own).

    Paintings are interleaved across the style folders, so the first pairs draw on all of them.
    """
    contents = split(list_images(content_dir)[0], holdout_content, seed)[1]
    per_folder = [split(list_images(d)[0], holdout_style, seed)[1] for d in style_dirs]
    styles = [f for group in zip(*per_folder, strict=False) for f in group]
    styles += [f for group in per_folder for f in group[min(map(len, per_folder)):]]
    if not contents or not styles:
        raise InputError("no held-out images in these folders")
    return contents, styles


def metric_encoder() -> Encoder:
    """HED's VGG16 as published (unnormalised): the encoder of :data:`METRIC_MODEL`."""
    from ..bundles.cache import resolve_encoder

    return resolve_encoder(model=METRIC_MODEL, quiet=True)[0]


def evaluate_pair(stylizer, metric: Encoder, names: tuple[str, str], content: Tensor, style: Tensor,
                  alpha: float) -> tuple[PairResult, Tensor]:
    """Measures of one pair (images already at their evaluation size, ``names`` for the report) and the output."""
    out = stylizer.stylize(content, [style], alpha=alpha)
    baseline = style_distance(metric, color_transfer(content, style), style)
    return PairResult(*names, shape_score(content, out), colour_ratio(content, out, style),
                      texture_ratio(content, out, style), style_distance(metric, out, style) / max(baseline, 1e-12),
                      grid_ratio(out, 4), grid_ratio(out, 8)), out


def ceiling(stylizer, contents: list[Tensor]) -> float:
    """Median shape score of the photos decoded from their own features (alpha 0): what the decoder can give
    back of a photo, and so the most any stylization keeps."""
    return statistics.median(shape_score(c, stylizer.stylize(c, [c], alpha=0.0)) for c in contents)


def summary(results: list[PairResult]) -> dict[str, float]:
    """Medians over the pairs."""
    return {key: statistics.median(getattr(r, key) for r in results) for key in MEASURES}


def paired_comparison(results: list[dict], reference: dict) -> dict[str, dict[str, float]]:
    """Per measure, over the pairs of ``results`` and ``reference`` (an earlier report): the median of the
    differences (this - reference) and in how many pairs this one is better. Refuses reports of other pairs."""
    theirs = reference.get("results", [])
    if [(r["content"], r["style"]) for r in results] != [(r["content"], r["style"]) for r in theirs]:
        raise InputError("--against: that report holds other pairs (compare reports of the same folders, "
                         "--pairs, --seed and holdout counts)")
    comparison = {}
    for key in MEASURES:
        diffs = [mine[key] - their[key] for mine, their in zip(results, theirs, strict=True)]
        sign = 1 if key in HIGHER_IS_BETTER else -1
        comparison[key] = {"median_difference": statistics.median(diffs),
                           "better_in": sum(sign * d > 0 for d in diffs), "pairs": len(diffs)}
    return comparison


def read_report(path: Path) -> dict:
    """An earlier ``--json`` report, or an :class:`InputError` saying what is wrong with the file."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"--against {path}: not a readable report ({exc})") from exc
    if not isinstance(report, dict) or not isinstance(report.get("results"), list):
        raise InputError(f"--against {path}: not a report of adain evaluate --json")
    return report


def contact_sheet(rows: list[tuple[Tensor, Tensor, Tensor]], path: Path) -> None:
    """Save content | style | output rows, each image fitted into a square tile."""
    sheet = Image.new("RGB", (3 * SHEET_TILE, len(rows) * SHEET_TILE), "white")
    for r, images in enumerate(rows):
        for c, img in enumerate(images):
            tile = to_pil(img)
            tile.thumbnail((SHEET_TILE, SHEET_TILE))
            sheet.paste(tile, (c * SHEET_TILE + (SHEET_TILE - tile.width) // 2,
                               r * SHEET_TILE + (SHEET_TILE - tile.height) // 2))
    sheet.save(path, quality=90)


def _line(values: dict) -> str:
    names = {"style_ratio": "style/colour-transfer"}
    return "  ".join(f"{names.get(k, k)} {values[k]:.3f}" for k in MEASURES)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``adain evaluate``."""
    p = argparse.ArgumentParser(prog="adain evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--content-dir", type=Path, required=True, help="photo folder (its held-out split is used)")
    p.add_argument("--style-dir", type=Path, nargs="+", required=True, help="painting folder(s)")
    p.add_argument("--model", help="bundle (default vgg16-hed)")
    p.add_argument("--encoder", type=Path, help="encoder file instead of the bundle's")
    p.add_argument("--decoder", type=Path, help="decoder file instead of the bundle's")
    p.add_argument("--pairs", type=int, default=24, help="how many (content, style) pairs")
    p.add_argument("--size", type=int, default=512, help="shorter side of contents and styles")
    p.add_argument("--alpha", type=float, default=1.0, help="0 measures reconstruction: the photo decoded back")
    p.add_argument("--holdout-content", type=int, default=50)
    p.add_argument("--holdout-style", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--metric-encoder", type=Path, help="vgg16 encoder file for the style distances "
                   f"(default: {METRIC_MODEL}'s, unnormalised)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--grain", type=float, help="grain to stylize with (default: the decoder's)")
    p.add_argument("--sheet", type=Path, help="write a contact sheet (content | style | output) here")
    p.add_argument("--json", type=Path, help="write the per-pair results and medians here")
    p.add_argument("--against", type=Path, metavar="REPORT",
                   help="an earlier --json report of the same pairs: print, per measure, the median paired "
                        "difference and in how many pairs this one is better (also in --json)")
    return p


def run(args: argparse.Namespace) -> dict:
    """Evaluate; print per-pair lines and medians; returns the report."""
    from ..bundles.cache import resolve
    from ..stylizer import Stylizer

    if args.pairs < 1:
        raise InputError(f"--pairs must be at least 1, got {args.pairs}")
    reference = read_report(args.against) if args.against else None
    contents, styles = held_out(args.content_dir, args.style_dir, args.holdout_content, args.holdout_style, args.seed)
    w = resolve(model=args.model, encoder=args.encoder, decoder=args.decoder)
    stylizer = Stylizer.from_files(w.encoder, w.decoder, w.arch, device=args.device, precision=args.precision,
                                   grain=args.grain)
    metric = (build_encoder(args.metric_encoder, "vgg16") if args.metric_encoder else metric_encoder())
    metric = metric.to(stylizer.device)
    report, rows = measure(stylizer, metric, contents, styles, args.pairs, args.size, args.alpha)
    report = {"model": w.model, "encoder": str(w.encoder), "decoder": str(w.decoder), "size": args.size,
              "alpha": args.alpha, "grain": stylizer.grain, **report}
    publish(report, rows, reference, args.against, args.sheet, args.json)
    return report


def measure(stylizer, metric: Encoder, contents: list[Path], styles: list[Path], pairs: int, size: int,
            alpha: float) -> tuple[dict, list[tuple[Tensor, Tensor, Tensor]]]:
    """Measure ``stylizer`` (anything with :meth:`Stylizer.stylize`'s signature) on the first ``pairs`` pairs at
    ``size``: the report's pairs, medians, ceiling and per-pair results, and the contact sheet's rows."""
    results, rows, photos = [], [], {}
    for i in tqdm(range(pairs), desc="pairs", unit="pair", file=sys.stderr):
        c_path, s_path = contents[i % len(contents)], styles[i % len(styles)]
        c = photos.setdefault(c_path, resize_shorter(read_image(c_path), size))
        s = resize_shorter(read_image(s_path), size)
        result, out = evaluate_pair(stylizer, metric, (c_path.name, s_path.name), c, s, alpha)
        results.append(result)
        rows.append((c, s, out))
    report = {"pairs": len(results), "median": summary(results), "ceiling": ceiling(stylizer, list(photos.values())),
              "results": [asdict(r) for r in results]}
    return report, rows


def publish(report: dict, rows: list[tuple[Tensor, Tensor, Tensor]], reference: dict | None,
            against: Path | None, sheet: Path | None, json_path: Path | None) -> None:
    """Print the per-pair lines, medians, ceiling and the comparison with ``reference`` (read from ``against``;
    added to the report), and write the contact sheet and the JSON report where asked."""
    results = report["results"]
    for r in results:
        print(f"{r['content']} x {r['style']}: {_line(r)}")
    print(f"median over {len(results)} pairs: {_line(report['median'])}")
    photos = len({r["content"] for r in results})
    print(f"ceiling (alpha-0 shape, median over {photos} photos): {report['ceiling']:.3f}")
    if reference is not None:
        report["against"] = {"report": str(against), "measures": paired_comparison(results, reference)}
        print(f"against {against} (ceiling {reference.get('ceiling', float('nan')):.3f}), pair by pair:")
        for key, c in report["against"]["measures"].items():
            print(f"  {key}: median difference {c['median_difference']:+.3f}, better in {c['better_in']} "
                  f"of {c['pairs']} pairs")
    if sheet:
        contact_sheet(rows, sheet)
    if json_path:
        json_path.write_text(json.dumps(report, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``adain evaluate``."""
    args = build_parser().parse_args(argv)
    try:
        with torch.inference_mode():
            run(args)
    except (AdainError, KeyboardInterrupt) as exc:
        return exit_status("adain evaluate", exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
