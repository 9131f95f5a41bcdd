"""``python -m adain.train.calibrate``: an encoder's normalisation scales (adain.bundles.normalize), measured on
the training photos."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..bundles.layouts import build_encoder
from ..bundles.normalize import mean_activations
from ..images import resize_shorter
from .data import list_images, read_rgb, split


def main(argv: list[str] | None = None) -> int:
    """``python -m adain.train.calibrate``: an encoder's scales, measured on the training photos, as JSON."""
    p = argparse.ArgumentParser(prog="python -m adain.train.calibrate", description=main.__doc__)
    p.add_argument("--encoder", type=Path, required=True, help="the unnormalised encoder file to measure")
    p.add_argument("--arch", choices=("vgg19", "vgg16"), default="vgg16")
    p.add_argument("--photos", type=Path, required=True, help="folder of photos; the held-out split is left out")
    p.add_argument("--holdout", type=int, default=50, help="photos held out, as by `adain train --holdout-content`")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out split, as by `adain train --seed`")
    p.add_argument("--size", type=int, default=256, help="shorter side the photos are resized to")
    p.add_argument("-o", "--output", type=Path, required=True)
    args = p.parse_args(argv)
    encoder = build_encoder(args.encoder, args.arch)
    train, _ = split(list_images(args.photos)[0], args.holdout, args.seed)
    scales = mean_activations(encoder, (resize_shorter(read_rgb(f).float() / 255, args.size) for f in train))
    record = {"format": "adain-encoder-scales/1", "arch": args.arch, "photos": len(train), "size": args.size,
              "meaning": "per 3x3 conv (key prefix in the canonical encoder): each channel's mean activation after "
                         "its ReLU over the photos; the normalised encoder divides that channel by it",
              "scales": scales}
    args.output.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{args.output}: scales of {len(scales)} convs from {len(train)} photos", flush=True)
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
