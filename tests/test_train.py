"""``adain train``: learning, exact resume, arguments on resume, unreadable files, logs and samples."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from filelock import FileLock
from PIL import Image

from adain.bundles.download import sha256_file
from adain.bundles.layouts import save_safetensors
from adain.train.cli import LOCK
from adain.train.loop import lr_at
from adain.train.runs import checkpoints, latest_checkpoint, read_training_log
from tests.conftest import random_networks
from tests.train_support import TinyData, make_tiny_data, resume_argv, run_train, train_argv, write_images


@pytest.fixture
def data(tmp_path: Path, weight_files: dict) -> TinyData:
    return make_tiny_data(tmp_path, weight_files["vgg16"]["encoder_st"])


def train_records(run_dir: Path) -> list[dict]:
    return [r for r in read_training_log(run_dir) if r.get("split", "train") == "train"]


def test_lr_schedule() -> None:
    assert lr_at(0, 1e-4, 5e-5) == 1e-4
    assert lr_at(20_000, 1e-4, 5e-5) == pytest.approx(5e-5)


def test_a_fixed_batch_is_learned(tmp_path: Path, weight_files: dict) -> None:
    # one training image of each kind, resized and cropped to itself: every step sees the same batch
    data = make_tiny_data(tmp_path, weight_files["vgg16"]["encoder_st"], n_content=2, n_style=2, size=(32, 32))
    run = tmp_path / "run"
    assert run_train(data, train_argv(data, run, steps=16, holdout_content=1, holdout_style=1, lr_decay=0)) == 0
    losses = [r["loss"] for r in train_records(run)]
    assert len(losses) == 16
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.7 * first, losses


def test_resume_continues_exactly(data: TinyData, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_train(data, train_argv(data, one, steps=4)) == 0
    # the other run: a DataLoader worker, samples and held-out checks on the way, a checkpoint at step 2,
    # and a crash after step 3 (its checkpoint lost), then a resume without workers
    assert run_train(data, train_argv(data, two, steps=3, checkpoint_every=2, workers=1, sample_every=1,
                                      eval_every=1)) == 0
    assert [p.name for p in checkpoints(two)] == ["ckpt-00000002.pt", "ckpt-00000003.pt"]
    checkpoints(two)[-1].unlink()
    assert run_train(data, resume_argv(two, steps=4, workers=0)) == 0

    a, b = latest_checkpoint(one)[1], latest_checkpoint(two)[1]
    assert a["step"] == b["step"] == 4
    for key, value in a["decoder"].items():
        torch.testing.assert_close(b["decoder"][key], value, rtol=0, atol=1e-6)
    for key, value in a["optimizer"]["state"].items():
        torch.testing.assert_close(b["optimizer"]["state"][key]["exp_avg_sq"], value["exp_avg_sq"], rtol=0, atol=1e-9)
    assert b["rng"]["python"] == a["rng"]["python"]
    # the log of the lost step 3 was dropped on resume: each step once, and equal to the uninterrupted run's
    assert [r["step"] for r in train_records(two)] == [1, 2, 3, 4]
    assert [r["loss"] for r in train_records(two)] == pytest.approx([r["loss"] for r in train_records(one)], rel=1e-5)
    held_out = [r for r in read_training_log(two) if r.get("split") == "held_out"]
    assert [r["step"] for r in held_out] == [1, 2, 3, 4] and all(r["pairs"] == 2 for r in held_out)
    with Image.open(two / "sample-00000004.png") as im:  # 2 pairs: content | style | output, 2 px padding
        assert im.size == (3 * 32 + 4 * 2, 2 * 32 + 3 * 2)


def test_resume_keeps_the_runs_arguments(data: TinyData, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert run_train(data, train_argv(data, run, steps=1, resize=36, keep=1)) == 0
    assert run_train(data, resume_argv(run, steps=2)) == 0  # nothing but --steps: the rest from the checkpoint
    args = latest_checkpoint(run)[1]["args"]
    assert (args["resize"], args["batch_size"], args["keep"], args["log_every"], args["workers"]) == (36, 2, 1, 1, 0)
    assert [r["step"] for r in train_records(run)] == [1, 2]
    assert [p.name for p in checkpoints(run)] == ["ckpt-00000002.pt"]
    capsys.readouterr()

    assert run_train(data, resume_argv(run, steps=3, batch_size=4)) == 2
    assert "--batch-size cannot change on --resume" in capsys.readouterr().err
    assert run_train(data, train_argv(data, run, steps=3)) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    assert run_train(data, resume_argv(tmp_path / "missing", steps=3)) == 2
    assert "is not a run folder" in capsys.readouterr().err and not (tmp_path / "missing").exists()
    (tmp_path / "empty").mkdir()
    assert run_train(data, resume_argv(tmp_path / "empty", steps=3)) == 2
    assert "no checkpoint" in capsys.readouterr().err
    other = tmp_path / "other_encoder.safetensors"
    save_safetensors(random_networks("vgg16", seed=1)[0], other, "vgg16")
    assert run_train(data, resume_argv(run, steps=3, encoder=other)) == 2
    assert "not the one the checkpoint was trained with" in capsys.readouterr().err
    assert run_train(data, resume_argv(run, steps=2)) == 0  # already there: nothing to do, nothing written
    assert [p.name for p in checkpoints(run)] == ["ckpt-00000002.pt"]


def test_unreadable_files_are_skipped_and_counted(tmp_path: Path, weight_files: dict) -> None:
    data = make_tiny_data(tmp_path, weight_files["vgg16"]["encoder_st"], n_content=3, n_style=3)
    write_images(data.content / "sub", 1, seed=7)
    (data.content / "garbage.jpg").write_bytes(b"no image here")
    (data.content / "empty.png").write_bytes(b"")
    cut = data.content / "cut.jpg"  # passes the scan, fails to decode in the DataLoader worker
    whole = (data.content / "00.jpg").read_bytes()
    cut.write_bytes(whole[: len(whole) // 2])
    run = tmp_path / "run"
    # 5 content files to train on and a batch of 5: the first step's epoch visits each, the cut one included
    argv = train_argv(data, run, steps=1, batch_size=5, holdout_content=0, holdout_style=0, workers=1)
    with pytest.warns(UserWarning) as record:
        assert run_train(data, argv) == 0
    messages = " ".join(str(w.message) for w in record)
    assert "garbage.jpg" in messages and "empty.png" in messages and f"unreadable content image {cut}" in messages
    content = latest_checkpoint(run)[1]["data"]["content"]
    assert content["skipped"] == 3 and content["unreadable"] == [str(cut)]
    assert len(content["train"]) == 5 and str(data.content / "sub" / "00.jpg") in content["train"]


def test_a_diverged_run_stops_without_saving(data: TinyData, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert run_train(data, train_argv(data, run, steps=3, style_weight="nan")) == 2
    assert "the loss is nan at step 1" in capsys.readouterr().err
    assert checkpoints(run) == []
    late = tmp_path / "late"  # a checkpoint due before the log shows it: the weights are checked too
    assert run_train(data, train_argv(data, late, steps=3, style_weight="nan", log_every=100, checkpoint_every=1)) == 2
    assert "NaN or infinite weights at step 1: not saving them" in capsys.readouterr().err
    assert checkpoints(late) == []


def test_one_process_per_run_folder(data: TinyData, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with FileLock(str(run / LOCK)):  # as a training process holds it
        assert run_train(data, train_argv(data, run)) == 2
    assert "another process is training in" in capsys.readouterr().err
    assert checkpoints(run) == []


def test_init_decoder_starts_from_a_file_and_stays_on_resume(data: TinyData, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    start = random_networks("vgg16", seed=5)[1]
    init = tmp_path / "start.safetensors"
    save_safetensors(start, init, "vgg16")
    run = tmp_path / "run"
    assert run_train(data, train_argv(data, run, steps=1, lr=0, init_decoder=init)) == 0  # lr 0: weights kept
    state = latest_checkpoint(run)[1]
    for key, value in start.layers.state_dict().items():
        assert torch.equal(state["decoder"][key], value)
    assert state["init_decoder"] == {"file": str(init.resolve()), "sha256": sha256_file(init)}
    assert run_train(data, resume_argv(run, steps=2)) == 0
    assert latest_checkpoint(run)[1]["init_decoder"] == state["init_decoder"]
    capsys.readouterr()
    assert run_train(data, resume_argv(run, steps=3, init_decoder=tmp_path / "other.safetensors")) == 2
    assert "--init-decoder cannot change on --resume" in capsys.readouterr().err

    encoder_file = tmp_path / "an_encoder.safetensors"
    save_safetensors(random_networks("vgg16", seed=1)[0], encoder_file, "vgg16")
    for bad, message in ((tmp_path / "missing.safetensors", "weight file not found"),
                         (encoder_file, "missing key")):
        assert run_train(data, train_argv(data, tmp_path / bad.stem, init_decoder=bad)) == 2
        assert message in capsys.readouterr().err
        assert checkpoints(tmp_path / bad.stem) == []


def test_a_decoder_with_skips_trains_resumes_and_exports(data: TinyData, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    from adain.bundles.layouts import build_decoder, read_metadata
    from adain.net import SkipJoin
    from adain.train.export import main as export_main

    run = tmp_path / "run"
    argv = train_argv(data, run, steps=3, layer="relu3_1", skips="relu1_1,relu2_1", recon_steps=1,
                      colour_weight=2.0, texture_weight=3.0)
    assert run_train(data, argv) == 0
    state = latest_checkpoint(run)[1]
    assert state["skips"] == ["relu1_1", "relu2_1"] and state["args"]["skips"] == ["relu1_1", "relu2_1"]
    scales = [v for k, v in state["decoder"].items() if k.endswith(".scale")]
    assert [len(s) for s in scales] == [128, 64]  # met deepest first
    assert all(not torch.allclose(s, torch.ones_like(s)) for s in scales)  # calibrated on the photos
    records = train_records(run)
    assert "colour" not in records[0] and "texture" not in records[0]  # a reconstruction step
    weight = state["args"]["style_weight"]
    for r in records[1:]:
        assert r["colour"] > 0 and r["texture"] > 0
        assert r["loss"] == pytest.approx(r["content"] + weight * r["style"] + r["colour"] + r["texture"], rel=1e-5)

    assert run_train(data, resume_argv(run, steps=4)) == 0
    assert run_train(data, resume_argv(run, steps=5, skips="relu2_1")) == 2
    assert "--skips cannot change on --resume" in capsys.readouterr().err

    out = tmp_path / "skips.safetensors"
    assert export_main([str(run), "-o", str(out), "--no-eval"]) == 0
    assert read_metadata(out)["skips"] == "relu1_1,relu2_1"
    decoder = build_decoder(out, "vgg16")
    assert decoder.inputs == ("relu1_1", "relu2_1", "relu3_1")
    joins = [m for m in decoder.layers if isinstance(m, SkipJoin)]
    torch.testing.assert_close([j.scale for j in joins], scales, rtol=1e-3, atol=0)  # stored as fp16

    fork = tmp_path / "fork"  # a new run from the file takes its skips
    assert run_train(data, train_argv(data, fork, steps=1, init_decoder=out, loss="paper")) == 0
    assert latest_checkpoint(fork)[1]["skips"] == ["relu1_1", "relu2_1"]

    deep = tmp_path / "deep"  # deepened to relu4_1: the file's relu3_1 a skip, calibrated before the pass-through
    assert run_train(data, train_argv(data, deep, steps=1, init_decoder=out, layer="relu4_1",
                                      skips="relu1_1,relu2_1,relu3_1", lr=0.0, content_layers="relu4_1,relu3_1")) == 0
    state = latest_checkpoint(deep)[1]
    assert state["layer"] == "relu4_1" and state["skips"] == ["relu1_1", "relu2_1", "relu3_1"]
    assert state["args"]["content_layers"] == ["relu3_1", "relu4_1"]
    assert run_train(data, train_argv(data, tmp_path / "deeper", steps=1, content_layers="relu4_1",
                                      layer="relu3_1")) == 2
    assert "--content-layers: none may be deeper than the decoder's layer (relu3_1)" in capsys.readouterr().err
    relu3_1_scale = next(v for k, v in state["decoder"].items() if k.endswith(".scale") and len(v) == 256)
    assert not torch.allclose(relu3_1_scale, torch.ones_like(relu3_1_scale))
    join_conv = next(v for k, v in state["decoder"].items() if k.endswith(".weight") and v.shape[1] == 512
                     and k != "1.weight")
    torch.testing.assert_close(join_conv[:, 256:, 1, 1].diagonal(), 1 / relu3_1_scale)


def test_weak_skips_train_with_reconstruction_steps_between_and_the_file_keeps_their_strength(
        data: TinyData, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from adain.bundles.layouts import build_decoder, read_metadata
    from adain.train.export import main as export_main

    run = tmp_path / "run"
    argv = train_argv(data, run, steps=6, layer="relu3_1", skips="relu1_1,relu2_1", skip_strength=0.3,
                      recon_steps=1, recon_every=3, features_weight=5.0, patch_weight=2.0)
    assert run_train(data, argv) == 0
    state = latest_checkpoint(run)[1]
    assert state["skip_strength"] == 0.3
    records = train_records(run)
    recon = [r["step"] for r in records if "features" not in r]
    assert recon == [1, 3, 6]  # the first step, then every third
    assert all(r["features"] > 0 and r["patch"] > 0 for r in records if r["step"] not in recon)
    assert not any("patch" in r for r in records if r["step"] in recon)

    assert run_train(data, resume_argv(run, steps=7, skip_strength=0.5)) == 2
    assert "--skip-strength cannot change on --resume" in capsys.readouterr().err
    out = tmp_path / "weak.safetensors"
    assert export_main([str(run), "-o", str(out), "--no-eval"]) == 0
    assert read_metadata(out)["skip_strength"] == "0.3"
    assert build_decoder(out, "vgg16").skip_strength == 0.3
    fork = tmp_path / "fork"  # a new run from the file takes its strength
    assert run_train(data, train_argv(data, fork, steps=1, init_decoder=out)) == 0
    assert latest_checkpoint(fork)[1]["skip_strength"] == 0.3
    deep = tmp_path / "deep"  # deepened: its skips keep their strength, the file's relu3_1 comes whole
    assert run_train(data, train_argv(data, deep, steps=1, init_decoder=out, layer="relu4_1",
                                      skips="relu1_1,relu2_1,relu3_1")) == 0
    assert latest_checkpoint(deep)[1]["skip_strength"] == (0.3, 0.3, 1.0)
    assert export_main([str(deep), "-o", str(tmp_path / "deep.safetensors"), "--no-eval"]) == 0
    assert read_metadata(tmp_path / "deep.safetensors")["skip_strength"] == "0.3,0.3,1.0"
    assert build_decoder(tmp_path / "deep.safetensors", "vgg16").skip_gains(1.0) == pytest.approx((0.3, 0.3, 1.0))
    assert run_train(data, train_argv(data, tmp_path / "two", steps=1, init_decoder=out, layer="relu4_1",
                                      skips="relu1_1,relu2_1,relu3_1", skip_strength="0.3,1")) == 2
    assert "--skip-strength: 2 strengths for 3 skips" in capsys.readouterr().err

    plain = tmp_path / "plain"
    assert run_train(data, train_argv(data, plain, steps=1, layer="relu3_1", skip_strength=0.5)) == 2
    assert "--skip-strength needs a decoder with skips" in capsys.readouterr().err


def test_defaults_are_the_recipe_of_the_encoder_and_help_shows_them(data: TinyData, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    from adain.train.cli import build_parser
    from adain.train.recipes import RECIPES

    run = tmp_path / "run"
    recipe = {k: v for k, v in RECIPES["vgg16"].items() if k not in ("batch_size", "resize", "crop")}  # kept tiny
    assert run_train(data, train_argv(data, run, steps=1, **dict.fromkeys(recipe))) == 0  # a vgg16 encoder
    args = latest_checkpoint(run)[1]["args"]
    assert {k: args[k] for k in recipe} == recipe
    assert (args["layer"], args["loss"], args["recon_steps"]) == ("relu3_1", "paper", 500)

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for needle in ("train until this step (default: 160000)", "default: 4 for vgg16 encoders, 8 for vgg19",
                   "default: 160 for vgg16 encoders, 256 for vgg19", "(default: 1000)"):
        assert needle in text


def test_a_decoder_with_skips_mixes_with_a_file_of_the_same_skips(data: TinyData, tmp_path: Path) -> None:
    from adain.train.export import main as export_main

    run = tmp_path / "run"
    assert run_train(data, train_argv(data, run, steps=1, layer="relu3_1", skips="relu1_1,relu2_1")) == 0
    other = tmp_path / "other.pth"  # a .pth keeps the stack's key order: the relu2_1 join's scale first
    torch.save(latest_checkpoint(run)[1]["decoder"], other)
    assert export_main([str(run), "-o", str(tmp_path / "mixed.safetensors"), "--no-eval", "--mix",
                        f"{other}:0.5"]) == 0
