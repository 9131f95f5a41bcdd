"""Optimisation-based style transfer (adain.optimize) on random weights and tiny real images."""

from __future__ import annotations

import pytest
import torch

from adain import InputError
from adain.images import prepare, read_image
from adain.ops import rgb_to_ycbcr
from adain.optimize.gatys import Objective, OptimizeOptions, gram, mean_std
from adain.optimize.transfer import optimize_image
from tests.conftest import TINY_SIZE, random_networks

pytestmark = pytest.mark.usefixtures("single_thread")

SIZE = TINY_SIZE


@pytest.fixture(scope="module")
def encoder():
    return random_networks("vgg16", seed=1)[0]


@pytest.fixture(scope="module")
def styles(style_paths):
    return [prepare(read_image(p), SIZE, True) for p in style_paths[:2]]


def _opts(**kw) -> OptimizeOptions:
    return OptimizeOptions(**{"iterations": 8, "init": "content", **kw})


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_losses_decrease(encoder, tiny_content, styles, optimizer):
    result = optimize_image(encoder, tiny_content, styles[:1], options=_opts(optimizer=optimizer, iterations=12))
    first, last = result.history[0], result.history[-1]
    assert len(result.history) == 12
    assert last["loss"] < 0.5 * first["loss"]
    assert last["styles"][0] < first["styles"][0]
    assert result.image.shape == tiny_content.shape
    assert 0 <= result.image.min() and result.image.max() <= 1
    assert not torch.equal(result.image, tiny_content)


@pytest.mark.parametrize(("term", "init", "weight"), [("content", "noise", 1.0), ("style", "content", 1e5),
                                                     ("tv", "noise", 1.0)])
def test_each_term_alone_decreases(encoder, tiny_content, styles, term, init, weight):
    weights = {"content_weight": 0.0, "style_weight": 0.0, "tv_weight": 0.0, f"{term}_weight": weight}
    history = optimize_image(encoder, tiny_content, styles[:1], options=_opts(init=init, **weights)).history
    key = "styles" if term == "style" else term
    assert torch.tensor(history[-1][key]).sum() < 0.9 * torch.tensor(history[0][key]).sum()


def test_all_terms_off_leaves_the_start(encoder, tiny_content, styles):
    off = _opts(content_weight=0.0, style_weight=0.0, tv_weight=0.0, optimizer="adam")
    assert torch.equal(optimize_image(encoder, tiny_content, styles[:1], options=off).image, tiny_content)


def test_style_off_ignores_the_style(encoder, tiny_content, styles):
    off = _opts(style_weight=0.0)
    a, b = (optimize_image(encoder, tiny_content, [s], options=off).image for s in styles)
    assert torch.equal(a, b)


def test_content_off_ignores_the_content(encoder, tiny_content, styles):
    off = _opts(content_weight=0.0, init="noise")
    other = tiny_content.flip(-1)
    a, b = (optimize_image(encoder, c, styles[:1], options=off).image for c in (tiny_content, other))
    assert torch.equal(a, b)


def test_tv_off_is_not_in_the_loss(encoder, tiny_content, styles):
    o = _opts(tv_weight=0.0, style_weight=3.0)
    for e in optimize_image(encoder, tiny_content, styles[:1], options=o).history:
        assert e["tv"] > 0
        assert e["loss"] == pytest.approx(e["content"] + 3.0 * e["style"], rel=1e-5)


@pytest.mark.parametrize("kind", ["gram", "stats"])
def test_multi_style_loss_is_the_weighted_sum(encoder, tiny_content, styles, kind):
    o = _opts(style_loss=kind)
    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    both = Objective(encoder, tiny_content, styles, torch.tensor([0.3, 0.7]), None, o)(image)
    singles = [Objective(encoder, tiny_content, [s], torch.ones(1), None, o)(image).style for s in styles]
    assert both.styles.tolist() == pytest.approx([s.item() for s in singles], rel=1e-5)
    assert both.style.item() == pytest.approx(0.3 * singles[0].item() + 0.7 * singles[1].item(), rel=1e-5)


def test_masked_loss_is_each_styles_region(encoder, tiny_content, styles):
    o = _opts()
    masks = torch.zeros(2, SIZE, SIZE)
    masks[0, :, : SIZE // 2] = 1
    masks[1] = 1 - masks[0]
    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    both = Objective(encoder, tiny_content, styles, torch.tensor([0.5, 0.5]), masks, o)(image)
    pairs = zip(styles, masks, strict=True)
    singles = [Objective(encoder, tiny_content, [s], torch.ones(1), m[None], o)(image) for s, m in pairs]
    assert both.styles.tolist() == pytest.approx([s.styles.item() for s in singles], rel=1e-5)
    whole = Objective(encoder, tiny_content, styles[:1], torch.ones(1), None, o)(image)
    assert whole.styles.item() != pytest.approx(singles[0].styles.item(), rel=1e-3)


@pytest.mark.parametrize("describe", [gram, mean_std])
def test_hard_masks_select_positions(describe):
    feat = torch.randn(1, 5, 6, 8)
    masks = torch.zeros(2, 6, 8)
    masks[0, :, :3] = 1
    masks[1, :, 3:] = 1
    regions = describe(feat, masks)
    torch.testing.assert_close(regions[0], describe(feat[..., :3])[0])
    torch.testing.assert_close(regions[1], describe(feat[..., 3:])[0])


def test_seed_makes_it_deterministic(encoder, tiny_content, styles):
    runs = [optimize_image(encoder, tiny_content, styles, options=_opts(init="noise", seed=s, optimizer=opt))
            for s, opt in ((3, "lbfgs"), (3, "lbfgs"), (4, "lbfgs"), (3, "adam"), (3, "adam"))]
    assert torch.equal(runs[0].image, runs[1].image) and runs[0].history == runs[1].history
    assert torch.equal(runs[3].image, runs[4].image)
    assert not torch.equal(runs[0].image, runs[2].image)


def test_luminance_keeps_the_content_colours(encoder, tiny_content, styles):
    out = optimize_image(encoder, tiny_content, styles[:1], preserve_color="luminance", options=_opts()).image
    chroma = lambda img: rgb_to_ycbcr(img)[1:]  # noqa: E731
    inside = (out > 0.02).all(0) & (out < 0.98).all(0)  # clamping moves the colours of saturated pixels
    assert inside.float().mean() > 0.5
    torch.testing.assert_close(chroma(out)[:, inside], chroma(tiny_content)[:, inside], atol=2e-3, rtol=0)
    assert (rgb_to_ycbcr(out)[0] - rgb_to_ycbcr(tiny_content)[0]).abs().mean() > 0.01


def test_coral_runs_on_colour_matched_styles(encoder, tiny_content, styles):
    plain, coral = (optimize_image(encoder, tiny_content, styles[:1], preserve_color=m, options=_opts()).image
                    for m in ("none", "coral"))
    assert not torch.equal(plain, coral)


def test_adain_start_needs_a_decoder(encoder, tiny_stylizer, tiny_content, styles):
    with pytest.raises(InputError, match="decoder"):
        optimize_image(encoder, tiny_content, styles, options=_opts(init="adain"))
    off = _opts(init="adain", content_weight=0.0, style_weight=0.0, tv_weight=0.0)
    assert torch.equal(optimize_image(tiny_stylizer, tiny_content, styles, options=off).image,
                       tiny_stylizer.stylize(tiny_content, styles))


def test_max_iterations_caps_the_run(encoder, tiny_content, styles):
    result = optimize_image(encoder, tiny_content, styles[:1], options=_opts(optimizer="adam", iterations=50),
                            max_iterations=3)
    assert len(result.history) == 3


@pytest.mark.parametrize("bad", [
    {"iterations": 0}, {"optimizer": "sgd"}, {"init": "zeros"}, {"style_loss": "l1"}, {"lr": 0.0},
    {"style_weight": -1.0}, {"tv_weight": float("nan")}, {"style_layer_weights": (1.0, 1.0)},
    {"content_layers": ("relu5_1",)}, {"content_layers": ()},
])
def test_bad_options_are_refused(bad):
    with pytest.raises(InputError):
        OptimizeOptions(**bad)


def test_bad_inputs_are_refused(encoder, tiny_content, styles):
    with pytest.raises(InputError, match="weights"):
        optimize_image(encoder, tiny_content, styles, weights=[1.0], options=_opts())
    with pytest.raises(InputError, match="mask"):
        optimize_image(encoder, tiny_content, styles, mask=torch.ones(2, SIZE, SIZE), balance=True, options=_opts())
    with pytest.raises(InputError, match="at least"):
        optimize_image(encoder, tiny_content, styles, style_size=8, options=_opts())
