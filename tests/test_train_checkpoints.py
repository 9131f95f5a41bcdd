"""The run folder: atomic, rotated checkpoints; falling back past a bad one; the metrics log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adain.train import runs
from adain.train.runs import (
    REQUIRED_KEYS,
    CheckpointError,
    TrainingDiverged,
    TrainingLog,
    checkpoints,
    latest_checkpoint,
    load_checkpoint,
    read_training_log,
    remove_stale_tmp,
    save_checkpoint,
    trim_training_log,
)


def state(step: int) -> dict:
    """A small stand-in with the keys of a real checkpoint."""
    return {**dict.fromkeys(REQUIRED_KEYS, {}), "step": step, "decoder": {"1.weight": torch.full((2,), float(step))}}


def test_rotation_keeps_the_newest_by_step(tmp_path: Path) -> None:
    for step in (5, 10, 100_000_000, 20):  # nine digits sort after eight only by number
        save_checkpoint(tmp_path, state(step), keep=2)
    assert [p.name for p in checkpoints(tmp_path)] == ["ckpt-00000020.pt", "ckpt-100000000.pt"]
    path, loaded = latest_checkpoint(tmp_path)
    assert path.name == "ckpt-100000000.pt" and loaded["step"] == 100_000_000


def test_an_interrupted_save_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_checkpoint(tmp_path, state(1), keep=3)

    def torn_save(obj: object, f) -> None:
        f.write(b"PK\x03\x04 the first bytes of a zip")
        raise OSError("No space left on device")

    monkeypatch.setattr(runs.torch, "save", torn_save)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(tmp_path, state(2), keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000001.pt"]
    assert latest_checkpoint(tmp_path)[1]["step"] == 1


def test_stale_temporary_files_are_never_checkpoints(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, state(1), keep=3)
    stale = tmp_path / ".ckpt-00000002.pt.tmp"  # what a SIGKILL during a save leaves
    stale.write_bytes(b"half")
    assert checkpoints(tmp_path) == [tmp_path / "ckpt-00000001.pt"]
    remove_stale_tmp(tmp_path)
    assert not stale.exists() and checkpoints(tmp_path) == [tmp_path / "ckpt-00000001.pt"]


def test_latest_checkpoint_falls_back_past_unreadable_ones(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        latest_checkpoint(tmp_path)
    save_checkpoint(tmp_path, state(1), keep=5)
    (tmp_path / "ckpt-00000002.pt").write_bytes(b"garbage")
    torch.save({"step": 3}, tmp_path / "ckpt-00000003.pt")  # loads, but is no training checkpoint
    with pytest.warns(UserWarning, match="trying an older one") as record:
        path, loaded = latest_checkpoint(tmp_path)
    assert path.name == "ckpt-00000001.pt" and loaded["step"] == 1 and len(record) == 2
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        load_checkpoint(tmp_path / "ckpt-00000003.pt")
    (tmp_path / "ckpt-00000001.pt").write_bytes(b"")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="none of the 3 checkpoints loads"):
        latest_checkpoint(tmp_path)


def test_metrics_read_and_trim(tmp_path: Path) -> None:
    lines = [json.dumps({"step": s, "loss": float(s)}) for s in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 4, "lo')  # torn last line
    assert [r["step"] for r in read_training_log(tmp_path)] == [1, 2, 3]
    trim_training_log(tmp_path, 2)
    assert [r["step"] for r in read_training_log(tmp_path)] == [1, 2]
    assert read_training_log(tmp_path / "nowhere") == []


def test_metrics_log_averages_each_interval(tmp_path: Path) -> None:
    log = TrainingLog(tmp_path, style_weight=10)
    for content in (1.0, 3.0):
        log.add(torch.tensor(content), [torch.tensor(0.1)] * 4)
    rec = log.log_train(2, lr=1e-4)
    log.add(torch.tensor(5.0), [torch.tensor(0.0)] * 4)
    log.log_train(3, lr=1e-4)
    log.close()
    first, second = read_training_log(tmp_path)
    assert first == rec and (first["steps_averaged"], second["steps_averaged"]) == (2, 1)
    assert first["content"] == 2.0 and first["style"] == pytest.approx(0.4)
    assert first["loss"] == pytest.approx(2.0 + 10 * 0.4) and second["loss"] == 5.0


def test_metrics_log_stops_on_nan(tmp_path: Path) -> None:
    log = TrainingLog(tmp_path, style_weight=10)
    log.add(torch.tensor(float("nan")), [torch.tensor(0.1)] * 4)
    with pytest.raises(TrainingDiverged, match="at step 7"):
        log.log_train(7, lr=1e-4)
    log.close()
    assert read_training_log(tmp_path) == []
