"""``adain train --resume``: the newest checkpoint's arguments as defaults, with the run-defining ones kept."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import InputError
from .runs import jsonable, latest_checkpoint

# Arguments that define the run: a resumed run must keep them (the data split, the optimisation).
FIXED_ON_RESUME = ("content_dir", "style_dir", "batch_size", "lr", "lr_decay", "style_weight", "resize", "crop",
                   "holdout_content", "holdout_style", "seed", "init_decoder", "loss", "layer", "skips",
                   "skip_strength", "extra_convs")
NOT_INHERITED = ("output_dir", "resume", "no_progress")  # everything else defaults to the checkpoint's value
PATH_ARGS = ("content_dir", "style_dir", "encoder", "init_decoder", "output_dir")


def as_paths(args: argparse.Namespace, convert: Callable[[Path], Path] = Path) -> None:
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
    as_paths(merged)
    for key in FIXED_ON_RESUME:
        if key in saved and not _same(key, getattr(merged, key), saved[key]):
            raise InputError(f"--{key.replace('_', '-')} cannot change on --resume ({path} has {saved[key]!r})")
    changed = {k: jsonable(v) for k, v in vars(merged).items() if k not in NOT_INHERITED
               and not _same(k, v, saved.get(k, parser.get_default(k)))}
    if changed:  # recorded in every later checkpoint and in the model card
        state["changes"] = [*state.get("changes", []), {"step": state["step"], "args": changed}]
    print(f"resuming {path} at step {state['step']}", file=sys.stderr)
    return merged, state


def check_encoder(resume: dict, arch: str, info: dict) -> None:
    """Refuse to resume with an encoder other than the checkpoint's."""
    if resume["arch"] != arch or resume["encoder"].get("sha256") != info["sha256"]:
        raise InputError(f"the encoder ({arch}, sha256 {info['sha256'][:12]}...) is not the one the checkpoint was "
                         f"trained with ({resume['arch']}, sha256 {str(resume['encoder'].get('sha256'))[:12]}...)")
