"""``adain train export RUN_DIR_OR_CKPT -o decoder.safetensors``: a decoder file and its model card.

The decoder is written as canonical safetensors (``arch`` in the metadata), read
back with :func:`adain.bundles.layouts.build_decoder`, and described by a JSON model
card next to it (``decoder.json``): the encoder, the data, the training settings,
the final training losses from ``metrics.jsonl``, and losses on held-out pairs
next to the references they can be read against.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path

import torch

from .. import __version__
from ..arguments import count_arg
from ..bundles.download import sha256_file
from ..bundles.layouts import build_decoder, load_or_grow, save_safetensors
from ..bundles.manifest import listed_as, manifest_path
from ..errors import AdainError, InputError, WeightsError
from ..files import atomic_path, write_atomic
from ..net import Decoder
from .losses import held_out_losses
from .mixing import mix_arg, mix_decoders
from .runs import average_checkpoints, latest_checkpoint, load_checkpoint, read_training_log
from .setup import HELD_OUT_SEED, held_out_pairs, init_models

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
WINDOW = 10  # training log records averaged for the final training losses
CARD_FORMAT = "adain-decoder-card/1"
# What the decoder was trained to minimise, at the exported step (``changed_on_resume`` says since when)
OBJECTIVE_ARGS = ("layer", "skips", "extra_convs", "loss", "style_weight", "structure_weight", "layout_weight",
                  "grid_weight", "colour_weight", "texture_weight", "features_weight", "coarse_weight", "skip_strength",
                  "recon_steps", "recon_every", "warmup", "content_layers", "grain", "patch_weight", "strokes")


def objective_of(args: dict) -> dict:
    """The :data:`OBJECTIVE_ARGS` of a run's arguments; a term its version of ``adain train`` did not have yet
    reads as today's default (off), not as null (no extra convs, for the option whose default is inherited)."""
    from .cli import build_parser

    defaults = build_parser()
    return {k: args[k] if k in args else 0 if k == "extra_convs" else defaults.get_default(k) for k in OBJECTIVE_ARGS}


LOSS_DEFINITIONS = (
    "t = AdaIN(L(content), L(style)) is the decoder's input, L its layer (relu4_1 as in the paper, or the "
    "decoder's layer in the model card). content = MSE(L(output), t); "
    "style = sum over relu1_1..relu4_1 of MSE(channel means) + MSE(channel stds) between output and style image; "
    "total = content + style_weight * style. Outputs are not clamped to [0, 1], as in training."
)
HELD_OUT_MEANING = {
    "pairs": "pair i = held-out content i mod C and held-out style i mod S, from the first `pairs` held-out files "
             "of each (never trained on); one crop per image at the training resize/crop, positions fixed by "
             "crop_seed; losses are means over the pairs",
    "trained": "this decoder (the exported weights, as stored)",
    "step_0": "the weights training started from: a freshly initialised decoder with the run's seed, or the "
              "run's --init-decoder file (training.init_decoder)",
    "content_as_output": "the content image itself as the output (no stylisation): a decoder ignoring the style",
    "target.content": "0 by definition: t matches itself. t is a feature map, not an image, so no output reaches it",
    "target.content_floor": "mean(min(t, 0)^2): a lower bound on the content loss of any image, since ReLU "
                            "features are >= 0 while t can be negative",
    "target.style_<layer>": "the AdaIN layer's term of the style loss for t itself: AdaIN gives t the style's "
                            "channel means exactly and its stds up to a factor sqrt(var / (var + eps)) of the "
                            "content's channel variance, so it is small, but not 0 where a content channel is "
                            "(nearly) constant. Compare with that layer's style_layers term of the decoders; the "
                            "other terms do not exist for t, a feature map rather than an image",
}


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``adain train export``."""
    p = argparse.ArgumentParser(prog="adain train export",
                                description="Write a run's decoder as safetensors, with a JSON model card next to it.")
    p.add_argument("source", type=Path, help="run folder (its newest checkpoint that loads) or a checkpoint file")
    p.add_argument("-o", "--output", type=Path, required=True, help="decoder file to write (.safetensors)")
    p.add_argument("--card", type=Path, help="model card to write (default: OUTPUT with .json)")
    p.add_argument("--force", action="store_true",
                   help="write OUTPUT even when it is a file of the weights manifest (the shipped decoder, say)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="fp16", help="weight precision of the file")
    p.add_argument("--encoder", type=Path,
                   help="encoder file for the evaluation, when the run's is elsewhere (its sha256 must match)")
    p.add_argument("--average", type=count_arg(1), default=1, metavar="N",
                   help="write the mean of the decoder weights of the chosen checkpoint and the N-1 before it "
                        "(smooths the step-to-step noise of the weights; docs/training.md)")
    p.add_argument("--mix", type=mix_arg, action="append", default=[], metavar="FILE:WEIGHT",
                   help="blend in decoder FILE's weights with this weight, after --average; repeatable; the run "
                        "keeps 1 - the sum (e.g. the --init-decoder file, to trade style for shape: "
                        "docs/training.md)")
    p.add_argument("--eval-pairs", type=count_arg(1), default=16, help="held-out pairs to evaluate")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    p.add_argument("--batch-size", type=count_arg(1), default=8, help="batch size of the evaluation")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (evaluation)")
    return p


def refuse_manifest_file(output: Path) -> None:
    """An InputError when ``output`` is a file of the weights manifest: replacing the shipped decoder (and its card)
    breaks every later default stylize."""
    what = listed_as(output)
    if what is not None:
        raise InputError(f"{output} is {what} in the manifest ({manifest_path()}): write the decoder elsewhere, "
                         "or add --force to replace it")


def load_source(source: Path) -> tuple[Path, dict]:
    """A run folder's newest loadable checkpoint, or the checkpoint file ``source``."""
    if source.is_dir():
        return latest_checkpoint(source)
    if not source.is_file():
        raise InputError(f"{source}: no such run folder or checkpoint")
    return source, load_checkpoint(source)


def write_decoder(state: dict, output: Path, dtype: str) -> Decoder:
    """Write the checkpoint's decoder to ``output``; returns it as read back from the file."""
    arch, layer = state["arch"], state.get("layer", "relu4_1")
    decoder = Decoder(arch, layer, state.get("skips", ()), state.get("skip_strength", 1.0),
                      state["args"].get("grain", 0.0), state["args"].get("strokes", 0.0), state.get("extra_convs", 0))
    decoder.layers.load_state_dict(state["decoder"])
    if dtype == "fp16":
        peak = max(v.abs().max().item() for v in state["decoder"].values())
        if peak > torch.finfo(torch.float16).max:
            raise InputError(f"a weight of magnitude {peak:g} does not fit fp16: use --dtype fp32 or bf16")
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        save_safetensors(decoder, tmp, arch, DTYPES[dtype], {"step": str(state["step"]), "layer": layer,
                                                              "encoder_sha256": str(state["encoder"].get("sha256"))})
    return build_decoder(output, arch)


def training_summary(records: list[dict], step: int, batch_size: int) -> tuple[dict | None, dict | None]:
    """(final training losses, throughput) from the training log's records up to ``step``; None where unknown.

    Records written since the interval averaging carry ``steps_averaged``; older ones are single batches.
    """
    by_step = {r["step"]: r for r in records if r.get("split", "train") == "train" and "loss" in r
               and r["step"] <= step}
    last = [by_step[s] for s in sorted(by_step)][-WINDOW:]
    if not last:
        return None, None
    weights = [r.get("steps_averaged", 1) for r in last]

    def mean(key: str) -> float:
        return sum(r[key] * w for r, w in zip(last, weights, strict=True)) / sum(weights)

    losses = {"content": mean("content"), "style": mean("style"), "total": mean("loss"),
              "from_step": last[0]["step"], "to_step": last[-1]["step"], "batches": sum(weights),
              "meaning": f"training-batch losses of the last {len(last)} records of metrics.jsonl, weighted by the "
                         f"batches each averages ({sum(weights)} batches in all)"}
    rates = [r["it_s"] for r in last if r.get("it_s")]
    throughput = None
    if rates:
        it_s = statistics.median(rates)
        throughput = {"it_s": it_s, "images_s": it_s * batch_size,
                      "meaning": f"median over the same {len(rates)} records; wall-clock, including data loading, "
                                 "samples and checkpoints"}
    return losses, throughput


def evaluate(state: dict, encoder: Path | None, exported: Decoder, n_pairs: int, batch_size: int,
             device: str) -> dict:
    """Held-out losses of the exported decoder, of the step-0 decoder, and the references (see HELD_OUT_MEANING)."""
    from ..devices import resolve_device

    args, info = state["args"], state["encoder"]
    if encoder is None and "file" in info:
        encoder = Path(info["file"])
    layer = state.get("layer", "relu4_1")
    models, found = init_models(args["seed"], None if encoder else info.get("model"), encoder, state["arch"], layer,
                                state.get("skips", ()), state.get("skip_strength", 1.0), state.get("extra_convs", 0))
    if found["sha256"] != info.get("sha256"):
        raise WeightsError(f"encoder sha256 {found['sha256']} is not the run's ({info.get('sha256')})")
    if state.get("init_decoder"):
        load_or_grow(models.decoder, _verified(state["init_decoder"]))
    pairs = held_out_pairs(state["data"], args["resize"], args["crop"], n_pairs)
    if not len(pairs):
        raise InputError("no readable held-out pairs (is the data where the checkpoint says?)")
    dev = resolve_device(device)
    models.encoder.to(dev)
    decoders = {"trained": exported.to(dev), "step_0": models.decoder.to(dev)}
    result = held_out_losses(models.encoder, decoders, pairs.content, pairs.style, batch_size)
    w = args["style_weight"]
    return {
        "pairs": result.pairs, "resize": args["resize"], "crop": args["crop"], "crop_seed": HELD_OUT_SEED,
        "style_weight": w, "definitions": LOSS_DEFINITIONS,
        "trained": result.decoders["trained"].as_dict(w), "step_0": result.decoders["step_0"].as_dict(w),
        "content_as_output": result.content_as_output.as_dict(w),
        "target": {"content": 0.0, "content_floor": result.target_content_floor,
                   f"style_{layer}": result.target_style},
        "unreadable": [p for _, p in pairs.unreadable], "meaning": HELD_OUT_MEANING,
    }


def _verified(init: dict) -> Path:
    """The run's --init-decoder file, if it is still there unchanged."""
    path = Path(init["file"])
    if not path.is_file() or sha256_file(path) != init["sha256"]:
        raise WeightsError(f"the run's --init-decoder {path} is gone or changed (sha256 {init['sha256'][:12]}...): "
                           "it is the step_0 reference")
    return path


def lineage(decoder_file: dict) -> dict:
    """``decoder_file`` (a decoder's file and sha256) with, from that file's own card, the steps behind it; the file
    by its name (its folder is the exporting machine's own, and the sha256 identifies it)."""
    card_path = Path(decoder_file["file"]).with_suffix(".json")
    try:
        card = json.loads(card_path.read_text())
        prior = card["training"]["steps"] if card["decoder"]["sha256"] == decoder_file["sha256"] else None
    except (OSError, ValueError, KeyError, TypeError):
        prior = None
    return {**decoder_file, "file": Path(decoder_file["file"]).name, "steps": prior,
            "steps_meaning": f"training steps behind that file, from its model card ({card_path.name}); null when no "
                             "matching card was found"}


def data_counts(data: dict) -> dict:
    """Per kind: root, usable train and held-out images, skipped files (unreadable at the scan or later)."""
    counts = {}
    for kind, d in data.items():
        bad = set(d.get("unreadable", []))
        counts[kind] = {"root": d["root"], "train": len(set(d["train"]) - bad),
                        "held_out": len(set(d["held_out"]) - bad), "skipped": d["skipped"]}
    return counts


def model_card(ckpt: Path, state: dict, output: Path, dtype: str, held_out: dict | None, why_not: str | None
               ) -> dict:
    """The JSON model card of an exported decoder."""
    args, step, init = state["args"], state["step"], state.get("init_decoder")
    final, throughput = training_summary(read_training_log(ckpt.parent), step, args["batch_size"])
    return {
        "format": CARD_FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "adain_version": __version__,
        "decoder": {"file": output.name, "sha256": sha256_file(output), "arch": state["arch"],
                    "layer": state.get("layer", "relu4_1"), "dtype": dtype},
        "encoder": state["encoder"],
        "checkpoint": {"file": str(ckpt), "step": step, "averaged_steps": state.get("averaged_steps", [step]),
                       "mixed_with": [lineage(m) for m in state.get("mixed_with", [])]},
        "training": {"steps": step, "planned_steps": args["steps"], "batch_size": args["batch_size"],
                     "images_seen": step * args["batch_size"], "resize": args["resize"], "crop": args["crop"],
                     "lr": args["lr"], "lr_decay": args["lr_decay"], "style_weight": args["style_weight"],
                     "seed": args["seed"], "precision": state["precision"], "device": state.get("device"),
                     "objective": objective_of(args),
                     "changed_on_resume": state.get("changes", []),
                     "throughput": throughput, "init_decoder": lineage(init) if init else None},
        "data": data_counts(state["data"]),
        "final_training_losses": final,
        "held_out": held_out if held_out is not None else {"skipped": why_not},
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``adain train export``."""
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            if not args.force:
                refuse_manifest_file(args.output)
            ckpt, state = load_source(args.source)
            if args.average > 1:
                state = average_checkpoints(ckpt, state, args.average)
            if args.mix:
                state = mix_decoders(state, args.mix)
            decoder = write_decoder(state, args.output, args.dtype)
            held_out, why_not = None, "--no-eval"
            if not args.no_eval:
                try:
                    held_out = evaluate(state, args.encoder, decoder, args.eval_pairs, args.batch_size, args.device)
                except AdainError as exc:
                    why_not = str(exc)
                    print(f"adain train export: warning: held-out evaluation skipped: {exc}", file=sys.stderr)
            card = model_card(ckpt, state, args.output, args.dtype, held_out, why_not)
            card_path = args.card or args.output.with_suffix(".json")
            write_atomic(card_path, json.dumps(card, indent=2) + "\n")
    except AdainError as exc:
        print(f"adain train export: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} (step {state['step']}) and {card_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
