"""`adain stylize` run as a real process: outputs, batches, and a one-line error (exit status 2) for bad input.

Every invocation is started at once from one module fixture and awaited together: each is mostly
the start-up of Python and torch, so they overlap well.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adain.precision import auto_precision

CONTENT_SIZE = (43, 29)  # W, H

#: name -> (arguments added to the common ones, a fragment of the expected error message)
BAD_INPUT = {
    "missing content": ("--content {root}/missing.jpg --style {s1}", "missing.jpg: cannot open (No such file"),
    "missing mask": ("--content {content} --style {s1} --style {s2} --mask {root}/missing.png",
                     "missing.png: cannot open (No such file"),
    "truncated image": ("--content {truncated} --style {s1}", "truncated.jpg: truncated or corrupt image"),
    "unknown format": ("--content {content} --style {text}", "text.png: not an image in a supported format"),
    "weights count": ("--content {content} --style {s1} --style {s2} --weights 1", "1 weights given for 2 styles"),
    "negative weight": ("--content {content} --style {s1} --style {s2} --weights=-1,2", "must not be negative"),
    "negative weight after a space": ("--content {content} --style {s1} --style {s2} --weights -1,2",
                                      "weights must not be negative, got [-1.0, 2.0]"),
    "zero weights": ("--content {content} --style {s1} --style {s2} --weights 0,0", "the weights are all zero"),
    "nan weight": ("--content {content} --style {s1} --style {s2} --weights nan,1", "weights must be finite"),
    "alpha above 1": ("--content {content} --style {s1} --alpha 1.5", "alpha must be between 0 and 1, got 1.5"),
    "mask labels": ("--content {content} --style {s1} --style {s2} --mask {labels3}",
                    "mask has label 2, but there are only 2 styles"),
    "mask size": ("--content {content} --style {s1} --style {s2} --mask {small_mask}",
                  "mask is 20x20 but the content image is 43x29"),
    "missing weights": ("--content {content} --style {s1} --encoder {missing}", "missing.pth: weight file not found"),
    "mismatched weights": ("--content {content} --style {s1} --decoder {dec16}",
                           "vgg16_decoder.safetensors: key '11.weight' has shape (128, 256, 3, 3), a vgg19 decoder"),
    "corrupt weights": ("--content {content} --style {s1} --decoder {corrupt}",
                        "corrupt.pth: not a readable weight file"),
    "bad extension": ("--content {content} --style {s1} -o {root}/out.gif", "out.gif: unsupported output format"),
    "thin content upscaled": ("--content {thin} --style {s1} --content-size 2048",
                              "thin.png: 4000x1 at a shorter side of 2048 is 8192000x2048 = 16777216000 pixels"),
    "thin style upscaled": ("--content {content} --style {thin} --style-size 64",
                            "thin.png: 4000x1 at a shorter side of 64 is 256000x64, sides more than 16:1 apart"),
    "usage error": ("--content {content} --style {s1} --weights a,b", "argument --weights: weights must be"),
    "style scale": ("--content {content} --style {s1} --style-scale 5",
                    "style_scale must be between 0.25 and 4, got 5.0"),
    "grain": ("--content {content} --style {s1} --grain 0.8", "grain must be between 0 and 0.5, got 0.8"),
}

#: name -> arguments of runs that must succeed
GOOD_RUNS = {
    "resized luminance": "--content {content} --style {s1} --content-size 21 --style-size 17 "
                         "--preserve-color luminance --alpha 0.8 --verbose -o {root}/good/lum.png",
    "cropped coral mask jpeg": "--content {content} --style {s1} --style {s2} --mask {labels} --content-size 21 "
                               "--crop --preserve-color coral -o {root}/good/mask.jpg",
    "style scale 2 at 10 px": "--content {content} --style {s1} --style-size 10 --style-scale 2 -o {root}/good/x2.png",
    "style at 20 px": "--content {content} --style {s1} --style-size 20 -o {root}/good/20.png",
    "grain 0.2": "--content {content} --style {s1} --style-size 20 --grain 0.2 -o {root}/good/grain.png",
    "batch": "--content-dir {root}/contents --style-dir {root}/styles --output-dir {root}/batch --ext webp "
             "--content-size 19 --style-size 19",
}


def _save_resized(src: Path, size: tuple[int, int], dest: Path) -> None:
    Image.open(src).convert("RGB").resize(size).save(dest)


@pytest.fixture(scope="module")
def paths(tmp_path_factory, content_paths, style_paths, weight_files) -> dict[str, Path]:
    """Input files named in the tables."""
    root = tmp_path_factory.mktemp("cli")
    p = {"root": root, "content": root / "content.png", "s1": root / "s1.png", "s2": root / "s2.jpg",
         "truncated": root / "truncated.jpg", "text": root / "text.png", "labels": root / "labels.png",
         "labels3": root / "labels3.png", "small_mask": root / "small_mask.png", "corrupt": root / "corrupt.pth",
         "missing": root / "missing.pth", "thin": root / "thin.png", "dec16": weight_files["vgg16"]["decoder_st"]}
    _save_resized(content_paths[2], CONTENT_SIZE, p["content"])
    _save_resized(style_paths[3], (31, 23), p["s1"])
    _save_resized(style_paths[4], (26, 35), p["s2"])
    p["truncated"].write_bytes(content_paths[0].read_bytes()[:3000])
    p["text"].write_text("not an image\n")
    Image.new("RGB", (4000, 1)).save(p["thin"])  # 93 bytes
    p["corrupt"].write_bytes(b"\x00junk" * 64)
    labels = (np.arange(CONTENT_SIZE[0]) * 3 // CONTENT_SIZE[0]).astype(np.uint8)[None].repeat(CONTENT_SIZE[1], 0)
    Image.fromarray(labels).save(p["labels3"])
    Image.fromarray(np.minimum(labels, 1)).save(p["labels"])
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(p["small_mask"])
    for folder, names, sources in (("contents", ("a.jpg", "B.JPG"), content_paths[5:7]),
                                   ("styles", ("x.png", "y.webp"), style_paths[5:7])):
        (root / folder).mkdir()
        for name, src in zip(names, sources, strict=True):
            _save_resized(src, (25, 21), root / folder / name)
    (root / "styles" / "notes.txt").write_text("not an image, and not picked up")
    return p


def _command(args: str, paths: dict[str, Path], weight_files, out: Path) -> list[str]:
    files = weight_files["vgg19"]
    common = (f"--content-size 0 --style-size 0 --encoder {files['encoder_st']} --decoder {files['decoder_pth']} "
              f"--device cpu -o {shlex.quote(str(out))}")
    formatted = args.format(**{k: shlex.quote(str(v)) for k, v in paths.items()})
    return [sys.executable, "-m", "adain.cli", "stylize", *shlex.split(common), *shlex.split(formatted)]


@pytest.fixture(scope="module")
def runs(paths, weight_files) -> dict[str, subprocess.CompletedProcess]:
    """Every table row, run concurrently, one thread each so that the overlapping runs do not oversubscribe the CPU."""
    root, env = paths["root"], {**os.environ, "OMP_NUM_THREADS": "1"}
    commands = {name: _command(args, paths, weight_files, root / "bad" / f"{name}.png")
                for name, (args, _) in BAD_INPUT.items()}
    commands |= {name: _command(args, paths, weight_files, root / "unused.png") for name, args in GOOD_RUNS.items()}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(subprocess.run, cmd, capture_output=True, text=True, timeout=300, env=env)
                   for name, cmd in commands.items()}
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("name", BAD_INPUT)
def test_bad_input_is_one_line_and_exit_status_2(runs, paths, name):
    result = runs[name]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("adain"), result.stderr
    assert BAD_INPUT[name][1] in lines[0]
    assert result.stdout == "" and not (paths["root"] / "bad" / f"{name}.png").exists()


@pytest.mark.parametrize("name", GOOD_RUNS)
def test_good_runs_succeed(runs, name):
    assert runs[name].returncode == 0, runs[name].stderr
    assert "Traceback" not in runs[name].stderr


def test_verbose_names_the_device_and_the_precision_auto_chose(runs):
    expected = auto_precision("cpu")  # bf16 on CPUs with AVX-512 BF16 or AMX, else fp32
    assert runs["resized luminance"].stderr.splitlines() == [f"adain: cpu, precision {expected} (auto)"]


def test_quiet_by_default(runs):
    assert runs["cropped coral mask jpeg"].stderr == ""


@pytest.mark.parametrize("args", [
    ["--content", "missing.jpg", "--style", "missing-style.jpg", "-o", "out.png"],
    ["--content", "missing.jpg", "--style", "x.jpg", "--alpha", "1.5", "-o", "out.png"],
    ["--content", "missing.jpg", "--style", "x.jpg", "--weights", "1,2", "-o", "out.png"],
    ["--content", "missing.jpg", "--style", "x.jpg", "--style-scale", "0.1", "-o", "out.png"],
    ["--content", "missing.jpg", "--style", "x.jpg", "--grain", "-1", "-o", "out.png"],
])
def test_bad_arguments_and_missing_files_are_refused_before_torch_is_imported(tmp_path, args):
    script = ("import sys; from adain.cli import main; status = main(sys.argv[1:]); "
              "print(status, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script, "stylize", *args], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)
    assert result.stdout.split() == ["2", "False"], result.stderr
    assert result.stderr.startswith("adain: error: ") and len(result.stderr.splitlines()) == 1


def test_resized_output_has_the_resized_content_size(runs, paths):
    img = Image.open(paths["root"] / "good" / "lum.png")
    assert img.format == "PNG" and img.size == (int(21 * 43 / 29), 21)  # shorter side 21, neither a multiple of 8


def test_cropped_jpeg_output(runs, paths):
    img = Image.open(paths["root"] / "good" / "mask.jpg")
    assert img.format == "JPEG" and img.size == (21, 21)
    assert np.asarray(img).std() > 2  # not a flat image


def test_style_scale_resizes_the_style_by_the_factor(runs, paths):
    scaled, direct = (np.asarray(Image.open(paths["root"] / "good" / name)) for name in ("x2.png", "20.png"))
    assert np.array_equal(scaled, direct)  # --style-size 10 --style-scale 2 is the style at 20 px


def test_grain_changes_the_picture(runs, paths):
    grainy, plain = (np.asarray(Image.open(paths["root"] / "good" / name), dtype=float)
                     for name in ("grain.png", "20.png"))
    assert grainy.shape == plain.shape and np.abs(grainy - plain).mean() > 2


def test_batch_writes_every_content_style_pair(runs, paths):
    written = sorted(p.name for p in (paths["root"] / "batch").iterdir())
    assert written == sorted(f"{c}_stylized_{s}.webp" for c in ("a", "B") for s in ("x", "y"))
    assert all(Image.open(paths["root"] / "batch" / name).size == (22, 19) for name in written)
