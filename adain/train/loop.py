"""The training loop of ``adain train`` (:mod:`adain.train.cli`): set up a run (fresh or resumed), then step,
log, evaluate, sample and checkpoint until ``--steps`` or a signal."""

from __future__ import annotations

import argparse
import random
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..bundles.download import sha256_file
from ..bundles.layouts import load_or_grow, needs_growing
from ..errors import InputError
from .data import PairDataset, StreamSampler, Unreadable, collate, list_images, split
from .losses import held_out_losses
from .objective import appearance_losses, coarse_losses, compute_losses, objective_at
from .recipes import fill_recipe_defaults
from .resume import check_encoder
from .runs import TrainingDiverged, TrainingLog, jsonable, save_checkpoint, trim_training_log
from .samples import SAMPLE_PAIRS, write_samples
from .setup import Models, calibrate_skips, held_out_pairs, init_models
from .signals import StopFlag, ignore_signals


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


def make_loader(args: argparse.Namespace, data: dict, step: int, device: torch.device) -> DataLoader:
    """Batches of samples ``step * batch`` ... ``steps * batch``: the stream an uninterrupted run would see."""
    dataset = PairDataset([Path(p) for p in data["content"]["train"]], [Path(p) for p in data["style"]["train"]],
                          args.resize, args.crop, args.seed)
    sampler = StreamSampler(step * args.batch_size, args.steps * args.batch_size)
    return DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                      collate_fn=collate, pin_memory=device.type == "cuda", drop_last=True,
                      worker_init_fn=ignore_signals if args.workers else None,
                      generator=torch.Generator().manual_seed(args.seed))


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
                "args": {k: jsonable(v) for k, v in vars(self.args).items()},
                "arch": self.models.encoder.arch, "layer": self.models.decoder.layer,
                "skips": list(self.models.decoder.skips), "skip_strength": self.models.decoder.skip_strength,
                "extra_convs": self.models.decoder.extra_convs,
                "encoder": self.encoder_info,
                "data": self.data,
                "init_decoder": self.init_decoder, "changes": self.changes,
                "precision": self.precision, "device": str(self.device),
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate()}}


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
    models, encoder_info = init_models(args.seed, args.model, args.encoder, args.arch, args.layer, args.skips,
                                       args.skip_strength, args.extra_convs)
    random.seed(args.seed)
    init = resume.get("init_decoder") if resume else None
    if resume:
        check_encoder(resume, models.encoder.arch, encoder_info)
        models.decoder.layers.load_state_dict(resume["decoder"])
    elif args.init_decoder is not None:
        if needs_growing(models.decoder, args.init_decoder):  # first: a deepened decoder's pass-through undoes them
            calibrate_skips(models, [Path(p) for p in data["content"]["train"]], args.resize or 256)
        load_or_grow(models.decoder, args.init_decoder)
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
                    lc, ls_layers, out, extra = loss_fn(models, content, content if recon else style, objective)
                    style_weight = 0.0 if recon else args.style_weight  # reconstruction: pixels and features only
                    extra |= appearance_losses(out, style, objective)
                    extra |= coarse_losses(models.encoder, out, style, objective, style_weight)
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
