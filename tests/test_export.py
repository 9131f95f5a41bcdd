"""``adain train export``: a loadable decoder file and a model card with its numbers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from adain.bundles.download import sha256_file
from adain.bundles.layouts import build_decoder, read_arch, save_safetensors
from adain.train.mixing import Mix, mix_arg
from adain.train.runs import latest_checkpoint, read_training_log
from tests.conftest import random_networks
from tests.train_support import TinyData, make_tiny_data, run_train, train_argv


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, weight_files: dict) -> tuple[TinyData, Path]:
    """A 3-step run with checkpoints at steps 2 and 3."""
    root = tmp_path_factory.mktemp("export")
    data = make_tiny_data(root, weight_files["vgg16"]["encoder_st"])
    assert run_train(data, train_argv(data, root / "run", steps=3, checkpoint_every=2, layer="relu4_1")) == 0
    return data, root / "run"


def export(data: TinyData, *argv: object) -> int:
    """``adain train export ARGV`` (through the training command's dispatch)."""
    return run_train(data, ["export", *map(str, argv)])


def test_export_writes_a_loadable_decoder_and_a_model_card(trained: tuple[TinyData, Path], tmp_path: Path) -> None:
    data, run = trained
    out = tmp_path / "out" / "decoder.safetensors"
    assert export(data, run, "-o", out, "--eval-pairs", 2) == 0

    state = latest_checkpoint(run)[1]
    decoder = build_decoder(out, "vgg16")
    for key, value in decoder.layers.state_dict().items():
        assert torch.equal(value, state["decoder"][key].half().float())
    assert read_arch(out) == "vgg16"
    with safe_open(str(out), framework="pt") as f:
        assert f.metadata()["step"] == "3" and f.get_tensor("1.weight").dtype == torch.float16

    card = json.loads(out.with_suffix(".json").read_text())
    assert datetime.now(UTC) - datetime.fromisoformat(card["created"]) < timedelta(hours=1)
    assert card["decoder"] == {"file": "decoder.safetensors", "sha256": sha256_file(out), "arch": "vgg16",
                               "layer": "relu4_1", "dtype": "fp16"}
    assert card["encoder"]["sha256"] == sha256_file(data.encoder)
    training = card["training"]
    assert (training["steps"], training["batch_size"], training["resize"], training["crop"],
            training["precision"]) == (3, 2, 32, 32, "fp32")
    assert (training["objective"]["loss"], training["objective"]["grid_weight"], training["changed_on_resume"]) == \
        ("hybrid", 0.0, [])
    assert training["throughput"]["it_s"] > 0 and training["throughput"]["images_s"] == 2 * training["throughput"][
        "it_s"]
    assert card["data"]["content"] == {"root": str(data.content), "train": 4, "held_out": 2, "skipped": 0}
    logged = [r for r in read_training_log(run) if r.get("split", "train") == "train"]
    final = card["final_training_losses"]
    assert (final["from_step"], final["to_step"], final["batches"]) == (1, 3, 3)
    assert final["total"] == pytest.approx(sum(r["loss"] for r in logged) / 3)

    held_out = card["held_out"]
    assert held_out["pairs"] == 2 and held_out["crop"] == 32
    for name in ("trained", "step_0", "content_as_output"):
        losses = held_out[name]
        assert set(losses) == {"content", "style", "total", "style_layers"} and len(losses["style_layers"]) == 4
        assert losses["content"] >= held_out["target"]["content_floor"]
    assert held_out["target"]["content"] == 0 and "style_relu4_1" in held_out["target"]
    assert held_out["trained"] != held_out["step_0"]
    assert {"trained", "step_0", "target.content_floor"} <= set(held_out["meaning"])


def test_step_0_is_the_decoder_the_run_started_from(tmp_path: Path, weight_files: dict) -> None:
    data = make_tiny_data(tmp_path, weight_files["vgg16"]["encoder_st"])
    run = tmp_path / "run"
    assert run_train(data, train_argv(data, run, steps=1, lr=0, seed=7, layer="relu4_1")) == 0  # lr 0: initial weights
    assert export(data, run, "-o", tmp_path / "d.safetensors", "--dtype", "fp32", "--eval-pairs", 2) == 0
    held_out = json.loads((tmp_path / "d.json").read_text())["held_out"]
    assert held_out["trained"] == held_out["step_0"]


def test_export_an_older_checkpoint_without_evaluation(trained: tuple[TinyData, Path], tmp_path: Path) -> None:
    data, run = trained
    card_path = tmp_path / "card.json"
    assert export(data, run / "ckpt-00000002.pt", "-o", tmp_path / "d.safetensors", "--card", card_path,
                  "--no-eval") == 0
    card = json.loads(card_path.read_text())
    assert card["checkpoint"]["step"] == 2 and card["final_training_losses"]["to_step"] == 2
    assert card["held_out"] == {"skipped": "--no-eval"}
    assert build_decoder(tmp_path / "d.safetensors", "vgg16") is not None


def test_export_averages_the_last_checkpoints(trained: tuple[TinyData, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    data, run = trained
    out = tmp_path / "d.safetensors"
    assert export(data, run, "-o", out, "--average", 2, "--dtype", "fp32", "--no-eval") == 0
    two, three = (torch.load(run / f"ckpt-0000000{s}.pt", weights_only=True)["decoder"] for s in (2, 3))
    written = build_decoder(out, "vgg16").layers.state_dict()
    assert any(not torch.equal(two[k], three[k]) for k in two)  # so the mean differs from both
    for key, value in written.items():
        torch.testing.assert_close(value, (two[key].double() + three[key].double()).div(2).float())
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["checkpoint"]["step"] == 3 and card["checkpoint"]["averaged_steps"] == [2, 3]

    assert export(data, run / "ckpt-00000002.pt", "-o", out, "--average", 2, "--no-eval") == 2
    assert "2 checkpoints to average, only 1 up to step 2" in capsys.readouterr().err

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for step in (2, 3):
        state = torch.load(run / f"ckpt-0000000{step}.pt", weights_only=True)
        state["encoder"] = {**state["encoder"], "sha256": f"other-{step}"}
        torch.save(state, mixed / f"ckpt-0000000{step}.pt")
    assert export(data, mixed, "-o", out, "--average", 2, "--no-eval") == 2
    assert "another run's checkpoint (encoder differs" in capsys.readouterr().err


def test_evaluation_needs_the_runs_encoder(trained: tuple[TinyData, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    data, run = trained
    other = tmp_path / "other.safetensors"
    save_safetensors(random_networks("vgg16", seed=1)[0], other, "vgg16")
    assert export(data, run, "-o", tmp_path / "d.safetensors", "--encoder", other) == 0
    assert "sha256" in json.loads((tmp_path / "d.json").read_text())["held_out"]["skipped"]
    assert "held-out evaluation skipped" in capsys.readouterr().err


def test_export_errors(trained: tuple[TinyData, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data, run = trained
    assert export(data, tmp_path / "missing", "-o", tmp_path / "d.safetensors") == 2
    assert "no such run folder or checkpoint" in capsys.readouterr().err
    state = latest_checkpoint(run)[1]
    state["decoder"]["1.weight"][0, 0, 0, 0] = 1e6
    huge = tmp_path / "huge.pt"
    torch.save(state, huge)
    assert export(data, huge, "-o", tmp_path / "d.safetensors", "--no-eval") == 2
    assert "does not fit fp16" in capsys.readouterr().err
    assert not (tmp_path / "d.safetensors").exists()
    assert export(data, huge, "-o", tmp_path / "d.safetensors", "--no-eval", "--dtype", "fp32") == 0


MANIFEST = """
[models.mine]
arch = "vgg16"
[models.mine.encoder]
source = "url"
url = "https://example.invalid/encoder.safetensors"
filename = "encoder.safetensors"
[models.mine.decoder]
source = "package"
filename = "shipped-decoder.safetensors"
"""


def test_export_refuses_to_overwrite_a_file_of_the_manifest_unless_forced(
        trained: tuple[TinyData, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    data, run = trained
    shipped = tmp_path / "weights" / "shipped-decoder.safetensors"  # a decoder shipped next to the manifest
    shipped.parent.mkdir()
    shipped.write_bytes(b"the shipped decoder")
    (shipped.parent / "models.toml").write_text(MANIFEST)
    monkeypatch.setenv("ADAIN_MANIFEST", str(shipped.parent / "models.toml"))
    cached = data.home / "mine" / "encoder.safetensors"  # a file of the same manifest in the cache
    monkeypatch.chdir(tmp_path)
    for target, what in ((Path("weights/../weights/shipped-decoder.safetensors"), "the decoder of model mine"),
                         (cached, "the encoder of model mine")):
        assert export(data, run, "-o", target, "--no-eval") == 2
        err = capsys.readouterr().err
        assert f"{target} is {what} in the manifest" in err and "--force" in err, err
    assert shipped.read_bytes() == b"the shipped decoder" and not cached.exists()
    assert not shipped.with_suffix(".json").exists()

    assert export(data, run, "-o", shipped, "--no-eval", "--force") == 0
    assert read_arch(shipped) == "vgg16" and shipped.with_suffix(".json").is_file()


def test_a_run_from_an_init_decoder_names_it_and_starts_there(trained: tuple[TinyData, Path], tmp_path: Path) -> None:
    data, run = trained
    first = tmp_path / "first.safetensors"
    assert export(data, run, "-o", first, "--eval-pairs", 2) == 0
    first_card = json.loads(first.with_suffix(".json").read_text())
    more = tmp_path / "more"
    assert run_train(data, train_argv(data, more, steps=1, lr=0, init_decoder=first)) == 0  # lr 0: still `first`
    second = tmp_path / "second.safetensors"
    assert export(data, more, "-o", second, "--eval-pairs", 2) == 0
    card = json.loads(second.with_suffix(".json").read_text())
    lineage = card["training"]["init_decoder"]
    assert (lineage["file"], lineage["sha256"], lineage["steps"]) == (first.name, sha256_file(first), 3)
    held_out = card["held_out"]
    assert held_out["step_0"] == held_out["trained"]
    for key in ("content", "style"):  # the same held-out pairs, the same weights as the first export
        assert held_out["step_0"][key] == pytest.approx(first_card["held_out"]["trained"][key], rel=1e-4)
    first.unlink()  # the step_0 reference is gone: the card says so instead of guessing
    assert export(data, more, "-o", second, "--eval-pairs", 2) == 0
    assert "--init-decoder" in json.loads(second.with_suffix(".json").read_text())["held_out"]["skipped"]


def test_export_mixes_in_decoder_files(trained: tuple[TinyData, Path], tmp_path: Path) -> None:
    data, run = trained
    two = tmp_path / "two.safetensors"  # another decoder of the same run, with its own card
    assert export(data, run / "ckpt-00000002.pt", "-o", two, "--dtype", "fp32", "--no-eval") == 0
    other = tmp_path / "other.safetensors"  # no card, no encoder in its metadata
    save_safetensors(random_networks("vgg16", seed=3)[1], other, "vgg16")
    out = tmp_path / "mixed.safetensors"
    assert export(data, run, "-o", out, "--dtype", "fp32", "--no-eval", "--average", 2,
                  "--mix", f"{two}:0.25", "--mix", f"{other}:0.125") == 0

    steps = [torch.load(run / f"ckpt-0000000{s}.pt", weights_only=True)["decoder"] for s in (2, 3)]
    extra = {"two": build_decoder(two, "vgg16").layers.state_dict(),
             "other": build_decoder(other, "vgg16").layers.state_dict()}
    for key, value in build_decoder(out, "vgg16").layers.state_dict().items():
        averaged = (steps[0][key].double() + steps[1][key].double()) / 2
        expected = 0.625 * averaged + 0.25 * extra["two"][key].double() + 0.125 * extra["other"][key].double()
        torch.testing.assert_close(value, expected.float())
    card = json.loads(out.with_suffix(".json").read_text())["checkpoint"]
    assert card["averaged_steps"] == [2, 3]
    assert [(m["file"], m["sha256"], m["weight"], m["steps"]) for m in card["mixed_with"]] == [
        (two.name, sha256_file(two), 0.25, 2), (other.name, sha256_file(other), 0.125, None)]  # names, no paths
    assert export(data, run, "-o", tmp_path / "plain.safetensors", "--no-eval") == 0
    assert json.loads((tmp_path / "plain.json").read_text())["checkpoint"]["mixed_with"] == []


def test_mix_refuses_what_does_not_fit(trained: tuple[TinyData, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    data, run = trained
    out = tmp_path / "d.safetensors"
    fits = tmp_path / "fits.safetensors"
    assert export(data, run, "-o", fits, "--no-eval") == 0
    other_layer = tmp_path / "relu3_1.safetensors"
    save_safetensors(random_networks("vgg16", layer="relu3_1")[1], other_layer, "vgg16")
    other_encoder = tmp_path / "other-encoder.safetensors"
    save_safetensors(random_networks("vgg16")[1], other_encoder, "vgg16", metadata={"encoder_sha256": "f" * 64})
    vgg19 = tmp_path / "vgg19.safetensors"
    save_safetensors(random_networks("vgg19")[1], vgg19, "vgg19")
    extra = tmp_path / "extra.safetensors"
    save_safetensors(random_networks("vgg16", extra_convs=1)[1], extra, "vgg16")
    refused = {f"{fits}:0.5 {fits}:0.5": "add up to 1: they must leave the run a share",
               f"{tmp_path / 'missing.safetensors'}:0.5": "weight file not found",
               f"{other_layer}:0.5": "decodes relu3_1, the run's decoder decodes relu4_1",
               f"{other_encoder}:0.5": "trained against encoder ffffffffffff..., not the run's",
               f"{vgg19}:0.5": "a vgg19 decoder, the run's is vgg16",
               f"{extra}:0.5": "extra convs: 1, the run's decoder's: 0"}
    for mixes, message in refused.items():
        argv = [a for m in mixes.split() for a in ("--mix", m)]
        assert export(data, run, "-o", out, "--no-eval", *argv) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()
    for bad in (f"{fits}", f"{fits}:1", f"{fits}:0", f"{fits}:half", ":0.5"):
        with pytest.raises(SystemExit):
            export(data, run, "-o", out, "--mix", bad)
        assert "--mix" in capsys.readouterr().err


def test_mix_splits_at_the_last_colon() -> None:
    assert mix_arg("C:/runs/a:b.safetensors:0.2") == Mix(Path("C:/runs/a:b.safetensors"), 0.2)


def test_a_run_grows_skips_onto_a_decoder_without_them(tmp_path: Path, weight_files: dict) -> None:
    from adain.net import SkipJoin

    data = make_tiny_data(tmp_path, weight_files["vgg16"]["encoder_st"])
    plain = random_networks("vgg16", seed=6, layer="relu3_1")[1]
    save_safetensors(plain, tmp_path / "plain.safetensors", "vgg16")
    run = tmp_path / "run"
    assert run_train(data, train_argv(data, run, steps=1, lr=0, init_decoder=tmp_path / "plain.safetensors",
                                      skips="relu1_1,relu2_1", skip_strength=0.3)) == 0  # lr 0: the grown start
    state = latest_checkpoint(run)[1]
    assert (state["skips"], state["skip_strength"]) == (["relu1_1", "relu2_1"], 0.3)
    assert export(data, run, "-o", tmp_path / "grown.safetensors", "--dtype", "fp32", "--eval-pairs", 2) == 0
    held_out = json.loads((tmp_path / "grown.json").read_text())["held_out"]
    assert held_out["trained"] == held_out["step_0"]  # the step-0 reference is grown the same way
    grown = build_decoder(tmp_path / "grown.safetensors", "vgg16")
    assert all(not torch.allclose(j.scale, torch.ones_like(j.scale)) for j in grown.layers if isinstance(j, SkipJoin))
    x, skips = torch.rand(1, 256, 8, 8), [torch.rand(1, 64, 32, 32), torch.rand(1, 128, 16, 16)]
    with torch.no_grad():
        torch.testing.assert_close(grown([*skips, x]), plain(x))


def test_a_term_newer_than_the_run_reads_as_off_in_the_card() -> None:
    from adain.train.export import objective_of

    older_run = {"layer": "relu3_1", "skips": [], "loss": "paper", "style_weight": 1.25, "grid_weight": 1000.0}
    objective = objective_of(older_run)
    assert objective["style_weight"] == 1.25 and objective["grid_weight"] == 1000.0
    assert objective["coarse_weight"] == 0.0 and objective["colour_weight"] == 0.0  # not null: it was off
    assert objective["extra_convs"] == 0


def test_a_run_grows_extra_convs_onto_a_decoder_and_exports_them(tmp_path: Path, weight_files: dict, capsys) -> None:
    from adain.bundles.layouts import read_metadata
    from tests.train_support import resume_argv

    data = make_tiny_data(tmp_path, weight_files["vgg16"]["encoder_st"])
    plain = random_networks("vgg16", seed=6, layer="relu3_1", skips=("relu1_1", "relu2_1"))[1]
    save_safetensors(plain, tmp_path / "plain.safetensors", "vgg16")
    run = tmp_path / "run"
    assert run_train(data, train_argv(data, run, steps=1, lr=0, init_decoder=tmp_path / "plain.safetensors",
                                      extra_convs=2)) == 0  # lr 0: the grown start
    state = latest_checkpoint(run)[1]
    assert (state["extra_convs"], state["skips"]) == (2, ["relu1_1", "relu2_1"])
    assert run_train(data, resume_argv(run, steps=2, extra_convs=3)) == 2
    assert "--extra-convs cannot change on --resume" in capsys.readouterr().err
    out = tmp_path / "extra.safetensors"
    assert export(data, run, "-o", out, "--dtype", "fp32", "--eval-pairs", 2) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["objective"]["extra_convs"] == 2
    assert card["held_out"]["trained"] == card["held_out"]["step_0"]  # the step-0 reference is grown the same way
    assert read_metadata(out)["extra_convs"] == "2"
    grown = build_decoder(out, "vgg16")
    assert grown.extra_convs == 2
    feats = [torch.rand(1, 64, 32, 32), torch.rand(1, 128, 16, 16), torch.randn(1, 256, 8, 8)]
    with torch.no_grad():
        torch.testing.assert_close(grown(feats), plain(feats))

    again = tmp_path / "again"  # a run from the grown file inherits its extra convs
    assert run_train(data, train_argv(data, again, steps=1, lr=0, init_decoder=out)) == 0
    assert latest_checkpoint(again)[1]["extra_convs"] == 2
