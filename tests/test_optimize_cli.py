"""``adain optimize`` and ``adain stylize --balance`` end to end, on random weights and tiny images."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from adain.cli import main
from adain.optimize.balance import BALANCE_RUNS
from adain.optimize.progress import StepTimer, steps_left

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def base(weight_files, content_paths, style_paths):
    files = weight_files["vgg16"]
    return ["--content", str(content_paths[0]), "--style", str(style_paths[0]), "--style", str(style_paths[1]),
            "--content-size", "40", "--style-size", "40", "--encoder", str(files["encoder_st"]),
            "--decoder", str(files["decoder_st"]), "--device", "cpu"]


def test_optimize_writes_the_image_and_the_log(base, tmp_path, capsys):
    out, log = tmp_path / "out.png", tmp_path / "log.jsonl"
    rc = main(["optimize", *base, "--iterations", "4", "--weights", "0.3,0.7", "--log", str(log), "-o", str(out)])
    assert rc == 0
    assert min(Image.open(out).size) == 40
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["iteration"] for e in entries] == [0, 1, 2, 3]
    assert {e["phase"] for e in entries} == {"optimize"}
    assert len(entries[0]["styles"]) == 2
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert any(line.startswith("optimize: 100%") for line in bar)  # the progress bar
    assert re.search(r"left=\d\d:\d\d", bar[-1]), bar[-1]  # with the time left of the whole command


def test_the_time_left_counts_the_runs_still_to_come():
    assert steps_left({"phase": "optimize"}, 40, 100) == 60
    assert steps_left({"phase": "balance", "round": 1}, 40, 100) == 60 + BALANCE_RUNS * 100  # calibration, final
    assert steps_left({"phase": "balance", "round": BALANCE_RUNS}, 100, 100) == 100  # only the final run left
    clock = iter([5.0, 9.0, 11.0, 15.0])  # steps done at these times; what came before the first is start-up
    timer = StepTimer(lambda: next(clock))
    assert [timer.step() for _ in range(4)] == [None, 4.0, 3.0, 10 / 3]


def test_optimize_balance_logs_the_calibration(base, tmp_path):
    log = tmp_path / "log.jsonl"
    args = ["optimize", *base, "--iterations", "3", "--init", "content", "--balance", "--log", str(log),
            "-o", str(tmp_path / "out.png")]
    assert main(args) == 0
    phases = [(e["phase"], e.get("round")) for e in map(json.loads, log.read_text().splitlines())]
    assert phases[0] == ("balance", 1) and phases[-1] == ("optimize", None)


def test_optimize_needs_only_the_encoder_without_the_adain_start(weight_files, content_paths, style_paths, tmp_path):
    out = tmp_path / "out.png"
    args = ["optimize", "--content", str(content_paths[0]), "--style", str(style_paths[0]), "--content-size", "40",
            "--style-size", "40", "--encoder", str(weight_files["vgg16"]["encoder_st"]), "--device", "cpu",
            "--init", "noise", "--optimizer", "adam", "--iterations", "2", "-o", str(out)]
    assert main(args) == 0 and out.is_file()


def test_stylize_balance(base, tmp_path):
    out = tmp_path / "out.png"
    assert main(["stylize", *base, "--balance", "-o", str(out)]) == 0
    assert out.is_file()


@pytest.mark.parametrize("command", [["optimize", "--iterations", "6", "--init", "content"], ["stylize", "--balance"]])
def test_style_scale_resizes_the_styles_for_optimize_and_balance(base, tmp_path, command):
    def run(name: str, *extra: str) -> np.ndarray:
        out = tmp_path / f"{name}.png"
        assert main([command[0], *base, *command[1:], *extra, "-o", str(out)]) == 0
        return np.asarray(Image.open(out))

    scaled = run("scaled", "--style-size", "20", "--style-scale", "2")
    assert np.array_equal(scaled, run("direct", "--style-size", "40"))  # base has --style-size 40; the last wins
    assert not np.array_equal(scaled, run("unscaled", "--style-size", "20"))


@pytest.mark.parametrize(("extra", "message"), [
    (["--iterations", "0"], "iterations"),
    (["--weights", "1"], "1 weights given for 2 styles"),
    (["--style-layer-weights", "1,1"], "style layer weights"),
    (["--style-layer-weights", "-1,1,1,1"], "style layer weight 1 must be a finite number >= 0, got -1.0"),
    (["--content-layers", "relu9_9"], "content layers"),
    (["--lr", "-1"], "lr"),
    (["--balance", "--mask", "MASK"], "with a mask each style keeps its own region"),
    (["--weights", "1,1", "--mask", "MASK"], "weights and a mask cannot be combined"),
    (["--content", "CONTENT"], "one --content"),
    (["-o", "out.gif"], "unsupported output format"),
    (["--log", "/nonexistent/dir/log.jsonl"], "cannot write the log"),
])
def test_optimize_bad_input_is_one_line_exit_2(base, tmp_path, capsys, extra, message):
    mask = tmp_path / "mask.png"
    Image.new("L", (40, 40)).save(mask)
    extra = [str(mask) if a == "MASK" else base[1] if a == "CONTENT" else a for a in extra]
    args = ["optimize", *base, "-o", str(tmp_path / "out.png"), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("adain: error: ") and message in err
    assert err.count("\n") == 1


def test_optimize_adain_start_without_a_decoder_says_what_to_do(base, tmp_path, capsys):
    args = ["optimize", *base, "--decoder", str(tmp_path / "missing.safetensors"), "-o", str(tmp_path / "o.png")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--init content or noise needs only the encoder" in err
