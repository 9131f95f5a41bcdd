"""Balanced style mixing (adain.optimize.balance): the calibration and its effect in both modes."""

from __future__ import annotations

import pytest
import torch

from adain import InputError
from adain.images import prepare, read_image
from adain.optimize.balance import (
    AdainMixer,
    balance_factors,
    balanced_weights,
    equalise,
    optimize_improvements,
    relative_improvements,
    spread,
)
from adain.optimize.gatys import Objective, OptimizeOptions
from adain.optimize.transfer import optimize_image
from tests.conftest import TINY_SIZE

pytestmark = pytest.mark.usefixtures("single_thread")

SIZE = TINY_SIZE
# Enough style weight for the tiny losses of random weights to move the pixels.
OPTIONS = OptimizeOptions(iterations=10, init="content", style_weight=1e5)


@pytest.fixture(scope="module")
def pair(style_paths):
    """Two styles that random weights see very differently from the content: unbalanced, one dominates."""
    return [prepare(read_image(style_paths[i]), SIZE, True) for i in (4, 5)]


def _response(offsets: list[float], gain: float):
    """A made-up stylization: log improvement_i = offset_i + gain * log b_i, both against their means."""
    calls = []

    def measure(b: torch.Tensor) -> torch.Tensor:
        calls.append(b)
        log_b = b.double().log()
        return (torch.tensor(offsets, dtype=torch.float64) + gain * (log_b - log_b.mean())).exp()

    return measure, calls


@pytest.mark.parametrize("gain", [0.4, 1.0, 3.0])
def test_equalise_finds_equal_improvements(gain):
    measure, calls = _response([0.8, -0.5, 0.1], gain)
    factors = equalise(measure, torch.ones(3), rounds=6, tol=0.01, slope=2.0)
    assert spread(measure(factors)) <= 1.01
    assert len(calls) <= 6 + 1


def test_equalise_keeps_the_start_when_nothing_helps():
    measure, calls = _response([0.8, -0.5], gain=-1.0)  # the wrong way round: more factor, less improvement
    start = torch.tensor([1.0, 2.0])
    torch.testing.assert_close(equalise(measure, start, rounds=4, tol=0.01, slope=1.0), start)
    assert len(calls) == 4


def test_equalise_stays_within_16_times_the_start():
    measure, _ = _response([5.0, -5.0], gain=1.0)  # balance would need factors 150 times apart
    factors = equalise(measure, torch.ones(2), rounds=8, tol=0.01, slope=1.0)
    assert factors.min() >= 1 / 16 - 1e-6 and factors.max() <= 16 + 1e-6
    assert spread(measure(factors)) < spread(measure(torch.ones(2)))


def test_equalise_stops_when_balanced():
    measure, calls = _response([0.0, 0.0], gain=1.0)
    equalise(measure, torch.ones(2), rounds=5, tol=0.01, slope=1.0)
    assert len(calls) == 1


def test_balance_brings_the_ratio_to_one(tiny_stylizer, tiny_content, pair):
    objective = Objective(tiny_stylizer.encoder, tiny_content, pair, torch.tensor([0.5, 0.5]), None, OPTIONS)
    raw = optimize_improvements(objective, tiny_content[None], torch.ones(2))
    factors = balance_factors(objective, tiny_content[None])
    balanced = optimize_improvements(objective, tiny_content[None], factors)
    assert spread(raw) > 2.0
    assert spread(balanced) < 1.1


def test_factors_keep_the_style_loss_of_the_content(tiny_stylizer, tiny_content, pair):
    objective = Objective(tiny_stylizer.encoder, tiny_content, pair, torch.tensor([0.2, 0.8]), None, OPTIONS)
    factors = balance_factors(objective, tiny_content[None], rounds=1)
    with torch.no_grad():
        start = objective.style_losses(objective.features(tiny_content))
    assert (factors * start).mean().item() == pytest.approx(start.mean().item(), rel=1e-5)
    assert objective.weights.tolist() == pytest.approx([0.2, 0.8])  # restored after the calibration


def _improvements_of(result) -> torch.Tensor:
    return torch.tensor(result.history[0]["styles"]) / torch.tensor(result.history[-1]["styles"])


def test_optimize_image_balance(tiny_stylizer, tiny_content, pair):
    plain = optimize_image(tiny_stylizer.encoder, tiny_content, pair, options=OPTIONS)
    balanced = optimize_image(tiny_stylizer.encoder, tiny_content, pair, options=OPTIONS, balance=True)
    assert plain.factors == [1.0, 1.0] and balanced.factors != [1.0, 1.0]
    assert spread(_improvements_of(balanced)) < 1.1 < spread(_improvements_of(plain))
    single = optimize_image(tiny_stylizer.encoder, tiny_content, pair[:1], options=OPTIONS, balance=True)
    assert single.factors == [1.0]


def test_balance_scales_the_weights_it_is_given(tiny_stylizer, tiny_content, pair):
    """Factors are calibrated at equal weights, then multiply the user's: 1:3 stays 1:3 on top of balance."""
    objective = Objective(tiny_stylizer.encoder, tiny_content, pair, torch.tensor([0.25, 0.75]), None, OPTIONS)
    objective.factors = torch.tensor([2.0, 0.5])
    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    terms = objective(image)
    assert terms.style.item() == pytest.approx((0.25 * 2.0 * terms.styles[0] + 0.75 * 0.5 * terms.styles[1]).item())


def test_balanced_weights_never_worse_than_the_plain_blend(tiny_stylizer, tiny_content, style_paths):
    styles = [prepare(read_image(p), SIZE, True) for p in style_paths[:4]]
    for pair in (styles[:2], styles[2:]):
        mixer = AdainMixer(tiny_stylizer, tiny_content, pair)
        weights = balanced_weights(tiny_stylizer, tiny_content, pair)
        assert weights.sum().item() == pytest.approx(1.0)
        assert spread(mixer.improvements(weights)) <= spread(mixer.improvements(torch.tensor([0.5, 0.5])))


def test_balanced_weights_follow_the_weights(tiny_stylizer, tiny_content, style_paths):
    pair = [prepare(read_image(p), SIZE, True) for p in style_paths[:2]]
    even = balanced_weights(tiny_stylizer, tiny_content, pair)
    skewed = balanced_weights(tiny_stylizer, tiny_content, pair, [1.0, 3.0])
    ratio = (skewed / even).tolist()
    assert ratio[1] / ratio[0] == pytest.approx(3.0, rel=1e-4)
    assert balanced_weights(tiny_stylizer, tiny_content, pair[:1]).tolist() == [1.0]


def test_balance_refuses_a_mask(tiny_stylizer, tiny_content, pair):
    with pytest.raises(InputError, match="mask"):
        balanced_weights(tiny_stylizer, tiny_content, pair, mask=torch.ones(2, SIZE, SIZE))


def test_relative_improvement_is_start_over_end():
    r = relative_improvements(torch.tensor([4.0, 1.0]), torch.tensor([1.0, 0.5]))
    assert r.tolist() == [4.0, 2.0] and spread(r) == 2.0
