"""Weight mixing for ``adain train export --mix FILE:WEIGHT``: a run's decoder blended with decoder files.

The exported weights are ``(1 - sum of WEIGHTs) * run + sum of WEIGHT * FILE``, taken tensor by tensor. This
interpolates between decoders that share their starting point (a run started from FILE with ``--init-decoder``
stays close to it in weight space), trading what each was trained for (docs/training.md).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ..bundles.download import sha256_file
from ..bundles.layouts import (
    decoder_extra_convs,
    decoder_layer,
    decoder_skip_strength,
    decoder_skips,
    load_into,
    read_metadata,
    read_state_dict,
)
from ..errors import InputError, WeightsError
from ..net import Decoder, skip_strengths


@dataclass(frozen=True)
class Mix:
    """One ``--mix FILE:WEIGHT``."""

    file: Path
    weight: float


def mix_arg(text: str) -> Mix:
    """An argparse type: ``FILE:WEIGHT`` with 0 < WEIGHT < 1 (the last colon splits, so FILE may hold colons)."""
    file, sep, weight = text.rpartition(":")
    try:
        value = float(weight)
    except ValueError:
        value = None
    if not sep or not file or value is None:
        raise argparse.ArgumentTypeError(f"expected FILE:WEIGHT, got {text!r}")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"the weight must lie strictly between 0 and 1, got {value:g}")
    return Mix(Path(file), value)


def mix_decoders(state: dict, mixes: list[Mix]) -> dict:
    """``state`` (a checkpoint, as loaded) with its decoder weights mixed with the decoder files of ``mixes``.

    Each file must be a decoder of the run's architecture and layer, trained against the run's encoder where its
    metadata names one. The result records ``mixed_with``: file, sha256 and weight of each.
    """
    total_weight = sum(m.weight for m in mixes)
    if total_weight >= 1:
        raise InputError(f"the --mix weights add up to {total_weight:g}: they must leave the run a share (< 1)")
    own = state["decoder"]
    mixed = {k: v.double() * (1 - total_weight) for k, v in own.items()}
    for mix in mixes:
        other = _checked_decoder(mix.file, state)
        for k in mixed:
            mixed[k] += other[k].double() * mix.weight
    return {**state, "decoder": {k: v.to(own[k].dtype) for k, v in mixed.items()},
            "mixed_with": [{"file": str(m.file), "sha256": sha256_file(m.file), "weight": m.weight} for m in mixes]}


def _checked_decoder(path: Path, state: dict) -> dict:
    """The weights of decoder file ``path``, if it fits the run of ``state``."""
    weights, metadata = read_state_dict(path), read_metadata(path)
    arch, layer = state["arch"], state.get("layer", "relu4_1")
    if metadata.get("arch", arch) != arch:
        raise WeightsError(f"{path}: a {metadata['arch']} decoder, the run's is {arch}")
    if decoder_layer(path, weights) != layer:
        raise WeightsError(f"{path}: decodes {decoder_layer(path, weights)}, the run's decoder decodes {layer}")
    skips, own = tuple(state.get("skips", ())), decoder_skips(path, weights)
    if own != skips:
        raise WeightsError(f"{path}: takes skips {list(own)}, the run's decoder takes {list(skips)}")
    extra, own_extra = state.get("extra_convs", 0), decoder_extra_convs(path, weights)
    if own_extra != extra:
        raise WeightsError(f"{path}: extra convs: {own_extra}, the run's decoder's: {extra}")
    strength, theirs = decoder_skip_strength(path) if skips else 1.0, state.get("skip_strength", 1.0)
    if skip_strengths(strength, skips) != skip_strengths(theirs, skips):
        raise WeightsError(f"{path}: trained with skip strength {strength}, the run's decoder with {theirs}")
    encoder = metadata.get("encoder_sha256", "None")
    if encoder not in ("None", state["encoder"].get("sha256")):
        raise WeightsError(f"{path}: trained against encoder {encoder[:12]}..., not the run's")
    decoder = Decoder(arch, layer, skips, extra_convs=extra)
    load_into(decoder, path, weights)  # keys, shapes, finite values
    return decoder.layers.state_dict()
