"""The ``adain`` command: stylize, weights, train, serve.

Errors a user can fix are printed as one line on stderr with exit status 2;
there are no tracebacks for bad input.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import AdainError

IMAGE_GLOBS = ("*.jpg", "*.jpeg", "*.png", "*.webp", "*.bmp")


def _weights_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"weights must be comma-separated numbers, got {text!r}") from None


def _size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of pixels, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("sizes must be >= 0 (0 keeps the original size)")
    return value


def add_model_args(p: argparse.ArgumentParser) -> None:
    """--model / --encoder / --decoder / --arch / --device / --precision."""
    g = p.add_argument_group("model")
    g.add_argument("--model", help="bundle name from the weights manifest (default: vgg16-hed)")
    g.add_argument("--encoder", type=Path, help="encoder weight file (.pth or .safetensors)")
    g.add_argument("--decoder", type=Path, help="decoder weight file (.pth or .safetensors)")
    g.add_argument("--arch", choices=("vgg19", "vgg16"), help="architecture of --encoder/--decoder")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")


def _stylize_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stylize", help="stylize images", description="Stylize content images with one or more styles.")
    p.add_argument("--content", type=Path, action="append", default=[], help="content image (repeatable)")
    p.add_argument("--content-dir", type=Path, help="every image in this folder as content")
    p.add_argument("--style", type=Path, action="append", default=[], help="style image (repeatable: a blend)")
    p.add_argument("--style-dir", type=Path, help="every image in this folder as a style, one at a time")
    p.add_argument("--weights", type=_weights_list, help="blend weights, e.g. 0.7,0.3 (normalised to sum 1)")
    p.add_argument("--alpha", type=float, default=1.0, help="stylization strength in [0, 1]")
    p.add_argument("--preserve-color", choices=("none", "coral", "luminance"), default="none")
    p.add_argument("--mask", type=Path, action="append", default=[],
                   help="label image (values 0..N-1) or one grey mask per style")
    p.add_argument("--content-size", type=_size, default=512, help="shorter side of the content (0: keep)")
    p.add_argument("--style-size", type=_size, default=512, help="shorter side of the styles (0: keep)")
    p.add_argument("--crop", action="store_true", help="center-crop to a square of the given size")
    p.add_argument("-o", "--output", type=Path, help="output file (.png, .jpg, .webp)")
    p.add_argument("--output-dir", type=Path, help="output folder (with --content-dir / --style-dir)")
    p.add_argument("--ext", default="png", choices=("png", "jpg", "webp"), help="output format in --output-dir")
    p.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality")
    add_model_args(p)
    p.set_defaults(func=cmd_stylize)


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise AdainError(f"{folder}: not a folder")
    files = sorted(set(itertools.chain.from_iterable(folder.glob(g) for g in IMAGE_GLOBS)))
    if not files:
        raise AdainError(f"{folder}: no images found")
    return files


def build_stylizer(args: argparse.Namespace):
    """A Stylizer for --model or --encoder/--decoder."""
    from .bundles import resolve
    from .stylizer import Stylizer

    found = resolve(args.model, args.encoder, args.decoder, args.arch)
    return Stylizer.from_files(found.encoder, found.decoder, arch=args.arch or found.arch, device=args.device,
                               precision=args.precision)


def cmd_stylize(args: argparse.Namespace) -> int:
    """adain stylize."""
    from tqdm import tqdm

    from .images import read_image, save_image
    from .masks import read_masks
    from .stylizer import check_alpha, check_weights

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
        from .images import output_format

        output_format(args.output)  # fail before any work on a bad extension
    n_styles = len(style_sets[0])
    check_weights(args.weights, n_styles)  # fail fast, before loading the model
    check_alpha(args.alpha)
    styles_cache = {}
    masks = read_masks(args.mask, n_styles) if args.mask else None
    stylizer = build_stylizer(args)
    jobs = [(c, s) for c in contents for s in style_sets]
    for content_path, style_paths in tqdm(jobs, disable=len(jobs) < 2, unit="img", file=sys.stderr):
        content = read_image(content_path)
        for p in style_paths:
            if p not in styles_cache:
                styles_cache[p] = read_image(p)
        styles = [styles_cache[p] for p in style_paths]
        out = stylizer.stylize(content, styles, weights=args.weights, alpha=args.alpha,
                               preserve_color=args.preserve_color, mask=masks, content_size=args.content_size,
                               style_size=args.style_size, crop=args.crop)
        if batch or args.output is None:
            name = f"{content_path.stem}_stylized_{'_'.join(p.stem for p in style_paths)}.{args.ext}"
            dest = args.output_dir / name
        else:
            dest = args.output
        save_image(out, dest, args.quality)
    return 0


def _weights_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="list, pull and verify model bundles")
    wsub = p.add_subparsers(dest="weights_cmd", required=True)
    wsub.add_parser("list", help="known bundles and what is cached").set_defaults(func=cmd_weights_list)
    pull = wsub.add_parser("pull", help="fetch and verify a bundle")
    pull.add_argument("name", nargs="?", default=None)
    pull.set_defaults(func=cmd_weights_pull)
    verify = wsub.add_parser("verify", help="re-check the hashes of cached files")
    verify.add_argument("name", nargs="?", default=None)
    verify.set_defaults(func=cmd_weights_verify)


def cmd_weights_list(args: argparse.Namespace) -> int:
    """adain weights list."""
    from .bundles import DEFAULT_BUNDLE, cache_dir, load_manifest

    print(f"cache: {cache_dir()}")
    for name, bundle in load_manifest().items():
        mark = " (default)" if name == DEFAULT_BUNDLE else ""
        print(f"{name}{mark}  [{bundle.arch}]  {bundle.description}")
        for role, spec in bundle.files.items():
            path = bundle.path(role)
            size = f"{path.stat().st_size / 2**20:.1f} MiB" if path.is_file() else "not present"
            where = spec.url or spec.requirement or "shipped with adain"
            print(f"  {role:8s} {size:>12s}  {where}")
    return 0


def cmd_weights_pull(args: argparse.Namespace) -> int:
    """adain weights pull [NAME]."""
    from .bundles import DEFAULT_BUNDLE, pull

    bundle = pull(args.name or DEFAULT_BUNDLE)
    for role in bundle.files:
        print(f"{bundle.name} {role}: {bundle.path(role)} (verified)")
    return 0


def cmd_weights_verify(args: argparse.Namespace) -> int:
    """adain weights verify [NAME]: exit 1 if any present file fails its hash."""
    from .bundles import load_manifest, verify_file

    failed = 0
    for name, bundle in load_manifest().items():
        if args.name and name != args.name:
            continue
        for role in bundle.files:
            try:
                status = verify_file(bundle, role)
            except AdainError as exc:
                status, failed = f"FAILED: {exc}", failed + 1
            print(f"{name} {role}: {status}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``adain`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        from .train import main as train_main

        return train_main(argv[1:])
    if argv[:1] == ["serve"]:
        from service.cli import main as serve_main

        return serve_main(argv[1:])
    parser = argparse.ArgumentParser(prog="adain", description="Arbitrary style transfer with AdaIN.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{stylize,weights,train,serve}")
    _stylize_parser(sub)
    _weights_parser(sub)
    sub.add_parser("train", help="train a decoder (adain train --help)")
    sub.add_parser("serve", help="run the HTTP service (adain serve --help)")
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except AdainError as exc:
        print(f"adain: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("adain: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
