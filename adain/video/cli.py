"""``adain video``: stylize a clip with the options of ``adain stylize`` (shared from :mod:`adain.cli`), a progress bar,
and no half-written output."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from ..cli import _Parser, add_image_args, add_model_args, add_tiling_args, blend_weights, build_stylizer
from ..errors import AdainError, exit_status
from ..options import check_alpha, check_grain, check_style_scale, check_tiling, normalised_weights, open_file
from .writer import DEFAULT_QUALITY


def _stability(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a level 0..3, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``adain video``: the stylize options that apply to a clip, and the video's own."""
    p = _Parser(prog="adain video", description="Stylize a video clip frame by frame, without flicker "
                "(docs/video.md). Writes H.264 in .mp4, .mov or .mkv, keeping the frame times and the audio.")
    p.add_argument("--content", type=Path, required=True, help="the clip (any format FFmpeg reads)")
    p.add_argument("--alpha", type=float, default=1.0, help="stylization strength in [0, 1]")
    add_image_args(p)
    p.set_defaults(quality=DEFAULT_QUALITY)
    g = p.add_argument_group("video")
    g.add_argument("--stability", type=_stability, default=None,
                   help="0: per-frame AdaIN (flickers), 1: the previous stylized frame blended in along the optical "
                        "flow (weight 0.5), 2: blended more (0.8), 3: and the content statistics smoothed over time "
                        "(default 2; docs/video.md)")
    g.add_argument("--no-audio", action="store_true", help="leave the audio track out")
    g.add_argument("--max-seconds", type=float, default=3600.0, help="refuse longer clips (default %(default)s)")
    add_model_args(p)
    add_tiling_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    """adain video: arguments and files are checked before torch and the model are loaded."""
    if not args.style:
        raise AdainError("give --style FILE (repeatable)")
    if not args.output:
        raise AdainError("give -o OUTPUT (.mp4, .mov or .mkv)")
    normalised_weights(args.weights, len(args.style))
    check_alpha(args.alpha)
    check_style_scale(args.style_scale)
    if args.grain is not None:
        check_grain(args.grain)
    check_tiling(args.tiling, args.tile_pixels, args.tile_size)
    for path in (args.content, *args.style, *args.mask):
        open_file(path).close()

    from tqdm import tqdm

    from ..images import read_resized, style_read_size
    from ..masks import read_masks
    from . import ClipInfo, ClipReader, VideoLimits, stability_level, stylize_video
    from .pipeline import first_frame
    from .temporal import DEFAULT_LEVEL
    from .writer import container_format

    container_format(args.output)
    stability = stability_level(DEFAULT_LEVEL if args.stability is None else args.stability)
    style_size = style_read_size(args.style_size, args.style_scale)
    styles = [read_resized(p, style_size).image for p in args.style]
    mask = read_masks(args.mask, len(args.style)) if args.mask else None
    limits = VideoLimits(max_seconds=args.max_seconds)
    with ClipReader(args.content, limits):  # not a video, or over the limits: said before the model loads
        pass
    stylizer = build_stylizer(args)
    weights = args.weights
    if args.balance:  # balanced on the first frame: the weights then hold for the whole clip
        weights = blend_weights(args, stylizer, first_frame(args.content, args.content_size), styles, None)
    with contextlib.ExitStack() as stack:
        bar = None  # opened once the clip is open, so that an early error stays one line

        def start(info: ClipInfo) -> None:
            nonlocal bar
            bar = stack.enter_context(tqdm(total=info.frames, unit="frame", file=sys.stderr, dynamic_ncols=True,
                                           desc=f"{info.width}x{info.height} {float(info.rate):.3g} fps"))

        result = stylize_video(stylizer, args.content, args.output, styles, weights=weights, alpha=args.alpha,
                               preserve_color=args.preserve_color, mask=mask, content_size=args.content_size,
                               crop=args.crop, style_size=args.style_size, style_scale=args.style_scale,
                               stability=stability, audio=not args.no_audio, quality=args.quality, limits=limits,
                               on_start=start, on_frame=lambda n: bar.update())
    print(f"adain video: {result.frames} frames of {result.size[1]}x{result.size[0]}"
          f"{' with audio' if result.audio else ''} -> {args.output}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``adain video``."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (AdainError, KeyboardInterrupt) as exc:
        return exit_status("adain video", exc)
