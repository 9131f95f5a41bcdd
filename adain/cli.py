"""The ``adain`` command: stylize, weights, train, serve, key.

Errors a user can fix are printed as one line on stderr with exit status 2;
there are no tracebacks for bad input.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .arguments import count_arg
from .bundles.commands import add_weights_parser
from .errors import AdainError, exit_status
from .options import (
    IMAGE_SUFFIXES,
    MAX_GRAIN,
    STYLE_SCALES,
    TILE_PIXELS,
    TILE_SIZE,
    check_alpha,
    check_grain,
    check_style_scale,
    check_tiling,
    normalised_weights,
    open_file,
    output_format,
)

#: Options whose value is a comma-separated list of numbers, which may start with a minus sign.
NUMBER_LISTS = ("--weights", "--style-layer-weights")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr with exit status 2, like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _weights_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"weights must be comma-separated numbers, got {text!r}") from None


def add_model_args(p: argparse.ArgumentParser) -> None:
    """--model / --encoder / --decoder / --arch / --device / --precision."""
    g = p.add_argument_group("model")
    g.add_argument("--model", help="bundle name from the weights manifest (default: vgg16-hed)")
    g.add_argument("--encoder", type=Path, help="encoder weight file (.pth or .safetensors)")
    g.add_argument("--decoder", type=Path, help="decoder weight file (.pth or .safetensors)")
    g.add_argument("--arch", choices=("vgg19", "vgg16"), help="architecture of --encoder/--decoder")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="auto: bf16 on CPUs with AVX-512 BF16 or AMX and on CUDA GPUs, else fp32 (default auto)")
    g.add_argument("-v", "--verbose", action="store_true", help="say on stderr which device and precision run")


def _stylize_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stylize", help="stylize images", description="Stylize content images with one or more styles.")
    p.add_argument("--content", type=Path, action="append", default=[], help="content image (repeatable)")
    p.add_argument("--content-dir", type=Path, help="every image in this folder as content")
    p.add_argument("--style-dir", type=Path, help="every image in this folder as a style, one at a time")
    p.add_argument("--alpha", type=float, default=1.0, help="stylization strength in [0, 1]")
    p.add_argument("--output-dir", type=Path, help="output folder (with --content-dir / --style-dir)")
    p.add_argument("--ext", default="png", choices=("png", "jpg", "webp"), help="output format in --output-dir")
    add_image_args(p)
    add_model_args(p)
    add_tiling_args(p)
    p.set_defaults(func=cmd_stylize)


def add_tiling_args(p: argparse.ArgumentParser) -> None:
    """--tiling / --tile-pixels / --tile-size: large images run in overlapping tiles."""
    g = p.add_argument_group("tiling (large images in overlapping tiles, AdaIN statistics over the whole image)")
    g.add_argument("--tiling", choices=("auto", "always", "never"), default="auto",
                   help="auto: tile images of more than --tile-pixels pixels (default %(default)s)")
    g.add_argument("--tile-pixels", type=count_arg(1), default=TILE_PIXELS,
                   help="pixel count above which --tiling auto tiles (default %(default)s)")
    g.add_argument("--tile-size", type=count_arg(1), default=TILE_SIZE,
                   help="tile side in pixels, a multiple of 8 (default %(default)s)")


def add_image_args(p: argparse.ArgumentParser) -> None:
    """The styles, weights, colour, mask, sizes and output of stylize and optimize."""
    p.add_argument("--style", type=Path, action="append", default=[], help="style image (repeatable: a blend)")
    p.add_argument("--weights", type=_weights_list, help="blend weights, e.g. 0.7,0.3 (normalised to sum 1)")
    p.add_argument("--balance", action="store_true",
                   help="calibrate the blend so that each style gets the influence its weight promises")
    p.add_argument("--preserve-color", choices=("none", "coral", "luminance"), default="none")
    p.add_argument("--mask", type=Path, action="append", default=[],
                   help="label image (values 0..N-1) or one grey mask per style: the content's size, the output's, "
                        "or the content's shape at any size")
    p.add_argument("--content-size", type=count_arg(0), default=512, help="shorter side of the content (0: keep)")
    p.add_argument("--style-size", type=count_arg(0), default=512, help="shorter side of the styles (0: keep)")
    p.add_argument("--style-scale", type=float, default=1.0,
                   help=f"texture scale: resize the styles by this factor after --style-size, {STYLE_SCALES[0]:g} "
                        f"to {STYLE_SCALES[1]:g}; above 1 their strokes come out larger, below 1 finer (default 1)")
    p.add_argument("--grain", type=float,
                   help=f"noise added to the content before it is encoded (0 to {MAX_GRAIN:g}, times --alpha), "
                        "from which the decoder paints the style's texture where the photo is flat; default: the "
                        "decoder file's (0 unless it was trained with grain; docs/training.md, \"Grain\")")
    p.add_argument("--crop", action="store_true", help="center-crop to a square of the given size")
    p.add_argument("-o", "--output", type=Path, help="output file (.png, .jpg, .webp)")
    p.add_argument("--quality", type=count_arg(1, 100), default=95, help="JPEG/WebP quality, 1..100")


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise AdainError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise AdainError(f"{folder}: no images found")
    return files


def build_stylizer(args: argparse.Namespace):
    """A Stylizer for --model or --encoder/--decoder."""
    from .bundles.cache import resolve
    from .stylizer import Stylizer

    found = resolve(args.model, args.encoder, args.decoder, args.arch)
    tiling = {"tiling": args.tiling, "tile_pixels": args.tile_pixels, "tile_size": args.tile_size} \
        if hasattr(args, "tiling") else {}
    stylizer = Stylizer.from_files(found.encoder, found.decoder, arch=args.arch or found.arch, device=args.device,
                                   precision=args.precision, grain=getattr(args, "grain", None), **tiling)
    if args.verbose:
        chosen = " (auto)" if args.precision == "auto" else ""
        print(f"adain: {stylizer.device}, precision {stylizer.precision}{chosen}", file=sys.stderr)
    return stylizer


def cmd_stylize(args: argparse.Namespace) -> int:
    """adain stylize: every argument and input file is checked before torch is imported (seconds)."""
    contents = list(args.content) + (_images_in(args.content_dir) if args.content_dir else [])
    if not contents:
        raise AdainError("give --content FILE or --content-dir DIR")
    if args.style and args.style_dir:
        raise AdainError("use either --style (a blend) or --style-dir (each style on its own), not both")
    style_sets = [[s] for s in _images_in(args.style_dir)] if args.style_dir else [list(args.style)]
    if not style_sets[0]:
        raise AdainError("give --style FILE (repeatable) or --style-dir DIR")
    batch = len(contents) * len(style_sets) > 1
    if batch and not args.output_dir:
        raise AdainError("several outputs: give --output-dir")
    if not batch and not (args.output or args.output_dir):
        raise AdainError("give -o OUTPUT")
    if args.output:
        output_format(args.output)  # fail before any work on a bad extension
    n_styles = len(style_sets[0])
    normalised_weights(args.weights, n_styles)
    check_alpha(args.alpha)
    check_style_scale(args.style_scale)
    if args.grain is not None:
        check_grain(args.grain)
    check_tiling(args.tiling, args.tile_pixels, args.tile_size)
    for path in (*args.style, *args.mask, *contents):
        open_file(path).close()

    from tqdm import tqdm

    from .images import read_resized, save_image, style_read_size
    from .masks import fitted_masks, mask_weights, read_mask_images

    # images are read straight at the size asked for (never in float at full size), as `adain serve` reads them
    style_size = style_read_size(args.style_size, args.style_scale)
    styles_cache = {p: read_resized(p, style_size).image for p in args.style}  # checked before loading the model
    mask_images, labels = read_mask_images(args.mask) if args.mask else ([], False)
    if mask_images:
        mask_weights(mask_images, n_styles, labels)  # checked before loading the model too
    stylizer = build_stylizer(args)
    jobs = [(c, s) for c in contents for s in style_sets]
    told_tiling = False
    for content_path, style_paths in tqdm(jobs, disable=len(jobs) < 2, unit="img", file=sys.stderr):
        read_content = read_resized(content_path, args.content_size)
        content = read_content.image
        masks = fitted_masks(mask_images, n_styles, read_content.source_hw, args.content_size, args.crop,
                             labels) if mask_images else None
        for p in style_paths:
            if p not in styles_cache:
                styles_cache[p] = read_resized(p, style_size).image
        styles = [styles_cache[p] for p in style_paths]
        out = stylizer.stylize(content, styles, weights=blend_weights(args, stylizer, content, styles, masks),
                               alpha=args.alpha,
                               preserve_color=args.preserve_color, mask=masks, content_size=args.content_size,
                               style_size=args.style_size, crop=args.crop, style_scale=args.style_scale)
        if batch or args.output is None:
            name = f"{content_path.stem}_stylized_{'_'.join(p.stem for p in style_paths)}.{args.ext}"
            dest = args.output_dir / name
        else:
            dest = args.output
        save_image(out, dest, args.quality)
        if stylizer.tiled_passes and not told_tiling:  # once: say that (and why) images run in tiles
            told_tiling = True
            why = (f"more than --tile-pixels {stylizer.tile_pixels} pixels; --tiling never runs it whole"
                   if args.tiling == "auto" else "--tiling always")
            tqdm.write(f"adain: {out.shape[-1]}x{out.shape[-2]} ran in tiles of {stylizer.tile_size} px ({why})",
                       file=sys.stderr)
    return 0


def blend_weights(args: argparse.Namespace, stylizer, content, styles, masks) -> list[float] | None:
    """--weights, or with --balance the blend weights that balance the styles for this content."""
    if not args.balance:
        return args.weights
    from .optimize.balance import balanced_weights

    return balanced_weights(stylizer, content, styles, args.weights, mask=masks, preserve_color=args.preserve_color,
                            content_size=args.content_size, style_size=args.style_size, crop=args.crop,
                            style_scale=args.style_scale).tolist()


OPTIMIZE_HELP = "stylize by optimising the pixels (Gatys et al.): slower, higher fidelity"


def _optimize_parser(sub: argparse._SubParsersAction) -> None:
    from .optimize.gatys import INITS, OPTIMIZERS, STYLE_LOSSES, OptimizeOptions  # imports torch

    d = OptimizeOptions()
    p = sub.add_parser("optimize", help=OPTIMIZE_HELP,
                       description="Stylize one content image by optimising its pixels against content, style and "
                                   "total-variation losses on the encoder's features (Gatys et al., 2016).")
    p.add_argument("--content", type=Path, action="append", default=[], help="content image")
    add_image_args(p)
    g = p.add_argument_group("optimisation")
    g.add_argument("--iterations", type=int, default=d.iterations, help="loss evaluations (default %(default)s)")
    g.add_argument("--optimizer", choices=list(OPTIMIZERS), default=d.optimizer, help="default %(default)s")
    g.add_argument("--lr", type=float, help="learning rate (default: 1 for lbfgs, 0.02 for adam)")
    g.add_argument("--init", choices=INITS, default=d.init,
                   help="start from the AdaIN result (needs a decoder), the content or noise (default %(default)s)")
    g.add_argument("--seed", type=int, default=d.seed, help="seed of the noise start (default %(default)s)")
    g.add_argument("--content-weight", type=float, default=d.content_weight, help="default %(default)s")
    g.add_argument("--style-weight", type=float, default=d.style_weight, help="default %(default)s")
    g.add_argument("--tv-weight", type=float, default=d.tv_weight, help="total variation (default %(default)s)")
    g.add_argument("--content-layers", type=lambda t: tuple(t.split(",")), default=d.content_layers,
                   help="comma-separated, among relu1_1..relu4_1 (default relu4_1)")
    g.add_argument("--style-layer-weights", type=lambda t: tuple(_weights_list(t)), default=d.style_layer_weights,
                   help="weights of relu1_1,relu2_1,relu3_1,relu4_1 (default 1,1,1,1; 0 drops a layer)")
    g.add_argument("--style-loss", choices=STYLE_LOSSES, default=d.style_loss,
                   help="compare Gram matrices or channel means and stds (default %(default)s)")
    g.add_argument("--log", type=Path, help="write every iteration's losses to this file as JSON lines")
    add_model_args(p)
    p.set_defaults(func=cmd_optimize)


def _optimize_model(args: argparse.Namespace, init: str):
    """A Stylizer when starting from the AdaIN result, else just the encoder on its device."""
    from .errors import WeightsError

    if init == "adain":
        try:
            return build_stylizer(args)
        except WeightsError as exc:
            raise WeightsError(f"{exc} (--init adain needs a decoder; --init content or noise needs only the "
                               f"encoder)") from None
    from .bundles.cache import resolve_encoder
    from .devices import resolve_device

    return resolve_encoder(args.model, args.encoder, args.arch)[0].to(resolve_device(args.device))


def cmd_optimize(args: argparse.Namespace) -> int:
    """adain optimize."""
    import contextlib
    import dataclasses
    import json

    from tqdm import tqdm

    from .images import read_image, save_image
    from .masks import read_masks
    from .optimize.gatys import OptimizeOptions
    from .optimize.progress import StepTimer, steps_left
    from .optimize.transfer import optimize_image

    if len(args.content) != 1 or not args.style:
        raise AdainError("give one --content FILE and --style FILE (repeatable)")
    if not args.output:
        raise AdainError("give -o OUTPUT")
    output_format(args.output)
    options = OptimizeOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(OptimizeOptions)})
    normalised_weights(args.weights, len(args.style))
    masks = read_masks(args.mask, len(args.style)) if args.mask else None
    content, styles = read_image(args.content[0]), [read_image(p) for p in args.style]
    with contextlib.ExitStack() as stack:
        try:
            log = stack.enter_context(open(args.log, "w")) if args.log else None
        except OSError as exc:
            raise AdainError(f"{args.log}: cannot write the log ({exc.strerror or exc})") from None
        model = _optimize_model(args, options.init)
        bar = None  # opened with the first entry, so that early errors stay one line
        timer = StepTimer()

        def report(entry: dict) -> None:
            nonlocal bar
            phase = f"balance {entry['round']}" if entry["phase"] == "balance" else "optimize"
            if bar is None:
                bar = stack.enter_context(tqdm(total=options.iterations, unit="it", file=sys.stderr))
            if phase != bar.desc:
                bar.reset()
                bar.set_description_str(phase)
            bar.update()
            per_step = timer.step()  # left: the time left of the whole command
            left = "?" if per_step is None else tqdm.format_interval(per_step * steps_left(entry, bar.n, bar.total))
            bar.set_postfix(loss=f"{entry['loss']:.4g}", left=left, refresh=False)
            if log is not None:
                log.write(json.dumps(entry) + "\n")

        result = optimize_image(model, content, styles, args.weights, mask=masks, preserve_color=args.preserve_color,
                                content_size=args.content_size, style_size=args.style_size, crop=args.crop,
                                options=options, balance=args.balance, callback=report, style_scale=args.style_scale)
    save_image(result.image, args.output, args.quality)
    return 0


def attach_number_lists(argv: list[str]) -> list[str]:
    """``--weights -1,2`` as ``--weights=-1,2``: argparse takes "-1,2" for an option (it is no plain negative number)
    and would say "expected one argument" instead of checking the weights."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in NUMBER_LISTS and arg[:1] == "-" and (arg[1:2].isdigit() or arg[1:2] == "."):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


#: The commands that need an extra (``pip install 'adain[EXTRA]'``): module and extra. The library reaches up to
#: the service only here, lazily, so that the library runs without it.
EXTRA_COMMANDS = {"serve": ("service.cli", "service"), "key": ("service.api.keys", "service"),
                  "video": ("adain.video.cli", "video")}


def _extra_command(name: str, argv: list[str]) -> int:
    """Run a command of :data:`EXTRA_COMMANDS`; exit 2 with the install line when its extra is missing."""
    module_name, extra = EXTRA_COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        print(f"adain {name}: needs pip install 'adain[{extra}]' (no module named {exc.name!r})", file=sys.stderr)
        return 2
    return module.main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``adain`` command."""
    argv = attach_number_lists(list(sys.argv[1:] if argv is None else argv))
    if argv[:1] == ["train"]:
        from .train.cli import main as train_main

        return train_main(argv[1:])
    if argv[:1] == ["evaluate"]:
        from .train.evaluate import main as evaluate_main

        return evaluate_main(argv[1:])
    if argv[:1] and argv[0] in EXTRA_COMMANDS:
        return _extra_command(argv[0], argv[1:])
    parser = _Parser(prog="adain", description="Arbitrary style transfer with AdaIN.")
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{stylize,video,optimize,weights,train,evaluate,serve,key}")
    _stylize_parser(sub)
    if argv[:1] == ["optimize"]:  # its options come from adain.optimize.gatys, which imports torch: only when asked for
        _optimize_parser(sub)
    else:
        sub.add_parser("optimize", help=OPTIMIZE_HELP)
    add_weights_parser(sub)
    sub.add_parser("video", help="stylize a video clip without flicker (adain video --help)")
    sub.add_parser("train", help="train a decoder (adain train --help)")
    sub.add_parser("evaluate", help="measure a bundle on held-out pairs (adain evaluate --help)")
    sub.add_parser("serve", help="run the HTTP service (adain serve --help)")
    sub.add_parser("key", help="make an API key for adain serve --api-keys (adain key --help)")
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (AdainError, KeyboardInterrupt) as exc:
        return exit_status("adain", exc)


if __name__ == "__main__":
    sys.exit(main())
