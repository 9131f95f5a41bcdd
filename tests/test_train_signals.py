"""Killing ``adain train``: SIGTERM saves and exits 143; SIGKILL at any moment leaves loadable checkpoints."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from adain.train.runs import checkpoints, latest_checkpoint, load_checkpoint, read_training_log
from tests.train_support import PYTHON, TinyData, make_tiny_data, resume_argv, run_train, subprocess_env, train_argv


@pytest.fixture
def data(tmp_path: Path, weight_files: dict) -> TinyData:
    return make_tiny_data(tmp_path, weight_files["vgg16"]["encoder_st"])


def start(data: TinyData, run_dir: Path, **options: object) -> subprocess.Popen:
    """``python -m adain.train`` on a run far too long to finish during the test."""
    argv = train_argv(data, run_dir, steps=1_000_000, **options)
    return subprocess.Popen([PYTHON, "-m", "adain.train", *argv], env=subprocess_env(data), text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"training exited early ({proc.returncode}): {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("training made no progress")
        time.sleep(0.05)


def test_sigterm_saves_a_checkpoint_and_exits_143(data: TinyData, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = start(data, run, workers=1, checkpoint_every=1_000_000)  # the only checkpoint will be the signal's
    wait_until(lambda: len(read_training_log(run)) >= 2, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    assert "stopped by signal 15" in proc.stderr.read()
    path, state = latest_checkpoint(run)
    assert checkpoints(run) == [path]
    assert state["step"] == max(r["step"] for r in read_training_log(run)) >= 2  # every finished step is in it
    assert run_train(data, resume_argv(run, steps=state["step"] + 1)) == 0
    assert latest_checkpoint(run)[1]["step"] == state["step"] + 1


def test_sigkill_at_a_random_moment_leaves_loadable_checkpoints(data: TinyData, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = start(data, run, checkpoint_every=1, keep=2)  # saving most of the time: a kill likely hits a save
    wait_until(lambda: bool(checkpoints(run)), proc)
    delay = random.uniform(0, 1.5)
    time.sleep(delay)
    proc.kill()
    proc.wait(timeout=60)
    found = checkpoints(run)
    assert found, f"killed after {delay:.2f} s"
    for path in found:  # whatever the moment, every file named as a checkpoint is complete
        assert load_checkpoint(path)["step"] == int(path.stem.split("-")[1]), f"killed after {delay:.2f} s"
    step = latest_checkpoint(run)[1]["step"]
    assert run_train(data, resume_argv(run, steps=step + 1)) == 0
    assert latest_checkpoint(run)[1]["step"] == step + 1
    assert not list(run.glob(".*.tmp"))  # a half-written save was cleaned up
