"""``adain evaluate``: held-out pairs as the training script splits them, the report, the contact sheet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from adain.cli import main as adain_main
from adain.train.data import list_images, split
from adain.train.evaluate import held_out
from tests.train_support import write_images

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    content, style_a, style_b = tmp_path / "content", tmp_path / "a", tmp_path / "b"
    write_images(content, 6, seed=1)
    write_images(style_a, 5, seed=2)
    write_images(style_b, 4, seed=3)
    return content, style_a, style_b


def test_held_out_images_are_the_training_split_with_style_folders_interleaved(folders) -> None:
    content, style_a, style_b = folders
    contents, styles = held_out(content, [style_a, style_b], holdout_content=2, holdout_style=2, seed=0)
    assert contents == split(list_images(content)[0], 2, 0)[1]
    held_a, held_b = (split(list_images(d)[0], 2, 0)[1] for d in (style_a, style_b))
    assert styles == [held_a[0], held_b[0], held_a[1], held_b[1]]


def test_the_report_and_sheet_of_a_bundle(folders, tmp_path: Path, weight_files: dict,
                                          capsys: pytest.CaptureFixture) -> None:
    content, style_a, style_b = folders
    w = weight_files["vgg16"]
    report, sheet = tmp_path / "report.json", tmp_path / "sheet.jpg"
    argv = ["evaluate", "--content-dir", str(content), "--style-dir", str(style_a), str(style_b),
            "--encoder", str(w["encoder_st"]), "--decoder", str(w["decoder_st"]), "--metric-encoder",
            str(w["encoder_st"]), "--pairs", "3", "--size", "32", "--holdout-content", "2", "--holdout-style", "2",
            "--device", "cpu", "--json", str(report), "--sheet", str(sheet)]
    assert adain_main(argv) == 0
    data = json.loads(report.read_text())
    assert data["pairs"] == 3 and len(data["results"]) == 3
    for r in data["results"]:
        assert -1 <= r["shape"] <= 1 and r["style_ratio"] > 0 and r["grid4"] >= 1 and r["grid8"] >= 1
    assert data["results"][2]["content"] == data["results"][0]["content"]  # 2 held-out photos, used in turn
    assert "median over 3 pairs" in capsys.readouterr().out
    with Image.open(sheet) as image:
        assert image.size == (3 * 160, 3 * 160)


def test_bad_arguments_are_one_line_errors(folders, capsys: pytest.CaptureFixture) -> None:
    content, style_a, _ = folders
    assert adain_main(["evaluate", "--content-dir", str(content), "--style-dir", str(style_a), "--pairs", "0"]) == 2
    assert "--pairs must be at least 1" in capsys.readouterr().err
