"""Train an AdaIN decoder: ``adain train`` / ``python -m adain.train``.

    adain train --content-dir photos/ --style-dir paintings/ --output-dir runs/a
    adain train --output-dir runs/a --resume            # continue where it stopped
    adain train export runs/a -o weights/decoder.safetensors

The run folder holds ``ckpt-<step>.pt`` checkpoints (the last ``--keep``),
``metrics.jsonl`` (training losses averaged over each ``--log-every`` interval,
and held-out losses every ``--eval-every`` steps), ``sample-<step>.png`` grids
(content | style | output on fixed held-out pairs) and ``tb/`` when TensorBoard
is installed. SIGINT/SIGTERM save a checkpoint and exit with 128 + signal;
``--resume`` then continues exactly where the run stopped.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from filelock import FileLock, Timeout

from ..arguments import count_arg
from ..errors import AdainError, InputError, exit_status
from ..net import LAYERS, MAX_EXTRA_CONVS, SKIP_LAYERS
from .loop import train
from .recipes import LOSS_DEFAULTS, recipe_help
from .resume import as_paths, resume_args
from .runs import checkpoints, remove_stale_tmp
from .setup import grain_arg, layers_arg, skips_arg, strength_arg, strokes_arg

LOCK = ".lock"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where it depends on the encoder (the help says so instead)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or "default:" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``adain train``."""
    p = argparse.ArgumentParser(prog="adain train", formatter_class=_HelpFormatter,
                                description="Train an AdaIN decoder for a fixed encoder. Where a default depends "
                                "on the encoder, vgg16 encoders (the default bundle) get the recipe of the shipped "
                                "decoder's first stage and vgg19 encoders the paper's (docs/training.md). "
                                "`adain train export --help` for turning a run into a decoder file.")
    p.add_argument("--content-dir", type=Path, help="folder of content photos (searched recursively)")
    p.add_argument("--style-dir", type=Path, nargs="+", help="folder(s) of style images (searched recursively; "
                   "each folder holds out its own --holdout-style images)")
    p.add_argument("--output-dir", type=Path, required=True, help="run folder: checkpoints, logs, samples")
    p.add_argument("--model", default=None, help="bundle whose encoder to use (default: vgg16-hed)")
    p.add_argument("--encoder", type=Path, help="encoder weight file instead of a bundle")
    p.add_argument("--arch", choices=("vgg19", "vgg16"), help="architecture of --encoder")
    p.add_argument("--layer", choices=LAYERS,
                   help="where AdaIN works and what the decoder decodes: relu4_1 as in the paper, or relu3_1 "
                        "(the photo's shapes kept, a smaller decoder; docs/training.md). The layer of "
                        "--init-decoder, else " + recipe_help("layer"))
    p.add_argument("--skips", type=skips_arg,
                   help="comma-separated shallower layers AdaIN also works at, each fed to the decoder where its "
                        f"resolution is reached ({', '.join(SKIP_LAYERS)}; docs/training.md). Those of "
                        "--init-decoder, else " + recipe_help("skips"))
    p.add_argument("--extra-convs", type=count_arg(0, MAX_EXTRA_CONVS),
                   help="extra 3x3 convs in the decoder at its deepest resolution, after the first (the paper's "
                        "decoder has three more there than a mirror of the encoder; docs/training.md). Those of "
                        "--init-decoder (which grows more, each starting as the identity), else 0")
    p.add_argument("--init-decoder", type=Path, help="start from this decoder file instead of random weights "
                   "(to continue or fine-tune a released decoder; the step count and optimizer start afresh). "
                   "A file that takes less grows what is asked for: new --skips start at zero weights, and a "
                   "relu3_1 file grows to --layer relu4_1 with relu3_1 among the --skips, passed through, and more "
                   "--extra-convs pass their input on, so "
                   "training starts from the file's pictures")
    p.add_argument("--steps", type=count_arg(0), default=160_000, help="train until this step")
    p.add_argument("--batch-size", type=count_arg(1), help=recipe_help("batch_size"))
    p.add_argument("--lr", type=float, help=recipe_help("lr"))
    p.add_argument("--lr-decay", type=float, default=5e-5, help="lr / (1 + lr_decay * step)")
    p.add_argument("--warmup", type=count_arg(0), help="linear learning-rate warm-up over N steps; "
                   + recipe_help("warmup"))
    p.add_argument("--style-weight", type=float, help=recipe_help("style_weight"))
    p.add_argument("--loss", choices=tuple(LOSS_DEFAULTS), help="paper: content + style_weight * style, as in the "
                   "paper; hybrid: plus --structure-weight * MSE of instance-normalised relu3_1 and --layout-weight * "
                   "MSE of the coarse standardised luminance, both against the content photo; "
                   + recipe_help("loss"))
    p.add_argument("--content-layers", type=layers_arg,
                   help="comma-separated layers where the content loss compares the output's features with AdaIN "
                        "of the photo's to the style's there (unweakened; the photo's own in reconstruction steps), "
                        "each a term of its own, summed; none deeper than --layer. Default: --layer alone, as in "
                        "the paper. relu3_1,relu4_1 for a decoder deepened from relu3_1 keeps the term that "
                        "decoder was trained with (docs/training.md)")
    p.add_argument("--structure-weight", type=float, help="default: 1 with --loss hybrid, 0 with paper")
    p.add_argument("--layout-weight", type=float, help="default: 1 with --loss hybrid, 0 with paper")
    p.add_argument("--grid-weight", type=float, default=0.0,
                   help="weight of a loss against the upsampling grid: MSE between the output's and the photo's "
                        "mean |luminance gradient| by position modulo 8, each over its mean (docs/training.md)")
    p.add_argument("--colour-weight", type=float, default=0.0,
                   help="weight of the colour loss: sliced Wasserstein distance between the output's and the style "
                        "image's CIELAB pixel colours (not in reconstruction steps)")
    p.add_argument("--texture-weight", type=float, default=0.0,
                   help="weight of the texture loss: MSE between the output's and the style image's log oriented "
                        "derivative-of-Gaussian energies (not in reconstruction steps)")
    p.add_argument("--features-weight", type=float, default=0.0,
                   help="weight of the feature-distribution loss: sliced Wasserstein distance between the output's "
                        "and the style image's relu1_1..relu3_1 features, which matches strokes where the style "
                        "loss matches only means and stds (not in reconstruction steps)")
    p.add_argument("--patch-weight", type=float, default=0.0,
                   help="weight of the patch loss: sliced Wasserstein distance between the output's and the style "
                        "image's 7x7 pixel patches at full, half and quarter size, which sees strokes and their "
                        "sizes (not in reconstruction steps)")
    p.add_argument("--coarse-weight", type=float, default=0.0,
                   help="weight of the style loss and texture loss taken again on output and style image at half "
                        "size, for strokes as large as a picture twice the training scale shows them; 1 weighs both "
                        "sizes alike (not in reconstruction steps)")
    p.add_argument("--grain", type=grain_arg, default=0.0,
                   help="standard deviation of the noise added to the photo (images in [0, 1]) in style steps, a new "
                        "draw each step, which the decoder learns to paint the style's texture from where the photo "
                        "is flat (a sky); kept in the decoder file, where stylizing adds a fixed noise of this size "
                        "times alpha (docs/training.md, \"Grain\"). 0: none")
    p.add_argument("--strokes", type=strokes_arg, default=0.0,
                   help="stroke noise added to the decoder's deepest input in style steps (a new draw each step), in "
                        "units of each channel's std: noise drawn out along the flow of the features where the photo "
                        "is flat, which the decoder learns to paint as strokes; kept in the decoder file, where "
                        "stylizing adds a fixed noise of this size times alpha (docs/training.md, \"Strokes\"). "
                        "0: none")
    p.add_argument("--skip-strength", type=strength_arg,
                   help="with --skips: what the skips are multiplied by in style steps (reconstruction steps feed "
                        "them whole), so that the decoder does not copy the photo's fine detail into every "
                        "stylization; kept in the decoder file, where stylizing at alpha a multiplies them by "
                        "1 - a * (1 - strength). One for all skips, or one per skip (e.g. 0.3,0.3,1). That of "
                        "--init-decoder for its skips, else 1")
    p.add_argument("--recon-every", type=count_arg(0), default=0,
                   help="after --recon-steps, every N-th step is a reconstruction step too (0: none), which keeps "
                        "the photo's shapes within the decoder's reach while it learns the styles")
    p.add_argument("--recon-steps", type=count_arg(0),
                   help="warm start: the first N steps train an autoencoder (the style image is the content "
                        "photo itself; pixel L1 plus the content-side feature losses, no style loss), which "
                        "converges far faster than the style loss); " + recipe_help("recon_steps"))
    p.add_argument("--resize", type=count_arg(0), help="shorter side before cropping (0: keep); "
                   + recipe_help("resize"))
    p.add_argument("--crop", type=count_arg(16), help="random crop size; " + recipe_help("crop"))
    p.add_argument("--holdout-content", type=count_arg(0), default=50, help="content images held out for validation")
    p.add_argument("--holdout-style", type=count_arg(0), default=20, help="style images held out for validation")
    p.add_argument("--workers", type=count_arg(0), default=min(4, os.cpu_count() or 1), help="DataLoader workers")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", choices=("fp32", "bf16"), help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile the loss computation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=count_arg(1), default=1000)
    p.add_argument("--keep", type=count_arg(1), default=3, help="checkpoints to keep")
    p.add_argument("--log-every", type=count_arg(1), default=50)
    p.add_argument("--sample-every", type=count_arg(0), default=1000, help="sample grid every N steps (0: never)")
    p.add_argument("--eval-every", type=count_arg(0), default=5000, help="held-out losses every N steps (0: never)")
    p.add_argument("--eval-pairs", type=count_arg(1), default=16, help="held-out pairs for --eval-every")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in --output-dir, with its arguments as defaults")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``adain train``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["export"]:
        from .export import main as export_main

        return export_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.resume and (args.content_dir is None or args.style_dir is None):
        parser.error("--content-dir and --style-dir are required (unless --resume)")
    run_dir: Path = args.output_dir
    try:
        if args.resume and not run_dir.is_dir():
            raise InputError(f"--resume: {run_dir} is not a run folder")
        run_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(run_dir / LOCK), timeout=0), warnings.catch_warnings():
            warnings.simplefilter("default")
            remove_stale_tmp(run_dir)
            if args.resume:
                args, resume = resume_args(parser, argv, args)
                return train(args, resume)
            if checkpoints(run_dir):
                raise InputError(f"{run_dir} already holds checkpoints: pass --resume, or use a new --output-dir")
            as_paths(args, Path.resolve)  # absolute: resumes work anywhere
            return train(args)
    except Timeout:
        print(f"adain train: error: another process is training in {run_dir}", file=sys.stderr)
        return 2
    except (AdainError, KeyboardInterrupt) as exc:
        return exit_status("adain train", exc)

