"""The training objectives beyond the paper's: hybrid content terms, reconstruction warm start, warm-up,
several style folders, AdaIN at relu3_1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor

from adain import Stylizer
from adain.bundles.layouts import build_decoder
from adain.train.loop import lr_at
from adain.train.losses import (
    feature_distribution_loss,
    grid_loss,
    layout_loss,
    normalised_feature_loss,
    phase_profile,
    style_losses,
)
from adain.train.objective import TrainingObjective, compute_losses
from adain.train.quality import grid_ratio
from adain.train.runs import latest_checkpoint, read_training_log
from adain.train.setup import Models
from tests.conftest import random_networks
from tests.train_support import TinyData, make_tiny_data, resume_argv, run_train, train_argv, write_images

pytestmark = pytest.mark.usefixtures("single_thread")


def test_warm_up_ramps_linearly_then_decays() -> None:
    assert lr_at(0, 1e-4, 0, warmup=10) == pytest.approx(1e-5)
    assert lr_at(4, 1e-4, 0, warmup=10) == pytest.approx(5e-5)
    assert lr_at(9, 1e-4, 0, warmup=10) == pytest.approx(1e-4)
    assert lr_at(20_000, 1e-4, 5e-5, warmup=10) == pytest.approx(5e-5)


def test_layout_and_structure_losses_ignore_tone_but_see_shapes(content_paths: list[Path]) -> None:
    from adain.images import prepare, read_image

    photo = prepare(read_image(content_paths[2]), 64, True)[None]
    other = prepare(read_image(content_paths[3]), 64, True)[None]
    assert layout_loss(0.3 + 0.5 * photo, photo) < 1e-3  # an affine change of tone keeps the layout
    assert layout_loss(other, photo) > 0.2
    enc, _ = random_networks("vgg16", seed=1)
    f_photo, f_other = enc.features(photo)[2], enc.features(other)[2]
    assert normalised_feature_loss(2 * f_photo, f_photo) < 0.01
    assert normalised_feature_loss(f_other, f_photo) > 0.1


def test_each_term_of_the_objective_adds_to_the_content_side_loss(content_paths: list[Path]) -> None:
    from adain.images import prepare, read_image

    enc, dec = random_networks("vgg16", seed=2)
    models = Models(enc, dec)
    c = prepare(read_image(content_paths[0]), 32, True)[None]
    s = prepare(read_image(content_paths[1]), 32, True)[None]
    with torch.no_grad():
        paper, style, _, extra = compute_losses(models, c, s)
        terms = [compute_losses(models, c, s, TrainingObjective(**{k: 1.0}))[0] - paper
                 for k in ("structure", "layout", "pixel", "grid")]
        features = compute_losses(models, c, s, TrainingObjective(features=2.0))
    assert len(style) == 4 and all(t > 0 for t in terms)
    assert extra == {} and features[0] == paper  # the features term is a style term, apart from the content side
    assert set(features[3]) == {"features"} and features[3]["features"] > 0


def test_content_layers_add_the_paper_content_loss_at_each_against_adain_there(content_paths: list[Path]) -> None:
    from adain import ops
    from adain.images import prepare, read_image

    enc, dec = random_networks("vgg16", seed=2, skips=("relu1_1", "relu2_1", "relu3_1"))
    dec.skip_strength = (0.3, 0.3, 0.5)  # the extra term's target is not weakened
    models = Models(enc, dec)
    c = prepare(read_image(content_paths[0]), 32, True)[None]
    s = prepare(read_image(content_paths[1]), 32, True)[None]
    with torch.no_grad():
        paper, _, out, _ = compute_losses(models, c, s)
        more = compute_losses(models, c, s, TrainingObjective(content_layers=("relu3_1",)))[0]
        cf, sf, of = enc.features(c), enc.features(s), enc.features(out)
        expected = torch.nn.functional.mse_loss(of[2], ops.adain(cf[2], ops.channel_stats(sf[2])))
        torch.testing.assert_close(more - paper, expected)
        recon = compute_losses(models, c, c, TrainingObjective(content_layers=("relu3_1",)))
        recon_paper = compute_losses(models, c, c)[0]
        of = enc.features(recon[2])
        torch.testing.assert_close(recon[0] - recon_paper, torch.nn.functional.mse_loss(of[2], cf[2]))


def test_grain_noises_the_photo_the_encoder_sees_in_style_steps(content_paths: list[Path]) -> None:
    """With grain the AdaIN target is the noisy photo's (a new draw each step); the grid term, against the photo
    itself, is unchanged; reconstruction steps take no grain."""
    from adain import ops
    from adain.images import prepare, read_image
    from adain.train.losses import grid_loss

    enc, dec = random_networks("vgg16", seed=2)
    models = Models(enc, dec)
    c = prepare(read_image(content_paths[0]), 32, True)[None]
    s = prepare(read_image(content_paths[1]), 32, True)[None]
    grainy = TrainingObjective(grain=0.1, grid=1.0)
    with torch.no_grad():
        torch.manual_seed(5)
        lc, _, out, _ = compute_losses(models, c, s, grainy)
        torch.manual_seed(5)
        seen = (c + 0.1 * torch.randn_like(c)).clamp(0, 1)
        target = ops.adain(enc.features(seen, "relu4_1")[-1], ops.channel_stats(enc.features(s)[-1]))
        expected = torch.nn.functional.mse_loss(enc.features(out)[-1], target) + grid_loss(out, c)
        torch.testing.assert_close(lc, expected)
        torch.testing.assert_close(out, dec([target], tuple(c.shape[-2:])))
        assert not torch.equal(compute_losses(models, c, s, grainy)[2], out)  # another draw
        plain = compute_losses(models, c, c, TrainingObjective(grid=1.0))
        torch.testing.assert_close(compute_losses(models, c, c, grainy)[0], plain[0])  # no grain in reconstruction


def test_strokes_go_into_the_decoder_but_not_into_the_content_target(content_paths: list[Path]) -> None:
    """With strokes the decoder decodes AdaIN's output plus stroke noise (a new draw each step) while the content
    loss's target stays AdaIN's output; reconstruction steps take none."""
    from adain import ops
    from adain.images import prepare, read_image
    from adain.strokes import stroke_noise

    enc, dec = random_networks("vgg16", seed=2, layer="relu3_1")
    models = Models(enc.at("relu3_1"), dec)
    c = prepare(read_image(content_paths[0]), 64, True)[None]
    s = prepare(read_image(content_paths[1]), 64, True)[None]
    stroked = TrainingObjective(strokes=1.0)
    with torch.no_grad():
        torch.manual_seed(5)
        lc, _, out, _ = compute_losses(models, c, s, stroked)
        target = ops.adain(enc.features(c, "relu3_1")[-1], ops.channel_stats(enc.features(s)[2]))
        torch.manual_seed(5)
        given = target + stroke_noise(target, [1.0], seed=None)
        torch.testing.assert_close(out, dec([given], tuple(c.shape[-2:])))
        torch.testing.assert_close(lc, torch.nn.functional.mse_loss(enc.features(out)[2], target))
        assert (out - dec([target], tuple(c.shape[-2:]))).abs().mean() > 1e-4  # the strokes changed the output
        assert not torch.equal(compute_losses(models, c, s, stroked)[2], out)  # another draw
        plain = compute_losses(models, c, c, TrainingObjective())
        torch.testing.assert_close(compute_losses(models, c, c, stroked)[2], plain[2])  # none in reconstruction


def test_the_feature_distribution_loss_sees_what_means_and_stds_miss() -> None:
    """Two feature maps with the same per-channel means and stds but different joint distributions: the paper's
    style loss cannot tell them apart, the sliced Wasserstein distance can; it is 0 for any reordering of the
    pixels (a distribution, not a picture) and falls as one map is moved towards the other."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1, 2, 24, 24, generator=g)
    together = a.clone()
    together[:, 1] = a[:, 0]  # channel 1 follows channel 0: strokes that light both at once
    apart = a.clone()  # independent channels with the same moments
    apart[:, 1] = (apart[:, 1] - apart[:, 1].mean()) / apart[:, 1].std() * together[:, 1].std() + together[:, 1].mean()
    torch.manual_seed(0)
    assert float(torch.stack(style_losses([apart], [together])).sum()) < 1e-3
    assert feature_distribution_loss([apart], [together]) > 0.1
    shuffled = together.flatten(2)[..., torch.randperm(24 * 24, generator=g)].view_as(together)
    assert feature_distribution_loss([shuffled], [together]) < 1e-6
    x = apart.clone().requires_grad_()
    optimizer = torch.optim.Adam([x], lr=0.05)
    first = float(feature_distribution_loss([apart], [together]))
    for _ in range(100):
        optimizer.zero_grad()
        feature_distribution_loss([x], [together]).backward()
        optimizer.step()
    assert float(feature_distribution_loss([x.detach()], [together])) < 0.2 * first


def test_reconstruction_steps_come_first_then_every_nth() -> None:
    from argparse import Namespace

    from adain.train.objective import is_reconstruction, objective_at

    args = Namespace(recon_steps=3, recon_every=4, structure_weight=0.0, layout_weight=0.0, grid_weight=0.0,
                     colour_weight=5.0, texture_weight=6.0, features_weight=7.0, coarse_weight=8.0, layer="relu4_1",
                     content_layers=["relu3_1", "relu4_1"], grain=0.1, patch_weight=9.0, strokes=0.5)
    assert [s for s in range(16) if is_reconstruction(args, s)] == [0, 1, 2, 3, 7, 11, 15]
    extra = ("relu3_1",)  # the content loss's layers besides the decoder's, in every step
    # style terms, grain and strokes off
    assert objective_at(args, 7) == (TrainingObjective(pixel=10.0, content_layers=extra), True)
    assert objective_at(args, 8) == (TrainingObjective(colour=5.0, texture=6.0, features=7.0, coarse=8.0,
                                                       content_layers=extra, grain=0.1, patch=9.0, strokes=0.5), False)
    args.recon_every = 0
    assert [s for s in range(16) if is_reconstruction(args, s)] == [0, 1, 2]


def test_the_coarse_term_is_the_style_terms_of_the_half_size_images(content_paths: list[Path],
                                                                     style_paths: list[Path]) -> None:
    from adain.images import prepare, read_image
    from adain.train.losses import texture_loss
    from adain.train.objective import coarse_losses

    enc, _ = random_networks("vgg16", seed=3)
    small_out = prepare(read_image(content_paths[0]), 48, True)[None]
    small_style = prepare(read_image(style_paths[0]), 48, True)[None]
    # Each pixel repeated 2x2: the half-size copies (2x2 means) are the small images exactly.
    out, style = (torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest") for x in (small_out, small_style))
    objective = TrainingObjective(texture=6.0, coarse=0.5)
    expected = 0.5 * (2.0 * sum(style_losses(enc.features(small_out), enc.features(small_style)))
                      + 6.0 * texture_loss(small_out, small_style))
    got = coarse_losses(enc, out, style, objective, style_weight=2.0)
    assert float(got["coarse"]) == pytest.approx(float(expected), rel=1e-4)
    assert float(coarse_losses(enc, style, style, objective, 2.0)["coarse"]) < 1e-6 * float(expected)
    assert coarse_losses(enc, out, style, TrainingObjective(texture=6.0), 2.0) == {}  # off unless weighted
    grad_out = out.clone().requires_grad_(True)
    coarse_losses(enc, grad_out, style, objective, 2.0)["coarse"].backward()
    assert grad_out.grad is not None and grad_out.grad.abs().sum() > 0


def with_grid(img: Tensor, strength: float = 0.15) -> Tensor:
    """``img`` with every fourth row and column brightened: a period-4 grid like an upsampling decoder's."""
    out = img.clone()
    out[..., 3::4, :] += strength
    out[..., :, 3::4] += strength
    return out.clamp(0, 1)


def test_the_grid_loss_sees_a_periodic_grid_not_the_photo(content_paths: list[Path]) -> None:
    from adain.images import prepare, read_image

    photo = prepare(read_image(content_paths[2]), 96, True)[None]
    assert grid_loss(photo, photo) == 0
    assert grid_loss(0.2 + 0.6 * photo, photo) < 1e-6  # a change of tone has no phase
    shifted = grid_loss(photo[..., 1:, 1:], photo[..., :-1, :-1])  # the photo's own phase noise
    assert grid_loss(with_grid(photo), photo) > 10 * shifted
    # the peak of the profile is the evaluation's grid ratio (adain.train.quality, written from its definition)
    gridded = with_grid(photo)
    assert float(phase_profile(gridded, 4).max()) == pytest.approx(grid_ratio(gridded[0], 4), rel=1e-4)
    assert float(phase_profile(gridded, 8).max()) == pytest.approx(grid_ratio(gridded[0], 8), rel=1e-4)


def test_descending_the_grid_loss_removes_the_grid(content_paths: list[Path]) -> None:
    from adain.images import prepare, read_image

    photo = prepare(read_image(content_paths[2]), 96, True)[None]
    img = with_grid(photo).requires_grad_()
    before = grid_ratio(img[0].detach(), 4)
    optimizer = torch.optim.Adam([img], lr=3e-3)
    for _ in range(60):
        optimizer.zero_grad()
        grid_loss(img, photo).backward()
        optimizer.step()
    after = grid_ratio(img[0].detach().clamp(0, 1), 4)
    assert before > 1.3 and after < 1.1, (before, after)


def test_a_hybrid_run_with_a_reconstruction_start_learns_and_records_its_objective(tmp_path: Path,
                                                                                  weight_files: dict) -> None:
    data = make_tiny_data(tmp_path, weight_files["vgg16"]["encoder_st"], n_content=2, n_style=2, size=(32, 32))
    run = tmp_path / "run"
    argv = train_argv(data, run, steps=12, recon_steps=6, warmup=2, holdout_content=1, holdout_style=1,
                      lr_decay=0, lr=1e-3)
    assert run_train(data, argv) == 0
    losses = [r["loss"] for r in read_training_log(run) if r.get("split", "train") == "train"]
    assert len(losses) == 12 and sum(losses[4:6]) < sum(losses[:2])  # the reconstruction steps learn
    args = latest_checkpoint(run)[1]["args"]
    assert (args["loss"], args["structure_weight"], args["layout_weight"], args["recon_steps"]) == \
        ("hybrid", 1.0, 1.0, 6)  # hybrid brings its weights
    assert args["grid_weight"] == 0
    assert run_train(data, resume_argv(run, steps=14, grid_weight=50)) == 0  # a late phase against the grid
    assert run_train(data, resume_argv(run, steps=15)) == 0
    state = latest_checkpoint(run)[1]
    assert (state["args"]["grid_weight"], state["args"]["structure_weight"]) == (50, 1.0)
    assert state["changes"] == [{"step": 12, "args": {"steps": 14, "grid_weight": 50.0}},
                                {"step": 14, "args": {"steps": 15}}]
    out = tmp_path / "decoder.safetensors"
    assert run_train(data, ["export", str(run), "-o", str(out), "--no-eval"]) == 0
    training = json.loads(out.with_suffix(".json").read_text())["training"]
    assert training["objective"]["grid_weight"] == 50 and training["changed_on_resume"] == state["changes"]


def test_several_style_folders_each_hold_out_their_own(tmp_path: Path, weight_files: dict) -> None:
    data: TinyData = make_tiny_data(tmp_path, weight_files["vgg16"]["encoder_st"], n_content=3, n_style=3)
    vivid = tmp_path / "vivid"
    write_images(vivid, 3, seed=9)
    run = tmp_path / "run"
    argv = train_argv(data, run, steps=1, holdout_content=1, holdout_style=1, loss="paper")
    i = argv.index("--style-dir")
    argv[i + 1 : i + 2] = [str(data.style), str(vivid)]
    assert run_train(data, argv) == 0
    state = latest_checkpoint(run)[1]
    held = state["data"]["style"]["held_out"]
    assert len(held) == 2 and {Path(p).parent.name for p in held} == {"style", "vivid"}
    assert len(state["data"]["style"]["train"]) == 4
    assert state["args"]["structure_weight"] == 0.0


def test_a_relu3_1_run_trains_exports_and_stylizes_at_that_layer(tmp_path: Path, weight_files: dict,
                                                                 content_paths: list[Path]) -> None:
    """--layer relu3_1: the content loss and AdaIN work on relu3_1, and the exported file says so by its shape."""
    data = make_tiny_data(tmp_path, weight_files["vgg16"]["encoder_st"], n_content=3, n_style=3, size=(32, 32))
    run = tmp_path / "run"
    argv = train_argv(data, run, steps=4, holdout_content=1, holdout_style=1, loss="paper", layer="relu3_1",
                      lr=1e-3, lr_decay=0)
    assert run_train(data, argv) == 0
    state = latest_checkpoint(run)[1]
    assert state["layer"] == "relu3_1" and state["decoder"]["1.weight"].shape[1] == 256
    out = tmp_path / "decoder.safetensors"
    assert run_train(data, ["export", str(run), "-o", str(out), "--no-eval"]) == 0
    decoder = build_decoder(out, "vgg16")
    assert decoder.layer == "relu3_1" and decoder.scale == 4 and decoder.grain == 0.0
    stylizer = Stylizer.from_files(data.encoder, out, device="cpu")
    assert stylizer.encoder.layer == "relu3_1"
    from adain.images import read_image

    result = stylizer.stylize(read_image(content_paths[0]), [read_image(content_paths[1])], content_size=50)
    assert result.shape[0] == 3 and min(result.shape[1:]) == 50

    again = tmp_path / "again"  # a run from that file takes its layer without being told
    assert run_train(data, train_argv(data, again, steps=1, holdout_content=1, holdout_style=1, loss="paper",
                                      init_decoder=out)) == 0
    assert latest_checkpoint(again)[1]["layer"] == "relu3_1"


@pytest.mark.parametrize(("option", "value", "too_much"), [("grain", 0.1, 0.7), ("strokes", 0.5, 2.5)])
def test_a_run_with_noise_exports_a_decoder_that_stylizes_with_it(tmp_path: Path, weight_files: dict, option: str,
                                                                  value: float, too_much: float) -> None:
    """--grain (--strokes) is in the checkpoint, the model card's objective and the decoder file, whose Stylizer
    takes it; an amount out of range is refused before the run starts."""
    data = make_tiny_data(tmp_path, weight_files["vgg16"]["encoder_st"], n_content=2, n_style=2, size=(32, 32))
    run = tmp_path / "run"
    assert run_train(data, train_argv(data, run, steps=2, holdout_content=1, holdout_style=1, loss="paper",
                                      **{option: value})) == 0
    assert latest_checkpoint(run)[1]["args"][option] == value
    out = tmp_path / "decoder.safetensors"
    assert run_train(data, ["export", str(run), "-o", str(out), "--no-eval"]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["training"]["objective"][option] == value
    assert getattr(build_decoder(out, "vgg16"), option) == value
    assert getattr(Stylizer.from_files(data.encoder, out, device="cpu").decoder, option) == value
    with pytest.raises(SystemExit) as refused:
        run_train(data, train_argv(data, tmp_path / "bad", steps=1, **{option: too_much}))
    assert refused.value.code == 2 and not (tmp_path / "bad").exists()
