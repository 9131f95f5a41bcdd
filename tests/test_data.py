"""Training data: scanning folders, the held-out split, deterministic samples, unreadable files."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from adain.train.data import (
    MAX_ATTEMPTS,
    PairDataset,
    StreamSampler,
    UnreadableImage,
    collate,
    fixed_pairs,
    list_images,
    read_rgb,
    split,
)
from tests.train_support import write_images


def truncated_jpeg(path: Path, source: Path) -> Path:
    """A JPEG cut in half: its header passes ``Image.verify``, decoding fails."""
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture
def folders(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    return write_images(tmp_path / "c", 4, seed=1), write_images(tmp_path / "s", 3, seed=2)


def test_list_images_recursive_and_skips_unreadable(tmp_path: Path) -> None:
    good = write_images(tmp_path, 2, seed=0) + write_images(tmp_path / "sub" / "deeper", 1, seed=3)
    (tmp_path / "garbage.jpg").write_bytes(b"not an image at all")
    (tmp_path / "empty.PNG").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("ignored: not an image suffix")
    with pytest.warns(UserWarning, match="skipping unreadable image") as record:
        found, bad = list_images(tmp_path)
    assert found == sorted(good)
    assert sorted(p.name for p in bad) == ["empty.PNG", "garbage.jpg"]
    assert len(record) == 2


def test_read_rgb_raises_unreadable_for_truncated_jpeg(tmp_path: Path) -> None:
    src = write_images(tmp_path, 1, seed=0)[0]
    bad = truncated_jpeg(tmp_path / "cut.jpg", src)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list_images(tmp_path)[1] == []  # the scan cannot tell...
    with pytest.raises(UnreadableImage, match="cut.jpg"):
        read_rgb(bad)  # ...decoding can
    assert read_rgb(src).shape == (3, 40, 48)


def test_split_is_seeded_and_disjoint() -> None:
    files = [Path(f"{i}.jpg") for i in range(10)]
    train, held = split(files, 3, seed=5)
    assert len(held) == 3 and sorted(train + held) == sorted(files)
    assert split(files, 3, seed=5) == (train, held)
    assert split(files, 3, seed=6)[1] != held


def test_samples_are_a_function_of_seed_and_index(folders: tuple[list[Path], list[Path]]) -> None:
    contents, styles = folders
    a, b = PairDataset(contents, styles, 32, 24, seed=0), PairDataset(contents, styles, 32, 24, seed=0)
    for g in (0, 5, 13):
        x, y = a[g], b[g]
        assert torch.equal(x.content, y.content) and torch.equal(x.style, y.style)
        assert x.content.shape == (3, 24, 24) and 0 <= x.content.min() and x.content.max() <= 1
    assert not torch.equal(a[0].content, PairDataset(contents, styles, 32, 24, seed=1)[0].content)


def test_each_epoch_visits_every_file_once(folders: tuple[list[Path], list[Path]], tmp_path: Path) -> None:
    contents = write_images(tmp_path / "square", 4, seed=3, size=(40, 40))
    ds = PairDataset(contents, folders[1], 0, 40, seed=0)  # the crop is the whole image: it identifies the file
    full = [read_rgb(p).float() / 255 for p in contents]

    def which(t: torch.Tensor) -> int:
        return next(i for i, f in enumerate(full) if torch.equal(f, t))

    for epoch in range(2):
        seen = [which(ds[epoch * 4 + i].content) for i in range(4)]
        assert sorted(seen) == [0, 1, 2, 3]


def test_unreadable_file_replaced_and_reported(folders: tuple[list[Path], list[Path]], tmp_path: Path) -> None:
    contents, styles = folders
    bad = truncated_jpeg(tmp_path / "cut.jpg", contents[0])
    ds = PairDataset([bad, *contents[1:]], styles, 32, 24, seed=0)
    reference = PairDataset(contents, styles, 32, 24, seed=0)
    hits = 0
    for g in range(8):  # two epochs: the bad file comes up twice
        sample = ds[g]
        assert sample.content.shape == (3, 24, 24) and torch.isfinite(sample.content).all()
        if sample.unreadable:
            hits += 1
            assert set(sample.unreadable) == {("content", str(bad))}
            assert torch.equal(sample.style, reference[g].style)  # the style partner is kept
        else:
            assert torch.equal(sample.content, reference[g].content)
    assert hits == 2


def test_gives_up_after_too_many_unreadable(tmp_path: Path) -> None:
    src = write_images(tmp_path / "ok", 1, seed=0)[0]
    bad = truncated_jpeg(tmp_path / "cut.jpg", src)
    with pytest.raises(RuntimeError, match=f"{MAX_ATTEMPTS} unreadable content images"):
        PairDataset([bad], [src], 32, 24, seed=0)[0]


def test_collate_gathers_unreadable(folders: tuple[list[Path], list[Path]], tmp_path: Path) -> None:
    contents, styles = folders
    bad = truncated_jpeg(tmp_path / "cut.jpg", styles[0])
    ds = PairDataset(contents, [bad, *styles[1:]], 32, 24, seed=0)
    batch = collate([ds[g] for g in range(3)])  # one epoch of styles: the bad one once
    assert batch.content.shape == batch.style.shape == (3, 3, 24, 24)
    assert batch.unreadable == [("style", str(bad))]


def test_stream_sampler() -> None:
    assert list(StreamSampler(3, 7)) == [3, 4, 5, 6] and len(StreamSampler(3, 7)) == 4
    assert list(StreamSampler(9, 7)) == [] and len(StreamSampler(9, 7)) == 0


def test_fixed_pairs(folders: tuple[list[Path], list[Path]], tmp_path: Path) -> None:
    contents, styles = folders
    pairs = fixed_pairs(contents, styles, 5, 32, 24, seed=0)
    assert len(pairs) == 5 and pairs.unreadable == []
    assert torch.equal(pairs.content[4], pairs.content[0]) and torch.equal(pairs.style[3], pairs.style[0])
    assert not torch.equal(pairs.content[1], pairs.content[0])
    again = fixed_pairs(contents, styles, 5, 32, 24, seed=0)
    assert torch.equal(again.content, pairs.content) and torch.equal(again.style, pairs.style)
    assert len(fixed_pairs(contents[:2], styles[:2], 5, 32, 24, seed=0)) == 2  # only distinct pairs
    bad = truncated_jpeg(tmp_path / "cut.jpg", contents[0])
    skipped = fixed_pairs([bad, *contents[1:]], styles, 3, 32, 24, seed=0)
    assert skipped.unreadable == [("content", str(bad))] and len(skipped) == 3
    assert torch.equal(skipped.content[0], pairs.content[1])  # a crop depends on its file, not its position
    assert len(fixed_pairs([bad], styles, 3, 32, 24, seed=0)) == 0
