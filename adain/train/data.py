"""Training data: image folders, a held-out split, and deterministic random crops.

Sample ``g`` of a run (``g = step * batch + i``) is a pure function of the
seed and ``g``: which images and where the crops fall. So a resumed run sees
exactly the data the uninterrupted run would have seen, whatever the number
of DataLoader workers.

Files are checked cheaply when the folders are scanned (``Image.verify``);
a file that still fails to decode later (a truncated JPEG, say) is replaced
by a seeded random other file of the same kind and reported back with the
batch, so the training process can warn about it and count it once.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Sampler
from torchvision.transforms.v2 import functional as TF

from ..options import IMAGE_SUFFIXES

MAX_ATTEMPTS = 8  # unreadable files replaced in a row before a sample gives up

Unreadable = tuple[str, str]  # (kind: "content" | "style", path)


class UnreadableImage(OSError):
    """An image file that cannot be decoded."""


def list_images(root: str | Path) -> tuple[list[Path], list[Path]]:
    """Image files under ``root`` (recursive, sorted) that pass ``Image.verify``; and the ones that do not."""
    good, bad = [], []
    for path in sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        try:
            with Image.open(path) as im:
                im.verify()
            good.append(path)
        except Exception as exc:  # PIL raises many exception types on corrupt files: any means skip
            warnings.warn(f"skipping unreadable image {path}: {exc}", stacklevel=2)
            bad.append(path)
    return good, bad


def split(files: Sequence[Path], n_holdout: int, seed: int) -> tuple[list[Path], list[Path]]:
    """(train, held-out): a seeded random ``n_holdout`` files are held out."""
    order = list(files)
    random.Random(seed).shuffle(order)
    return sorted(order[n_holdout:]), sorted(order[:n_holdout])


def read_rgb(path: str | Path) -> Tensor:
    """Decode ``path`` as a uint8 RGB tensor (3, H, W); :class:`UnreadableImage` when that fails."""
    try:
        with Image.open(path) as im:
            return TF.pil_to_tensor(im.convert("RGB"))
    except Exception as exc:  # PIL raises many exception types on corrupt files
        raise UnreadableImage(f"{path}: {exc}") from exc


def resize_and_crop(img: Tensor, resize: int, crop: int, rng: random.Random) -> Tensor:
    """Resize the shorter side to ``resize`` (0: keep), then a random ``crop`` square; float in [0, 1].

    Images still smaller than ``crop`` are scaled up to it.
    """
    if resize:
        img = TF.resize(img, [resize], antialias=True)
    if min(img.shape[-2:]) < crop:
        img = TF.resize(img, [crop], antialias=True)
    h, w = img.shape[-2:]
    top, left = rng.randint(0, h - crop), rng.randint(0, w - crop)
    return img[:, top : top + crop, left : left + crop].float().div_(255)


class Sample(NamedTuple):
    """One training pair, and the files that had to be replaced to make it."""

    content: Tensor
    style: Tensor
    unreadable: tuple[Unreadable, ...]


@dataclass
class Batch:
    """A collated batch of :class:`Sample`."""

    content: Tensor
    style: Tensor
    unreadable: list[Unreadable]

    def pin_memory(self) -> Batch:
        """Called by the DataLoader's pin-memory thread."""
        return Batch(self.content.pin_memory(), self.style.pin_memory(), self.unreadable)


def collate(samples: Sequence[Sample]) -> Batch:
    """Stack the crops, gather the replaced files."""
    return Batch(torch.stack([s.content for s in samples]), torch.stack([s.style for s in samples]),
                 [u for s in samples for u in s.unreadable])


class PairDataset(Dataset):
    """Index ``g`` -> :class:`Sample`, deterministic in (seed, g).

    Each kind walks through its files in a fresh seeded shuffle every epoch.
    """

    def __init__(self, contents: Sequence[Path], styles: Sequence[Path], resize: int, crop: int, seed: int) -> None:
        if not contents or not styles:
            raise ValueError("need at least one content and one style image")
        self.files = {"content": list(contents), "style": list(styles)}
        self.resize, self.crop, self.seed = resize, crop, seed
        self._orders: dict[tuple[str, int], list[int]] = {}

    def __len__(self) -> int:  # a virtual, endless stream
        return 2**62

    def _order(self, kind: str, epoch: int) -> list[int]:
        """The shuffled file order of one epoch (the last two epochs of each kind are cached)."""
        key = (kind, epoch)
        if key not in self._orders:
            if len(self._orders) >= 4:
                self._orders.clear()
            order = list(range(len(self.files[kind])))
            random.Random(f"{self.seed}:{kind}:{epoch}").shuffle(order)
            self._orders[key] = order
        return self._orders[key]

    def _candidate(self, kind: str, g: int, attempt: int) -> Path:
        """The file for sample ``g``; for ``attempt`` > 0 a seeded random replacement."""
        files = self.files[kind]
        if attempt == 0:
            epoch, pos = divmod(g, len(files))
            return files[self._order(kind, epoch)[pos]]
        return files[random.Random(f"{self.seed}:{kind}:{g}:retry{attempt}").randrange(len(files))]

    def _crop(self, kind: str, g: int, rng: random.Random, unreadable: list[Unreadable]) -> Tensor:
        for attempt in range(MAX_ATTEMPTS):
            path = self._candidate(kind, g, attempt)
            try:
                img = read_rgb(path)
            except UnreadableImage:
                unreadable.append((kind, str(path)))
                continue
            return resize_and_crop(img, self.resize, self.crop, rng)
        raise RuntimeError(f"sample {g}: {MAX_ATTEMPTS} unreadable {kind} images in a row: {unreadable}")

    def __getitem__(self, g: int) -> Sample:
        rng = random.Random(f"{self.seed}:crop:{g}")
        unreadable: list[Unreadable] = []
        content = self._crop("content", g, rng, unreadable)
        style = self._crop("style", g, rng, unreadable)
        return Sample(content, style, tuple(unreadable))


class StreamSampler(Sampler[int]):
    """Sample indices ``start, start+1, ..., stop-1`` (none when ``stop <= start``)."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, max(start, stop)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass
class Pairs:
    """Fixed (content, style) pairs for validation, and the files that could not be read."""

    content: Tensor
    style: Tensor
    unreadable: list[Unreadable]

    def __len__(self) -> int:
        return len(self.content)


def _fixed_crops(kind: str, files: Sequence[Path], resize: int, crop: int, seed: int,
                 unreadable: list[Unreadable]) -> list[Tensor]:
    """One crop per readable file, its position seeded by (seed, kind, file name)."""
    crops = []
    for path in files:
        try:
            img = read_rgb(path)
        except UnreadableImage:
            unreadable.append((kind, str(path)))
            continue
        crops.append(resize_and_crop(img, resize, crop, random.Random(f"{seed}:{kind}:{Path(path).name}")))
    return crops


def fixed_pairs(contents: Sequence[Path], styles: Sequence[Path], n: int, resize: int, crop: int,
                seed: int) -> Pairs:
    """Up to ``n`` distinct pairs from the first ``n`` files of each list: pair ``i`` is
    (content ``i mod #contents``, style ``i mod #styles``); crops fixed by ``seed``.
    """
    unreadable: list[Unreadable] = []
    c = _fixed_crops("content", contents[:n], resize, crop, seed, unreadable)
    s = _fixed_crops("style", styles[:n], resize, crop, seed, unreadable)
    if not c or not s:
        empty = torch.empty(0, 3, crop, crop)
        return Pairs(empty, empty, unreadable)
    n = min(n, math.lcm(len(c), len(s)))
    return Pairs(torch.stack([c[i % len(c)] for i in range(n)]), torch.stack([s[i % len(s)] for i in range(n)]),
                 unreadable)
