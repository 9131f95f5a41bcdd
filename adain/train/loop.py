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
import random
import signal
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from filelock import FileLock, Timeout
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.utils import make_grid, save_image
from tqdm import tqdm

from ..arguments import count_arg
from ..bundles.download import sha256_file
from ..bundles.layouts import decoder_layer, decoder_skips, load_into
from ..errors import AdainError, InputError, exit_status
from ..net import FEATURE_LAYERS, LAYERS, SKIP_LAYERS
from .data import PairDataset, StreamSampler, Unreadable, collate, list_images, split
from .losses import (
    colour_loss,
    content_loss,
    decoder_targets,
    grid_loss,
    held_out_losses,
    layout_loss,
    normalised_feature_loss,
    style_losses,
    texture_loss,
)
from .runs import (
    TrainingDiverged,
    TrainingLog,
    checkpoints,
    latest_checkpoint,
    remove_stale_tmp,
    save_checkpoint,
    trim_training_log,
)
from .setup import Models, calibrate_skips, held_out_pairs, init_models, skips_arg

LOCK = ".lock"
SAMPLE_PAIRS = 4  # rows of the sample grids
# Arguments that define the run: a resumed run must keep them (the data split, the optimisation).
FIXED_ON_RESUME = ("content_dir", "style_dir", "batch_size", "lr", "lr_decay", "style_weight", "resize", "crop",
                   "holdout_content", "holdout_style", "seed", "init_decoder", "loss", "layer", "skips")
NOT_INHERITED = ("output_dir", "resume", "no_progress")  # everything else defaults to the checkpoint's value
PATH_ARGS = ("content_dir", "style_dir", "encoder", "init_decoder", "output_dir")


@dataclass(frozen=True)
class TrainingObjective:
    """What the decoder is trained to minimise, besides the paper's content + style_weight * style.

    ``structure``: weight of the instance-normalised relu3_1 loss against the content photo;
    ``layout``: weight of the coarse standardised-luminance loss against it; ``pixel``: weight of
    the pixel L1 loss, used in reconstruction steps (the style image is then the content itself);
    ``grid``: weight of the loss on the output's gradient profile modulo 8 (the upsampling grid);
    ``colour`` and ``texture``: weights of the encoder-free appearance losses against the style image
    (:func:`adain.train.losses.colour_loss`, :func:`adain.train.losses.texture_loss`), off in reconstruction steps.
    """

    structure: float = 0.0
    layout: float = 0.0
    pixel: float = 0.0
    grid: float = 0.0
    colour: float = 0.0
    texture: float = 0.0


STRUCTURE_LAYER = 2  # relu3_1
RECON_PIXEL_WEIGHT = 10.0  # pixel L1 (images in [0, 1]) in reconstruction steps
LOSS_DEFAULTS = {"paper": {"structure_weight": 0.0, "layout_weight": 0.0},
                 "hybrid": {"structure_weight": 1.0, "layout_weight": 1.0}}
#: Defaults by the encoder's architecture: vgg19, the paper's (and its reference implementation's); vgg16 (HED),
#: the first stage of the shipped decoder's recipe (docs/training.md). A flag given, or an --init-decoder's
#: layer and skips, take their place.
RECIPES: dict[str, dict[str, object]] = {
    "vgg19": {"layer": "relu4_1", "skips": [], "loss": "paper", "style_weight": 10.0, "batch_size": 8, "lr": 1e-4,
              "warmup": 0, "recon_steps": 0, "resize": 512, "crop": 256},
    "vgg16": {"layer": "relu3_1", "skips": [], "loss": "paper", "style_weight": 1.0, "batch_size": 4, "lr": 3e-4,
              "warmup": 200, "recon_steps": 500, "resize": 256, "crop": 160},
}


def _recipe_help(key: str) -> str:
    def show(value: object) -> str:
        return ",".join(map(str, value)) or "none" if isinstance(value, list) else str(value)

    return f"default: {show(RECIPES['vgg16'][key])} for vgg16 encoders, {show(RECIPES['vgg19'][key])} for vgg19"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where it depends on the encoder (the help says so instead)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or "default:" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def compute_losses(models: Models, content: Tensor, style: Tensor, objective: TrainingObjective = TrainingObjective()
                   ) -> tuple[Tensor, list[Tensor], Tensor]:
    """(content-side loss, per-layer style losses, output) of one batch.

    The content-side loss is the paper's (MSE of the AdaIN layer's features to the AdaIN target) plus the
    ``objective``'s terms (its colour and texture terms are :func:`appearance_losses`'). AdaIN works at every
    input of the decoder (its layer and its skips), each with the style's own statistics there.
    """
    enc, dec = models.encoder, models.decoder
    k = FEATURE_LAYERS.index(enc.layer)
    with torch.no_grad():
        content_feats = enc.features(content, FEATURE_LAYERS[-1] if style is content else enc.layer)
        style_feats = content_feats if style is content else enc.features(style)
        targets = decoder_targets(dec.inputs, content_feats, style_feats)
    out = dec(targets, tuple(content.shape[-2:]))
    out_feats = enc.features(out)
    lc = content_loss(out_feats[k], targets[-1])
    if objective.structure:
        lc = lc + objective.structure * normalised_feature_loss(out_feats[STRUCTURE_LAYER],
                                                                content_feats[STRUCTURE_LAYER])
    if objective.layout:
        lc = lc + objective.layout * layout_loss(out, content)
    if objective.pixel:
        lc = lc + objective.pixel * F.l1_loss(out.float(), content.float())
    if objective.grid:
        lc = lc + objective.grid * grid_loss(out, content)
    return lc, style_losses(out_feats, style_feats), out


def appearance_losses(out: Tensor, style: Tensor, objective: TrainingObjective) -> dict[str, Tensor]:
    """The weighted encoder-free style terms of ``objective`` that are on: colour and texture."""
    terms = {}
    if objective.colour:
        terms["colour"] = objective.colour * colour_loss(out, style)
    if objective.texture:
        terms["texture"] = objective.texture * texture_loss(out, style)
    return terms


def objective_at(args: argparse.Namespace, step: int) -> tuple[TrainingObjective, bool]:
    """The objective of step ``step`` (0-based) and whether it is a reconstruction step (style = content)."""
    recon = step < args.recon_steps
    pixel = RECON_PIXEL_WEIGHT if recon else 0.0
    colour, texture = (0.0, 0.0) if recon else (args.colour_weight, args.texture_weight)
    return TrainingObjective(args.structure_weight, args.layout_weight, pixel, args.grid_weight, colour, texture), recon


def lr_at(step: int, base_lr: float, decay: float, warmup: int = 0) -> float:
    """The reference schedule lr / (1 + decay * step), after a linear warm-up over ``warmup`` steps."""
    ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
    return ramp * base_lr / (1.0 + decay * step)


def note_unreadable(data: dict, found: Iterable[Unreadable]) -> None:
    """Record files that failed to decode after the scan: warn once, count them as skipped."""
    for kind, path in found:
        known = data[kind].setdefault("unreadable", [])
        if path not in known:
            known.append(path)
            data[kind]["skipped"] += 1
            warnings.warn(f"skipping unreadable {kind} image {path}", stacklevel=2)


# ---- arguments -----------------------------------------------------------------

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
                        "--init-decoder, else " + _recipe_help("layer"))
    p.add_argument("--skips", type=skips_arg,
                   help="comma-separated shallower layers AdaIN also works at, each fed to the decoder where its "
                        f"resolution is reached ({', '.join(SKIP_LAYERS)}; docs/training.md). Those of "
                        "--init-decoder, else " + _recipe_help("skips"))
    p.add_argument("--init-decoder", type=Path, help="start from this decoder file instead of random weights "
                   "(to continue or fine-tune a released decoder; the step count and optimizer start afresh)")
    p.add_argument("--steps", type=count_arg(0), default=160_000, help="train until this step")
    p.add_argument("--batch-size", type=count_arg(1), help=_recipe_help("batch_size"))
    p.add_argument("--lr", type=float, help=_recipe_help("lr"))
    p.add_argument("--lr-decay", type=float, default=5e-5, help="lr / (1 + lr_decay * step)")
    p.add_argument("--warmup", type=count_arg(0), help="linear learning-rate warm-up over N steps; "
                   + _recipe_help("warmup"))
    p.add_argument("--style-weight", type=float, help=_recipe_help("style_weight"))
    p.add_argument("--loss", choices=tuple(LOSS_DEFAULTS), help="paper: content + style_weight * style, as in the "
                   "paper; hybrid: plus --structure-weight * MSE of instance-normalised relu3_1 and --layout-weight * "
                   "MSE of the coarse standardised luminance, both against the content photo; "
                   + _recipe_help("loss"))
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
    p.add_argument("--recon-steps", type=count_arg(0),
                   help="warm start: the first N steps train an autoencoder (the style image is the content "
                        "photo itself; pixel L1 plus the content-side feature losses, no style loss), which "
                        "converges far faster than the style loss); " + _recipe_help("recon_steps"))
    p.add_argument("--resize", type=count_arg(0), help="shorter side before cropping (0: keep); "
                   + _recipe_help("resize"))
    p.add_argument("--crop", type=count_arg(16), help="random crop size; " + _recipe_help("crop"))
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


def _as_paths(args: argparse.Namespace, convert=Path) -> None:
    """Each path argument through ``convert`` (lists of paths element-wise)."""
    for key in PATH_ARGS:
        value = getattr(args, key, None)
        if isinstance(value, list | tuple):
            setattr(args, key, [convert(Path(v)) for v in value])
        elif value is not None:
            setattr(args, key, convert(Path(value)))


def _resolved(value: object) -> list[Path]:
    return [Path(v).resolve() for v in (value if isinstance(value, list | tuple) else [value])]


def _same(key: str, a: object, b: object) -> bool:
    if key in PATH_ARGS and a is not None and b is not None:
        return _resolved(a) == _resolved(b)
    return a == b


def resume_args(parser: argparse.ArgumentParser, argv: Sequence[str], args: argparse.Namespace
                ) -> tuple[argparse.Namespace, dict]:
    """Re-parse ``argv`` over the newest checkpoint's arguments; refuse changes to :data:`FIXED_ON_RESUME`."""
    path, state = latest_checkpoint(args.output_dir)
    saved = {k: v for k, v in state["args"].items() if k not in NOT_INHERITED}
    merged = parser.parse_args(argv, namespace=argparse.Namespace(**saved))
    _as_paths(merged)
    for key in FIXED_ON_RESUME:
        if key in saved and not _same(key, getattr(merged, key), saved[key]):
            raise InputError(f"--{key.replace('_', '-')} cannot change on --resume ({path} has {saved[key]!r})")
    changed = {k: _jsonable(v) for k, v in vars(merged).items() if k not in NOT_INHERITED
               and not _same(k, v, saved.get(k, parser.get_default(k)))}
    if changed:  # recorded in every later checkpoint and in the model card
        state["changes"] = [*state.get("changes", []), {"step": state["step"], "args": changed}]
    print(f"resuming {path} at step {state['step']}", file=sys.stderr)
    return merged, state


# ---- setup -----------------------------------------------------------------------

def scan_data(args: argparse.Namespace) -> dict:
    """Find the images, split off the held-out set; the result is stored in every checkpoint."""
    data: dict = {}
    for kind, roots, n_hold in (("content", [args.content_dir], args.holdout_content),
                                ("style", args.style_dir, args.holdout_style)):
        data[kind] = {"root": ", ".join(map(str, roots)), "train": [], "held_out": [], "skipped": 0}
        for root in roots:
            if root is None or not root.is_dir():
                raise InputError(f"--{kind}-dir {root} is not a folder")
            good, bad = list_images(root)
            if len(good) <= n_hold:
                raise InputError(f"{root} has {len(good)} readable images, need more than {n_hold} (--holdout-{kind})")
            train, held = split(good, n_hold, args.seed)
            data[kind]["train"] += map(str, train)
            data[kind]["held_out"] += map(str, held)
            data[kind]["skipped"] += len(bad)
    return data


def _check_encoder(resume: dict, arch: str, info: dict) -> None:
    if resume["arch"] != arch or resume["encoder"].get("sha256") != info["sha256"]:
        raise InputError(f"the encoder ({arch}, sha256 {info['sha256'][:12]}...) is not the one the checkpoint was "
                         f"trained with ({resume['arch']}, sha256 {str(resume['encoder'].get('sha256'))[:12]}...)")


def _ignore_signals(_worker_id: int) -> None:
    """DataLoader workers leave SIGINT/SIGTERM to the main process, which stops them after saving."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(args: argparse.Namespace, data: dict, step: int, device: torch.device) -> DataLoader:
    """Batches of samples ``step * batch`` ... ``steps * batch``: the stream an uninterrupted run would see."""
    dataset = PairDataset([Path(p) for p in data["content"]["train"]], [Path(p) for p in data["style"]["train"]],
                          args.resize, args.crop, args.seed)
    sampler = StreamSampler(step * args.batch_size, args.steps * args.batch_size)
    return DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                      collate_fn=collate, pin_memory=device.type == "cuda", drop_last=True,
                      worker_init_fn=_ignore_signals if args.workers else None,
                      generator=torch.Generator().manual_seed(args.seed))


# ---- the loop ---------------------------------------------------------------------

class StopFlag:
    """While active, SIGINT/SIGTERM only set ``signum`` so the loop can save and leave; a second one aborts."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict = {}

    def __enter__(self) -> StopFlag:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, _frame: object) -> None:
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum


@torch.no_grad()
def write_samples(models: Models, content: Tensor, style: Tensor, path: Path) -> None:
    """A grid with one row per pair: content | style | output."""
    device = next(models.encoder.parameters()).device
    was_training = models.decoder.training
    models.decoder.eval()
    c, s = content.to(device), style.to(device)
    targets = decoder_targets(models.decoder.inputs, models.encoder.features(c), models.encoder.features(s))
    out = models.decoder(targets, tuple(c.shape[-2:])).float().clamp(0, 1)
    models.decoder.train(was_training)
    rows = torch.stack([c, s, out], 1).flatten(0, 1).cpu()
    save_image(make_grid(rows, nrow=3, padding=2), path)


def _jsonable(value: object) -> object:
    """Paths (and lists of them) as strings, for checkpoints."""
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value) if isinstance(value, Path) else value


@dataclass
class Run:
    """Everything a training process holds: settings, networks, optimizer, data and position."""

    args: argparse.Namespace
    device: torch.device
    precision: str
    models: Models
    encoder_info: dict
    optimizer: torch.optim.Optimizer
    data: dict
    step: int
    init_decoder: dict | None  # the --init-decoder file and its sha256
    changes: list[dict]  # arguments changed on --resume: [{"step": N, "args": {name: new value}}]

    def state(self) -> dict:
        """The checkpoint: everything an exact resume needs, and what a model card describes."""
        if not all(torch.isfinite(p).all() for p in self.models.decoder.parameters()):
            raise TrainingDiverged(f"the decoder holds NaN or infinite weights at step {self.step}: not saving them; "
                                   "resume from an earlier checkpoint with a lower --lr, or use --precision fp32")
        return {"step": self.step, "decoder": {k: v.cpu() for k, v in self.models.decoder.layers.state_dict().items()},
                "optimizer": self.optimizer.state_dict(),
                "args": {k: _jsonable(v) for k, v in vars(self.args).items()},
                "arch": self.models.encoder.arch, "layer": self.models.decoder.layer,
                "skips": list(self.models.decoder.skips), "encoder": self.encoder_info,
                "data": self.data,
                "init_decoder": self.init_decoder, "changes": self.changes,
                "precision": self.precision, "device": str(self.device),
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate()}}


def fill_recipe_defaults(args: argparse.Namespace, arch: str) -> None:
    """What was not given: the --init-decoder's layer and skips, else :data:`RECIPES` of the encoder's
    architecture; the loss's weights from :data:`LOSS_DEFAULTS`."""
    if args.init_decoder is not None:
        args.layer = args.layer or decoder_layer(args.init_decoder)
        args.skips = list(decoder_skips(args.init_decoder)) if args.skips is None else args.skips
    for key, value in RECIPES[arch].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    for key, value in LOSS_DEFAULTS[args.loss].items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def set_up_run(args: argparse.Namespace, resume: dict | None) -> Run:
    """Build a fresh run (scanning the data), or restore one from the checkpoint ``resume``."""
    from ..bundles.cache import encoder_arch
    from ..devices import resolve_device

    device = resolve_device(args.device)
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    data = resume["data"] if resume else scan_data(args)  # before the encoder: bad folders fail fast
    if resume:  # a run from before --layer or --skips: what it trained
        args.layer, args.skips = args.layer or "relu4_1", [] if args.skips is None else args.skips
    fill_recipe_defaults(args, encoder_arch(args.model, args.encoder, args.arch))
    models, encoder_info = init_models(args.seed, args.model, args.encoder, args.arch, args.layer, args.skips)
    random.seed(args.seed)
    init = resume.get("init_decoder") if resume else None
    if resume:
        _check_encoder(resume, models.encoder.arch, encoder_info)
        models.decoder.layers.load_state_dict(resume["decoder"])
    elif args.init_decoder is not None:
        load_into(models.decoder, args.init_decoder)
        init = {"file": str(args.init_decoder), "sha256": sha256_file(args.init_decoder)}
    else:
        calibrate_skips(models, [Path(p) for p in data["content"]["train"]], args.resize or 256)
    fmt = torch.channels_last
    models.encoder.to(device, memory_format=fmt)
    models.decoder.to(device, memory_format=fmt).train()
    optimizer = torch.optim.Adam(models.decoder.parameters(), lr=args.lr)
    if not resume:
        return Run(args, device, precision, models, encoder_info, optimizer, data, 0, init, [])
    optimizer.load_state_dict(resume["optimizer"])  # moves the state to the parameters' device
    torch.set_rng_state(resume["rng"]["torch"])
    random.setstate(resume["rng"]["python"])
    trim_training_log(args.output_dir, resume["step"])
    return Run(args, device, precision, models, encoder_info, optimizer, data, resume["step"], init,
               resume.get("changes", []))


def train(args: argparse.Namespace, resume: dict | None = None) -> int:
    """Run (or, with ``resume`` = a checkpoint, continue) training; returns the process exit code."""
    run = set_up_run(args, resume)
    run_dir: Path = args.output_dir
    models, optimizer, device = run.models, run.optimizer, run.device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    loss_fn = torch.compile(compute_losses) if args.compile else compute_losses
    n_pairs = max(SAMPLE_PAIRS if args.sample_every else 0, args.eval_pairs if args.eval_every else 0)
    pairs = held_out_pairs(run.data, args.resize, args.crop, n_pairs)
    note_unreadable(run.data, pairs.unreadable)
    loader = make_loader(args, run.data, run.step, device)
    if run.step >= args.steps:
        print(f"already at step {run.step} >= --steps {args.steps}; nothing to do", file=sys.stderr)
    saved_step = run.step if resume else -1
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.precision == "bf16")
    log = TrainingLog(run_dir, args.style_weight)
    bar = tqdm(total=args.steps, initial=run.step, disable=args.no_progress, unit="it", dynamic_ncols=True)
    try:
        with StopFlag() as stop:
            for batch in loader:
                note_unreadable(run.data, batch.unreadable)
                content = batch.content.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                style = batch.style.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(run.step, args.lr, args.lr_decay, args.warmup)
                objective, recon = objective_at(args, run.step)
                with autocast:
                    lc, ls_layers, out = loss_fn(models, content, content if recon else style, objective)
                    style_weight = 0.0 if recon else args.style_weight  # reconstruction: pixels and features only
                    extra = appearance_losses(out, style, objective)
                    loss = lc + style_weight * torch.stack(ls_layers).sum() + sum(extra.values())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                run.step += 1
                step, last = run.step, run.step == args.steps
                bar.update(1)
                log.add(lc, ls_layers, extra)
                if step % args.log_every == 0 or last:
                    rec = log.log_train(step, optimizer.param_groups[0]["lr"])
                    bar.set_postfix(loss=f"{rec['loss']:.3f}", c=f"{rec['content']:.3f}", s=f"{rec['style']:.3f}")
                if len(pairs) and args.eval_every and (step % args.eval_every == 0 or last):
                    result = held_out_losses(models.encoder, {"decoder": models.decoder}, pairs.content, pairs.style,
                                             args.batch_size)
                    log.log_held_out(step, result.pairs, result.decoders["decoder"])
                if len(pairs) and args.sample_every and (step % args.sample_every == 0 or last):
                    write_samples(models, pairs.content[:SAMPLE_PAIRS], pairs.style[:SAMPLE_PAIRS],
                                  run_dir / f"sample-{step:08d}.png")
                if step % args.checkpoint_every == 0 or stop.signum:
                    save_checkpoint(run_dir, run.state(), args.keep)
                    saved_step = step
                if stop.signum:
                    print(f"\nstopped by signal {stop.signum} at step {step}; checkpoint saved in {run_dir}",
                          file=sys.stderr)
                    return 128 + stop.signum
        if saved_step != run.step:
            save_checkpoint(run_dir, run.state(), args.keep)
    finally:
        bar.close()
        log.close()
    return 0


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
            _as_paths(args, Path.resolve)  # absolute: resumes work anywhere
            return train(args)
    except Timeout:
        print(f"adain train: error: another process is training in {run_dir}", file=sys.stderr)
        return 2
    except (AdainError, KeyboardInterrupt) as exc:
        return exit_status("adain train", exc)

