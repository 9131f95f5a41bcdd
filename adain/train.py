"""Train an AdaIN decoder: ``adain train`` / ``python -m adain.train``.

    adain train --content-dir photos/ --style-dir paintings/ --output-dir runs/a
    adain train --output-dir runs/a --resume            # continue where it stopped
    adain train export runs/a -o weights/decoder.safetensors
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.utils import make_grid, save_image
from tqdm import tqdm

from . import ops
from .data import PairDataset, StreamSampler, list_images, seeded_crops, split
from .losses import content_loss, style_losses
from .net import Decoder, Encoder

CHECKPOINT_GLOB = "ckpt-*.pt"


@dataclass
class Models:
    """The frozen encoder and the decoder being trained."""

    encoder: Encoder
    decoder: Decoder


def compute_losses(models: Models, content: Tensor, style: Tensor) -> tuple[Tensor, list[Tensor], Tensor]:
    """(content loss, per-layer style losses, output) of one batch, as in the paper."""
    enc = models.encoder
    with torch.no_grad():
        style_feats = enc.features(style)
        content_feat = enc(content)
        target = ops.adain(content_feat, ops.channel_stats(style_feats[-1]))
    out = models.decoder(target, tuple(content.shape[-2:]))
    out_feats = enc.features(out)
    return content_loss(out_feats[-1], target), style_losses(out_feats, style_feats), out


def lr_at(step: int, base_lr: float, decay: float) -> float:
    """The reference schedule: lr / (1 + decay * step)."""
    return base_lr / (1.0 + decay * step)


# ---- checkpoints ---------------------------------------------------------

def atomic_save(obj: object, path: Path) -> None:
    """torch.save to a temporary name, then rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    return sorted(run_dir.glob(CHECKPOINT_GLOB))


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint written by :func:`atomic_save`."""
    return torch.load(path, map_location="cpu", weights_only=False)


def save_checkpoint(run_dir: Path, state: dict, keep: int) -> Path:
    """Write ``ckpt-<step>.pt`` and drop all but the newest ``keep``."""
    path = run_dir / f"ckpt-{state['step']:08d}.pt"
    atomic_save(state, path)
    for old in checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


# ---- the loop --------------------------------------------------------------

class StopFlag:
    """Set by SIGINT/SIGTERM so the loop can save and leave cleanly."""

    def __init__(self) -> None:
        self.signum = 0
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        self.signum = signum


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``adain train``."""
    p = argparse.ArgumentParser(prog="adain train", description="Train an AdaIN decoder for a fixed encoder.")
    p.add_argument("--content-dir", type=Path, help="folder of content photos (searched recursively)")
    p.add_argument("--style-dir", type=Path, help="folder of style images (searched recursively)")
    p.add_argument("--output-dir", type=Path, required=True, help="run folder: checkpoints, logs, samples")
    p.add_argument("--model", default=None, help="bundle whose encoder to use (default: vgg16-hed)")
    p.add_argument("--encoder", type=Path, help="encoder weight file instead of a bundle")
    p.add_argument("--arch", choices=("vgg19", "vgg16"), help="architecture of --encoder")
    p.add_argument("--steps", type=int, default=160_000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lr-decay", type=float, default=5e-5)
    p.add_argument("--style-weight", type=float, default=10.0)
    p.add_argument("--resize", type=int, default=512, help="shorter side before cropping")
    p.add_argument("--crop", type=int, default=256, help="random crop size")
    p.add_argument("--holdout-content", type=int, default=50, help="content images held out for validation")
    p.add_argument("--holdout-style", type=int, default=20, help="style images held out for validation")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=("fp32", "bf16"), help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--compile", action="store_true", help="torch.compile the decoder and encoder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--keep", type=int, default=3, help="checkpoints to keep")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--sample-every", type=int, default=1000)
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output-dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _resolve_encoder(args: argparse.Namespace) -> tuple[Encoder, dict]:
    from .bundles import resolve_encoder

    return resolve_encoder(model=args.model, encoder=args.encoder, arch=args.arch)


def _scan(args: argparse.Namespace) -> dict:
    """Find the images, split off the held-out set; the result is stored in every checkpoint."""
    data: dict = {}
    for kind, root, n_hold in (("content", args.content_dir, args.holdout_content),
                               ("style", args.style_dir, args.holdout_style)):
        if root is None or not root.is_dir():
            raise SystemExit(f"adain train: --{kind}-dir {root} is not a folder")
        good, bad = list_images(root)
        if len(good) <= n_hold:
            raise SystemExit(f"adain train: {root} has {len(good)} readable images, need more than {n_hold}")
        train, held = split(good, n_hold, args.seed)
        data[kind] = {"root": str(root), "train": [str(p) for p in train], "held_out": [str(p) for p in held],
                      "skipped": len(bad)}
    return data


def train(args: argparse.Namespace) -> int:
    """Run (or resume) training; returns the process exit code."""
    run_dir: Path = args.output_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    resume_state = None
    if args.resume:
        found = checkpoints(run_dir)
        if not found:
            raise SystemExit(f"adain train: --resume, but {run_dir} has no checkpoint")
        resume_state = load_checkpoint(found[-1])
        saved = resume_state["args"]
        for key in ("content_dir", "style_dir", "model", "encoder", "arch", "batch_size", "lr", "lr_decay",
                    "style_weight", "resize", "crop", "seed"):
            setattr(args, key, saved[key])
        print(f"resuming {found[-1]} at step {resume_state['step']}", file=sys.stderr)

    from .stylizer import resolve_device

    device = resolve_device(args.device)
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    encoder, encoder_info = _resolve_encoder(args)
    decoder = Decoder(encoder.arch)
    data = resume_state["data"] if resume_state else _scan(args)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=args.lr)
    step = 0
    if resume_state:
        decoder.layers.load_state_dict(resume_state["decoder"])
        optimizer.load_state_dict(resume_state["optimizer"])
        step = resume_state["step"]
        torch.set_rng_state(resume_state["rng"]["torch"])
        random.setstate(resume_state["rng"]["python"])
    fmt = torch.channels_last
    models = Models(encoder.to(device, memory_format=fmt), decoder.to(device, memory_format=fmt).train())
    for group in optimizer.state.values():
        for k, v in group.items():
            if isinstance(v, Tensor) and k != "step":
                group[k] = v.to(device)
    loss_fn = torch.compile(compute_losses) if args.compile else compute_losses

    dataset = PairDataset([Path(p) for p in data["content"]["train"]], [Path(p) for p in data["style"]["train"]],
                          args.resize, args.crop, args.seed)
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=StreamSampler(step * args.batch_size,
                        args.steps * args.batch_size), num_workers=args.workers,
                        pin_memory=device.type == "cuda", persistent_workers=False, drop_last=True)
    val_c = seeded_crops([Path(p) for p in data["content"]["held_out"][:4]], args.resize, args.crop, 1)
    val_s = seeded_crops([Path(p) for p in data["style"]["held_out"][:4]], args.resize, args.crop, 2)

    def state() -> dict:
        return {"step": step, "decoder": {k: v.cpu() for k, v in decoder.layers.state_dict().items()},
                "optimizer": optimizer.state_dict(), "args": {k: (str(v) if isinstance(v, Path) else v)
                                                              for k, v in vars(args).items()},
                "arch": encoder.arch, "encoder": encoder_info, "data": data, "precision": precision,
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate()}}

    writer = _tensorboard(run_dir)
    stop = StopFlag()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    bar = tqdm(total=args.steps, initial=step, disable=args.no_progress, unit="it", dynamic_ncols=True)
    t0, t_step = time.time(), step
    with (run_dir / "metrics.jsonl").open("a") as log:
        for content, style in loader:
            content = content.to(device, non_blocking=True).contiguous(memory_format=fmt)
            style = style.to(device, non_blocking=True).contiguous(memory_format=fmt)
            for g in optimizer.param_groups:
                g["lr"] = lr_at(step, args.lr, args.lr_decay)
            with autocast:
                lc, ls_layers, _ = loss_fn(models, content, style)
                ls = torch.stack(ls_layers).sum()
                loss = lc + args.style_weight * ls
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            bar.update(1)
            if step % args.log_every == 0 or step == args.steps:
                rate = (step - t_step) / max(time.time() - t0, 1e-9)
                rec = {"step": step, "loss": loss.item(), "content": lc.item(), "style": ls.item(),
                       "lr": optimizer.param_groups[0]["lr"], "it_s": rate, "time": time.time()}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{rec['loss']:.3f}", c=f"{rec['content']:.3f}", s=f"{rec['style']:.3f}")
                if writer:
                    for k in ("loss", "content", "style", "lr"):
                        writer.add_scalar(k, rec[k], step)
            if step % args.sample_every == 0 or step == args.steps:
                write_samples(models, val_c, val_s, run_dir / f"sample-{step:08d}.png", device)
            if step % args.checkpoint_every == 0 or step == args.steps or stop.signum:
                save_checkpoint(run_dir, state(), args.keep)
            if stop.signum:
                bar.close()
                print(f"stopped by signal {stop.signum} at step {step}; checkpoint saved in {run_dir}", file=sys.stderr)
                return 128 + stop.signum
    bar.close()
    if not checkpoints(run_dir) or load_checkpoint(checkpoints(run_dir)[-1])["step"] != step:
        save_checkpoint(run_dir, state(), args.keep)
    return 0


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tb"))


@torch.no_grad()
def write_samples(models: Models, contents: Tensor, styles: Tensor, path: Path, device: torch.device) -> None:
    """A grid with one row per pair: content | style | output."""
    was_training = models.decoder.training
    models.decoder.eval()
    c, s = contents.to(device), styles.to(device)
    t = ops.adain(models.encoder(c), ops.channel_stats(models.encoder(s)))
    out = models.decoder(t, tuple(c.shape[-2:])).float().clamp(0, 1)
    rows = torch.stack([c, s, out], 1).flatten(0, 1).cpu()
    save_image(make_grid(rows, nrow=3, padding=2), path)
    models.decoder.train(was_training)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``adain train``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["export"]:
        from .export import main as export_main

        return export_main(argv[1:])
    args = build_parser().parse_args(argv)
    if not args.resume and (args.content_dir is None or args.style_dir is None):
        build_parser().error("--content-dir and --style-dir are required (unless --resume)")
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        return train(args)


if __name__ == "__main__":
    sys.exit(main())
