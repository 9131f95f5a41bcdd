"""A training run's folder: checkpoints and the training log (with TensorBoard when installed).

Checkpoints are ``ckpt-<step>.pt``, written to a hidden temporary name, flushed
to disk and renamed, so a process killed at any moment leaves either the
complete new file or none: only complete files carry the checkpoint name.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import time
import warnings
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from ..errors import AdainError
from ..files import atomic_path, remove_temp_files, write_atomic
from .losses import Losses

CHECKPOINT_RE = re.compile(r"ckpt-(\d+)\.pt")
CHECKPOINT_GLOB = "ckpt-*.pt"
TRAINING_LOG = "metrics.jsonl"  # the name of the first release, which resumed runs keep appending to
# What every checkpoint holds (the format of the first release; later keys are optional).
REQUIRED_KEYS = ("step", "decoder", "optimizer", "args", "arch", "encoder", "data", "precision", "rng")


class CheckpointError(AdainError):
    """No usable checkpoint."""


class TrainingDiverged(AdainError):
    """The loss became NaN or infinite."""


def atomic_save(obj: object, path: Path) -> None:
    """torch.save to a temporary name, flushed to disk, then renamed: a reader never sees half a file."""
    with atomic_path(path, durable=True) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoints, oldest first (by step)."""
    return sorted((p for p in run_dir.glob(CHECKPOINT_GLOB) if CHECKPOINT_RE.fullmatch(p.name)), key=_step_of)


def load_checkpoint(path: Path) -> dict:
    """Load and sanity-check one checkpoint (tensors and plain Python values only)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({why})") from None
    missing = [k for k in REQUIRED_KEYS if k not in state] if isinstance(state, dict) else list(REQUIRED_KEYS)
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint (missing {', '.join(missing)})")
    return state


def latest_checkpoint(run_dir: Path) -> tuple[Path, dict]:
    """The newest checkpoint that loads; an unreadable newer one is skipped with a warning."""
    found = checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"{run_dir}: no checkpoint (ckpt-*.pt) found")
    for path in reversed(found):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as exc:
            warnings.warn(f"{exc}; trying an older one", stacklevel=2)
    raise CheckpointError(f"{run_dir}: none of the {len(found)} checkpoints loads")


def average_checkpoints(newest: Path, state: dict, count: int) -> dict:
    """``state`` (checkpoint file ``newest``, as loaded) with its decoder weights averaged over it and the
    ``count - 1`` checkpoints before it in its folder (Polyak averaging: smooths the step-to-step noise of the
    weights).

    The checkpoints must come from one run (the same architecture, layer and encoder); the result records the
    steps averaged under ``averaged_steps``.
    """
    older = [p for p in checkpoints(newest.parent) if _step_of(p) < state["step"]]
    paths = [*older[len(older) - count + 1:], newest] if count > 1 else [newest]
    if len(paths) < count:
        raise CheckpointError(f"{newest.parent}: {count} checkpoints to average, only {len(paths)} up to step "
                              f"{state['step']}")
    total = {k: v.double() for k, v in state["decoder"].items()}
    steps = [state["step"]]
    for path in paths[:-1]:
        other = load_checkpoint(path)
        for key in ("arch", "layer", "encoder"):
            if other.get(key) != state.get(key):
                raise CheckpointError(f"{path}: another run's checkpoint ({key} differs from {newest.name}'s)")
        for k in total:
            total[k] += other["decoder"][k].double()
        steps.append(other["step"])
    decoder = {k: (v / len(paths)).to(state["decoder"][k].dtype) for k, v in total.items()}
    return {**state, "decoder": decoder, "averaged_steps": sorted(steps)}


def jsonable(value: object) -> object:
    """Paths (and lists of them) as strings, for checkpoints."""
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def _step_of(path: Path) -> int:
    return int(CHECKPOINT_RE.fullmatch(path.name).group(1))


def save_checkpoint(run_dir: Path, state: dict, keep: int) -> Path:
    """Write ``ckpt-<step>.pt`` and drop all but the newest ``keep`` (>= 1)."""
    path = run_dir / f"ckpt-{state['step']:08d}.pt"
    atomic_save(state, path)
    for old in checkpoints(run_dir)[: -max(keep, 1)]:
        old.unlink(missing_ok=True)
    return path


def remove_stale_tmp(run_dir: Path) -> None:
    """Delete the temporary files of saves that a killed process left behind."""
    remove_temp_files(run_dir, CHECKPOINT_GLOB)


def read_training_log(run_dir: Path) -> list[dict]:
    """The records of ``metrics.jsonl`` (a torn last line is ignored); [] when there is none."""
    try:
        lines = (run_dir / TRAINING_LOG).read_text().splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def trim_training_log(run_dir: Path, step: int) -> None:
    """Drop the records after ``step`` (logged after the checkpoint a run resumes from; they will be redone)."""
    path = run_dir / TRAINING_LOG
    if not path.exists():
        return
    kept = [r for r in read_training_log(run_dir) if r.get("step", 0) <= step]
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))


class TrainingLog:
    """Appends to ``metrics.jsonl`` (and TensorBoard when installed): training losses averaged over each
    logging interval, and held-out losses."""

    def __init__(self, run_dir: Path, style_weight: float) -> None:
        self.style_weight = style_weight
        self.file = (run_dir / TRAINING_LOG).open("a")
        self.writer = _tensorboard(run_dir)
        self._sum: Tensor | None = None
        self._extra: dict[str, Tensor] = {}
        self._n, self._since = 0, time.time()

    def add(self, content: Tensor, style_layers: list[Tensor], extra: dict[str, Tensor] | None = None) -> None:
        """Accumulate one step's losses (on the device: no synchronisation); ``extra``: further weighted terms
        of the total (colour, texture), logged under their names."""
        v = torch.stack([content, *style_layers]).detach().float()
        self._sum = v if self._sum is None else self._sum + v
        for name, value in (extra or {}).items():
            self._extra[name] = self._extra.get(name, 0.0) + value.detach().float()
        self._n += 1

    def log_train(self, step: int, lr: float) -> dict:
        """Write the interval's mean losses and throughput; raises :class:`TrainingDiverged` on NaN/inf."""
        content, *layers = (self._sum / self._n).tolist()
        losses = Losses(content, layers).as_dict(self.style_weight)
        extra = {name: float(v) / self._n for name, v in self._extra.items()}
        losses["total"] += sum(extra.values())
        losses.update(extra)
        if not math.isfinite(losses["total"]):
            raise TrainingDiverged(f"the loss is {losses['total']} at step {step}; resume from an earlier checkpoint "
                                   "with a lower --lr, or use --precision fp32")
        now = time.time()
        rate = self._n / max(now - self._since, 1e-9)
        rec = {"step": step, "loss": losses.pop("total"), **losses, "lr": lr, "it_s": rate, "steps_averaged": self._n,
               "time": now}
        self._sum, self._extra, self._n, self._since = None, {}, 0, now
        self._write(rec, {k: rec[k] for k in ("loss", "content", "style", "lr", "it_s")})
        return rec

    def log_held_out(self, step: int, pairs: int, losses: Losses) -> None:
        """Write the held-out losses of the decoder being trained."""
        d = losses.as_dict(self.style_weight)
        self._write({"step": step, "split": "held_out", "pairs": pairs, **d, "time": time.time()},
                    {f"held_out/{k}": d[k] for k in ("content", "style", "total")})

    def _write(self, rec: dict, scalars: dict[str, float]) -> None:
        self.file.write(json.dumps(rec) + "\n")
        self.file.flush()
        if self.writer:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, rec["step"])

    def close(self) -> None:
        """Flush and close the log (and TensorBoard)."""
        self.file.close()
        if self.writer:
            self.writer.close()


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tb"))
