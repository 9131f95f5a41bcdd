"""The defaults of ``adain train`` that depend on the encoder and the loss: the recipes of docs/training.md."""

from __future__ import annotations

import argparse

from ..bundles.layouts import decoder_extra_convs, decoder_layer, decoder_skip_strength, decoder_skips
from ..errors import InputError
from ..net import FEATURE_LAYERS, skip_strengths

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


def recipe_help(key: str) -> str:
    """The help text of a recipe option: its defaults for vgg16 and vgg19 encoders."""

    def show(value: object) -> str:
        return ",".join(map(str, value)) or "none" if isinstance(value, list) else str(value)

    return f"default: {show(RECIPES['vgg16'][key])} for vgg16 encoders, {show(RECIPES['vgg19'][key])} for vgg19"


def _inherited_strength(file_strength: float | tuple[float, ...], file_skips: tuple[str, ...], skips: list[str]
                         ) -> float | list[float]:
    """The skip strength a run takes from its --init-decoder: the file's for the skips it has, 1 for those grown
    onto it (a deepened file's own layer among them, which it was always fed whole)."""
    own = dict(zip(file_skips, skip_strengths(file_strength, file_skips), strict=True))
    values = [own.get(name, 1.0) for name in skips]
    return values[0] if len(set(values)) == 1 else values


def fill_recipe_defaults(args: argparse.Namespace, arch: str) -> None:
    """What was not given: the --init-decoder's layer, skips, extra convs and skip strength, else :data:`RECIPES` of the
    encoder's architecture (and full-strength skips); the loss's weights from :data:`LOSS_DEFAULTS`.
    InputError for a skip strength without skips, for more or fewer strengths than skips, or for content layers
    deeper than the decoder's."""
    if args.init_decoder is not None:
        args.layer = args.layer or decoder_layer(args.init_decoder)
        file_skips = decoder_skips(args.init_decoder)
        args.skips = list(file_skips) if args.skips is None else args.skips
        if args.skip_strength is None and args.skips:
            args.skip_strength = _inherited_strength(decoder_skip_strength(args.init_decoder), file_skips, args.skips)
    if getattr(args, "extra_convs", None) is None:
        args.extra_convs = 0 if args.init_decoder is None else decoder_extra_convs(args.init_decoder)
    for key, value in RECIPES[arch].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    for key, value in LOSS_DEFAULTS[args.loss].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.skip_strength is None:
        args.skip_strength = 1.0
    elif args.skip_strength != 1.0 and not args.skips:
        raise InputError("--skip-strength needs a decoder with skips (--skips)")
    if any(FEATURE_LAYERS.index(name) > FEATURE_LAYERS.index(args.layer) for name in args.content_layers or ()):
        raise InputError(f"--content-layers: none may be deeper than the decoder's layer ({args.layer})")
    if isinstance(args.skip_strength, list | tuple) and len(args.skip_strength) != len(args.skips):
        raise InputError(f"--skip-strength: {len(args.skip_strength)} strengths for {len(args.skips)} skips "
                         f"({','.join(args.skips)}); give one for all, or one per skip")
