"""Training data: image folders, a held-out split, and deterministic random crops.

Sample ``g`` of a run (``g = step * batch + i``) is a pure function of the
seed and ``g``: which images and where the crops fall. So a resumed run sees
exactly the data the uninterrupted run would have seen, whatever the number
of DataLoader workers.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Sampler
from torchvision.transforms.v2 import functional as TF

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


def list_images(root: str | Path) -> tuple[list[Path], list[Path]]:
    """Image files under ``root`` (recursive, sorted) that open; and the ones that do not."""
    good, bad = [], []
    for path in sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        try:
            with Image.open(path) as im:
                im.verify()
            good.append(path)
        except Exception as exc:  # any failure means: skip this file
            warnings.warn(f"skipping unreadable image {path}: {exc}", stacklevel=2)
            bad.append(path)
    return good, bad


def split(files: Sequence[Path], n_holdout: int, seed: int) -> tuple[list[Path], list[Path]]:
    """(train, held-out): a seeded random ``n_holdout`` files are held out."""
    order = list(files)
    random.Random(seed).shuffle(order)
    held = sorted(order[:n_holdout])
    train = sorted(order[n_holdout:])
    return train, held


def load_crop(path: Path, resize: int, crop: int, rng: random.Random) -> Tensor:
    """Open ``path``, resize the shorter side to ``resize``, take a random ``crop`` square; float [0,1]."""
    with Image.open(path) as im:
        img = TF.pil_to_tensor(im.convert("RGB"))
    if resize:
        img = TF.resize(img, [resize], antialias=True)
    h, w = img.shape[-2:]
    if min(h, w) < crop:
        img = TF.resize(img, [crop], antialias=True)
        h, w = img.shape[-2:]
    top, left = rng.randint(0, h - crop), rng.randint(0, w - crop)
    return img[:, top : top + crop, left : left + crop].float().div_(255)


class PairDataset(Dataset):
    """Index ``g`` -> (content crop, style crop), deterministic in (seed, g)."""

    def __init__(self, contents: Sequence[Path], styles: Sequence[Path], resize: int, crop: int, seed: int) -> None:
        if not contents or not styles:
            raise ValueError("need at least one content and one style image")
        self.contents, self.styles = list(contents), list(styles)
        self.resize, self.crop, self.seed = resize, crop, seed

    def __len__(self) -> int:  # a virtual, endless stream
        return 2**62

    def _pick(self, files: list[Path], g: int, salt: str) -> Path:
        epoch, pos = divmod(g, len(files))
        order = list(range(len(files)))
        random.Random(f"{self.seed}:{salt}:{epoch}").shuffle(order)
        return files[order[pos]]

    def __getitem__(self, g: int) -> tuple[Tensor, Tensor]:
        rng = random.Random(f"{self.seed}:crop:{g}")
        for attempt in range(8):  # a file that fails to decode is replaced by the next one
            c = self._pick(self.contents, g + attempt, "content")
            s = self._pick(self.styles, g + attempt, "style")
            try:
                return load_crop(c, self.resize, self.crop, rng), load_crop(s, self.resize, self.crop, rng)
            except OSError as exc:
                warnings.warn(f"skipping {c} / {s}: {exc}", stacklevel=2)
        raise RuntimeError("too many unreadable images in a row")


class StreamSampler(Sampler[int]):
    """Sample indices ``start, start+1, ..., stop-1``."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def seeded_crops(files: Sequence[Path], resize: int, crop: int, seed: int) -> Tensor:
    """Centre-ish fixed crops of ``files`` (for validation), as one batch."""
    rng = random.Random(seed)
    return torch.stack([load_crop(p, resize, crop, rng) for p in files])
