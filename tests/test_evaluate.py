"""``adain evaluate``: held-out pairs as the training script splits them, the report, the contact sheet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from adain.cli import main as adain_main
from adain.errors import InputError
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
    # The same pairs again against that report: all differences 0, no pair better (same weights, same pictures).
    again = tmp_path / "again.json"
    assert adain_main([*argv[:-4], "--json", str(again), "--against", str(report)]) == 0
    measures = json.loads(again.read_text())["against"]["measures"]
    assert set(measures) == {"shape", "colour", "texture", "style_ratio", "grid4", "grid8"}
    assert all(m == {"median_difference": 0.0, "better_in": 0, "pairs": 3} for m in measures.values())
    assert "style_ratio: median difference +0.000, better in 0 of 3 pairs" in capsys.readouterr().out


def test_paired_comparison_counts_wins_in_each_measures_direction() -> None:
    from adain.train.evaluate import MEASURES, paired_comparison

    def results(shapes: list[float], styles: list[float]) -> list[dict]:
        return [{"content": f"c{i}", "style": "s", **dict.fromkeys(MEASURES, 1.0), "shape": sh, "style_ratio": st}
                for i, (sh, st) in enumerate(zip(shapes, styles, strict=True))]

    reference = {"results": results([0.5, 0.5, 0.5], [0.3, 0.3, 0.3])}
    c = paired_comparison(results([0.6, 0.4, 0.7], [0.2, 0.5, 0.25]), reference)
    assert c["shape"]["better_in"] == 2 and c["shape"]["median_difference"] == pytest.approx(0.1)
    assert c["style_ratio"]["better_in"] == 2 and c["style_ratio"]["median_difference"] == pytest.approx(-0.05)
    assert c["grid4"] == {"median_difference": 0.0, "better_in": 0, "pairs": 3}
    with pytest.raises(InputError, match="other pairs"):
        paired_comparison(results([0.6, 0.4], [0.2, 0.5]), reference)


def test_bad_arguments_are_one_line_errors(folders, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    content, style_a, _ = folders
    assert adain_main(["evaluate", "--content-dir", str(content), "--style-dir", str(style_a), "--pairs", "0"]) == 2
    assert "--pairs must be at least 1" in capsys.readouterr().err
    not_a_report = tmp_path / "notes.json"
    not_a_report.write_text("[1, 2]")
    assert adain_main(["evaluate", "--content-dir", str(content), "--style-dir", str(style_a),
                       "--against", str(not_a_report)]) == 2
    assert "not a report of adain evaluate" in capsys.readouterr().err
