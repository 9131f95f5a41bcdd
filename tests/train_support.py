"""Helpers for the training and export tests: tiny image folders and short runs on random weights."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from PIL import Image

from adain.train import cli as train
from tests.conftest import one_thread


def write_images(folder: Path, n: int, seed: int, size: tuple[int, int] = (40, 48)) -> list[Path]:
    """``n`` smooth random RGB JPEGs (H, W = ``size``) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    paths = []
    for i in range(n):
        low = torch.rand(1, 3, size[0] // 8, size[1] // 8, generator=g)
        img = F.interpolate(low, size=size, mode="bilinear", align_corners=False)[0]
        img = (img + 0.1 * torch.rand(img.shape, generator=g)).clamp(0, 1)
        path = folder / f"{i:02d}.jpg"
        Image.fromarray((img * 255).byte().permute(1, 2, 0).numpy()).save(path, quality=90)
        paths.append(path)
    return paths


@dataclass
class TinyData:
    """Image folders, a random-weight VGG16 encoder file and an ADAIN_HOME for a test run."""

    content: Path
    style: Path
    encoder: Path
    home: Path


def make_tiny_data(root: Path, encoder: Path, n_content: int = 6, n_style: int = 6,
                   size: tuple[int, int] = (40, 48)) -> TinyData:
    """Folders of tiny images under ``root``."""
    data = TinyData(root / "content", root / "style", encoder, root / "adain_home")
    write_images(data.content, n_content, seed=1, size=size)
    write_images(data.style, n_style, seed=2, size=size)
    return data


DEFAULTS = {"steps": 2, "batch-size": 2, "resize": 32, "crop": 32, "holdout-content": 2, "holdout-style": 2,
            "workers": 0, "checkpoint-every": 1000, "log-every": 1, "sample-every": 0, "eval-every": 0,
            # fixed here rather than the vgg16 recipe's (adain.train.recipes.RECIPES), whose 500 reconstruction steps
            # would make every short test run a reconstruction
            "loss": "hybrid", "style-weight": 10, "lr": 1e-4, "warmup": 0, "recon-steps": 0}


def train_argv(data: TinyData, run_dir: Path, **options: object) -> list[str]:
    """Arguments of a short fp32 CPU run; ``options`` (underscores for dashes) override :data:`DEFAULTS`;
    ``True`` gives a bare flag, ``None`` drops the option."""
    opts = {**DEFAULTS, **{k.replace("_", "-"): v for k, v in options.items()}}
    argv = ["--content-dir", str(data.content), "--style-dir", str(data.style), "--output-dir", str(run_dir),
            "--encoder", str(data.encoder), "--arch", "vgg16", "--device", "cpu", "--precision", "fp32",
            "--no-progress"]
    for key, value in opts.items():
        if value is True:
            argv.append(f"--{key}")
        elif value is not None:
            argv += [f"--{key}", str(value)]
    return argv


def resume_argv(run_dir: Path, **options: object) -> list[str]:
    """Arguments of ``--resume`` in ``run_dir`` with only ``options`` given."""
    argv = ["--output-dir", str(run_dir), "--resume", "--no-progress"]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def run_train(data: TinyData, argv: list[str]) -> int:
    """``adain train ARGV`` in this process on one thread, with ADAIN_HOME in the test's folder."""
    with mock.patch.dict(os.environ, {"ADAIN_HOME": str(data.home)}), one_thread():
        return train.main(argv)


def subprocess_env(data: TinyData) -> dict[str, str]:
    """Environment for ``python -m adain.train`` in a child process."""
    return {**os.environ, "ADAIN_HOME": str(data.home), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


PYTHON = sys.executable
