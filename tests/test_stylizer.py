"""Stylizer: argument checks, output sizes, the style-statistics cache, alpha, weights, masks, bf16, targets."""

from __future__ import annotations

import math

import pytest
import torch

from adain import ops
from adain.devices import resolve_device
from adain.errors import InputError
from adain.images import read_image, resize_shorter, to_pil, to_uint8
from adain.net import MIN_SIDE, Decoder, Encoder
from adain.stylizer import StatsCache, StyleRef, Stylization, Stylizer, Target, check_alpha, check_weights

from .conftest import random_networks


@pytest.fixture(scope="module")
def networks() -> tuple[Encoder, Decoder]:
    return random_networks("vgg19", seed=1)


@pytest.fixture(scope="module")
def stylizer(networks) -> Stylizer:
    return Stylizer(*networks, device="cpu")


@pytest.fixture
def fresh(networks) -> Stylizer:
    """A stylizer with an empty cache."""
    return Stylizer(*networks, device="cpu")


@pytest.fixture(scope="module")
def content(content_paths) -> torch.Tensor:
    return resize_shorter(read_image(content_paths[1]), 29)  # 29 x 43: no side a multiple of 8


@pytest.fixture(scope="module")
def styles(style_paths) -> list[torch.Tensor]:
    return [resize_shorter(read_image(p), s) for p, s in zip(style_paths[:3], (23, 31, 19), strict=True)]


@pytest.mark.parametrize(("weights", "n", "expected"), [
    (None, 3, [1 / 3] * 3),
    ([2, 2], 2, [0.5, 0.5]),
    ([0.7, 0.3], 2, [0.7, 0.3]),
    ([3, 0, 1], 3, [0.75, 0, 0.25]),
    ([1e308, 1e308], 2, [0.5, 0.5]),  # the sum overflows
    ([1e308, 1e-300], 2, [1.0, 0.0]),
])
def test_weights_are_normalised(weights, n, expected):
    assert check_weights(weights, n).tolist() == pytest.approx(expected)


@pytest.mark.parametrize(("weights", "n", "message"), [
    ([1.0], 2, "1 weights given for 2 styles"),
    ([0.5, 0.3, 0.2], 2, "3 weights given for 2 styles"),
    ([-1.0, 2.0], 2, "must not be negative"),
    ([0.0, 0.0], 2, "all zero"),
    ([math.nan, 1.0], 2, "finite"),
    ([math.inf, 1.0], 2, "finite"),
    (None, 0, "at least one style"),
])
def test_bad_weights(weights, n, message):
    with pytest.raises(InputError, match=message):
        check_weights(weights, n)


@pytest.mark.parametrize("alpha", [-0.01, 1.01, math.nan, math.inf])
def test_alpha_outside_0_1(alpha):
    with pytest.raises(InputError, match="alpha must be between 0 and 1"):
        check_alpha(alpha)
    assert check_alpha(0) == 0.0 and check_alpha(1) == 1.0


@pytest.mark.parametrize(("size", "crop"), [(0, False), (21, False), (21, True), (0, True)])
def test_output_has_the_prepared_content_size(stylizer, content, styles, size, crop):
    h, w = content.shape[-2:]
    out = stylizer.stylize(content, styles[:1], content_size=size, crop=crop, style_size=size)
    short = size or min(h, w)
    expected = (short, short) if crop else (h, w) if not size else (
        (short, int(short * w / h)) if h <= w else (int(short * h / w), short))
    assert tuple(out.shape) == (3, *expected) and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1


def test_smallest_accepted_side(stylizer, styles):
    assert stylizer.stylize(torch.rand(3, MIN_SIDE, 30), styles[:1]).shape == (3, MIN_SIDE, 30)
    with pytest.raises(InputError, match=f"content image is 30x{MIN_SIDE - 1} pixels"):
        stylizer.stylize(torch.rand(3, MIN_SIDE - 1, 30), styles[:1])
    with pytest.raises(InputError, match=f"style image is {MIN_SIDE - 1}x20 pixels"):
        stylizer.stylize(torch.rand(3, 20, 20), [torch.rand(3, 20, MIN_SIDE - 1)])


def test_repeated_style_costs_no_encoder_pass(fresh, content, styles):
    stylizer = fresh
    passes: list[tuple[int, ...]] = []
    stylizer.encoder.register_forward_hook(lambda module, args, out: passes.append(tuple(args[0].shape[-2:])))
    first = stylizer.stylize(content, [styles[0], styles[0], styles[1]])
    assert sorted(passes) == sorted([tuple(content.shape[-2:]), tuple(styles[0].shape[-2:]),
                                     tuple(styles[1].shape[-2:])])
    assert (stylizer.cache.hits, stylizer.cache.misses) == (1, 2)
    passes.clear()
    again = stylizer.stylize(content, [styles[0], styles[0], styles[1]])
    assert passes == [tuple(content.shape[-2:])]  # only the content is encoded
    assert (stylizer.cache.hits, stylizer.cache.misses) == (4, 2)
    assert torch.equal(first, again)


def test_cache_keys_colour_mode_and_coral_content(fresh, content, styles):
    stylizer = fresh
    other = content.flip(-1)
    stylizer.stylize(content, styles[:1])
    stylizer.stylize(content, styles[:1], preserve_color="luminance")
    stylizer.stylize(content, styles[:1], preserve_color="coral")
    assert (stylizer.cache.hits, stylizer.cache.misses) == (0, 3)
    stylizer.stylize(content, styles[:1], preserve_color="coral")
    stylizer.stylize(other, styles[:1], preserve_color="luminance")  # luminance stats do not depend on the content
    assert (stylizer.cache.hits, stylizer.cache.misses) == (2, 3)
    stylizer.stylize(other, styles[:1], preserve_color="coral")  # coral stats do
    stylizer.stylize(content, styles[:1], style_size=20)
    assert (stylizer.cache.hits, stylizer.cache.misses) == (2, 5)


@pytest.mark.parametrize(("style_size", "scale", "crop"), [(20, 2.0, False), (30, 0.5, True), (0, 1.5, False)])
def test_style_scale_resizes_the_style_by_the_factor_before_its_statistics(fresh, content, styles, style_size, scale,
                                                                           crop):
    scaled = fresh.stylize(content, styles[:2], style_size=style_size, style_scale=scale, crop=crop)
    resized = [resize_shorter(s, round(scale * (style_size or min(s.shape[-2:])))) for s in styles[:2]]
    assert torch.equal(scaled, fresh.stylize(content, resized, crop=crop))
    assert not torch.equal(scaled, fresh.stylize(content, styles[:2], style_size=style_size, crop=crop))


def test_style_scale_is_part_of_the_cache_key(fresh, content, styles):
    fresh.stylize(content, styles[:1], style_size=20)
    fresh.stylize(content, styles[:1], style_size=20, style_scale=2)
    fresh.stylize(content, styles[:1], style_size=20, style_scale=2)
    assert (fresh.cache.hits, fresh.cache.misses) == (1, 2)


def test_a_batch_of_stylizations_equals_each_stylized_alone(fresh, content, styles):
    """``stylize_batch`` is the composition ``stylize`` runs (and the service's workers): in one batch, a blend with
    statistics given for one style and a luminance stylization come out as ``stylize`` makes each alone."""
    given = fresh.style_stats(styles[1])
    blend = Stylization.checked(content, [StyleRef(image=styles[0]), StyleRef(stats=given)], [0.7, 0.3])
    grey = Stylization.checked(content, [StyleRef(image=styles[2])], alpha=0.5, preserve_color="luminance")
    got = fresh.stylize_batch([blend, grey])
    want = [fresh.stylize(content, styles[:2], weights=[0.7, 0.3]),
            fresh.stylize(content, styles[2:3], alpha=0.5, preserve_color="luminance")]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=0)  # CPU convolutions are not quite batch-invariant


def test_set_tiling_checks_the_options_before_setting_them(fresh):
    with pytest.raises(InputError, match="tile size must be a positive multiple of 8"):
        fresh.set_tiling("always", 1, 100)
    assert fresh.tiling == "auto"
    fresh.set_tiling("always", 1, 64)
    assert (fresh.tiling, fresh.tile_pixels, fresh.tile_size) == ("always", 1, 64)


def test_stats_cache_is_lru():
    cache = StatsCache(max_items=2)
    stats = ops.Stats(torch.zeros(1), torch.ones(1))
    cache.put("a", stats)
    cache.put("b", stats)
    assert cache.get("a") is stats
    cache.put("c", stats)  # evicts b, the least recently used
    assert cache.get("b") is None and cache.get("a") is stats and len(cache) == 2


def test_alpha_zero_ignores_the_style(stylizer, content, styles):
    a, b = (stylizer.stylize(content, [s], alpha=0.0) for s in styles[:2])
    assert torch.equal(a, b)
    assert not torch.equal(*(stylizer.stylize(content, [s], alpha=1.0) for s in styles[:2]))


def test_weights_scale_free_and_zero_weight_drops_a_style(stylizer, content, styles):
    even = stylizer.stylize(content, styles[:2])
    assert torch.equal(stylizer.stylize(content, styles[:2], weights=[2, 2]), even)
    alone = stylizer.stylize(content, styles[:1])
    torch.testing.assert_close(stylizer.stylize(content, styles[:2], weights=[1, 0]), alone, atol=1e-5, rtol=0)


def test_pil_and_tensor_inputs_agree(stylizer, content, styles):
    assert torch.equal(stylizer.stylize(to_pil(content), [to_pil(styles[0])]),
                       stylizer.stylize(to_uint8(content).float() / 255, [to_uint8(styles[0]).float() / 255]))


def test_mask_sending_everything_to_one_style_equals_that_style(stylizer, content, styles):
    one_region = torch.zeros(2, *content.shape[-2:])
    one_region[1] = 1
    torch.testing.assert_close(stylizer.stylize(content, styles[:2], mask=one_region),
                               stylizer.stylize(content, styles[1:2]), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mask": "ok", "weights": [1, 1]}, "weights and a mask cannot be combined"),
    ({"mask": (3, None)}, "the mask has 3 regions for 2 styles"),
    ({"mask": (2, (20, 20))}, "mask is 20x20 but the content image is"),
    ({"preserve_color": "sepia"}, "preserve_color must be one of"),
    ({"alpha": 1.5}, "alpha must be between 0 and 1"),
    ({"style_scale": 0.2}, "style_scale must be between 0.25 and 4, got 0.2"),
    ({"style_scale": float("nan")}, "style_scale must be between 0.25 and 4, got nan"),
])
def test_bad_stylize_arguments(stylizer, content, styles, kwargs, message):
    kwargs = dict(kwargs)
    if "mask" in kwargs:
        k, hw = (2, None) if kwargs["mask"] == "ok" else kwargs["mask"]
        kwargs["mask"] = torch.full((k, *(hw or content.shape[-2:])), 1 / k)
    with pytest.raises(InputError, match=message):
        stylizer.stylize(content, styles[:2], **kwargs)


def test_render_checks_targets(stylizer, content):
    stats = ops.Stats(torch.rand(2, 512), torch.rand(2, 512) + 0.1)
    h, w = content.shape[-2:]
    for target, message in [
        (Target(stats, torch.ones(3) / 3), r"target has \(3,\) weights for 2 styles"),
        (Target(stats, torch.ones(2) / 2, masks=torch.ones(2, h + 1, w)), "target masks are"),
        (Target(stats, torch.ones(2) / 2, alpha=2.0), "alpha must be between 0 and 1"),
    ]:
        with pytest.raises(InputError, match=message):
            stylizer.render(content, [target])
    with pytest.raises(InputError, match="one target per content image"):
        stylizer.render(content, [])


def test_bf16_on_cpu_stays_close_to_fp32(networks, content, styles):
    fp32, bf16 = Stylizer(*networks, device="cpu"), Stylizer(*networks, device="cpu", precision="bf16")
    a, b = (to_uint8(s.stylize(content, styles[:2], weights=[0.6, 0.4])).float() for s in (fp32, bf16))
    diff = (a - b).abs()
    # measured: mean |difference| 0.64 of 255 grey levels, max 3 (99.5% within 2); non-zero, so bf16 really ran
    assert 0 < diff.mean() < 1.5
    assert (diff <= 4).float().mean() >= 0.99


def test_grain_is_reproducible_scaled_by_alpha_and_the_decoders_by_default(networks, content, styles):
    enc, dec = networks
    plain, grainy = Stylizer(enc, dec, device="cpu"), Stylizer(enc, dec, device="cpu", grain=0.2)
    assert plain.grain == 0.0
    once = grainy.stylize(content, styles[:1])
    assert torch.equal(once, grainy.stylize(content, styles[:1]))  # the same noise every time
    assert (once - plain.stylize(content, styles[:1])).abs().mean() > 0.01
    # what the encoder sees: the content plus grain x alpha x standard normal noise from torch's generator seeded 0
    noise = torch.randn((3, *content.shape[-2:]), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(grainy.stylize(content, styles[:1], alpha=0.5),
                               plain.stylize((content + 0.1 * noise).clamp(0, 1), styles[:1], alpha=0.5),
                               atol=1e-5, rtol=0)
    # alpha 0 gives the photo's own decoding back, grain or not
    assert torch.equal(grainy.stylize(content, styles[:1], alpha=0.0), plain.stylize(content, styles[:1], alpha=0.0))
    grainy_file = Decoder(dec.arch, dec.layer, grain=0.2)
    grainy_file.load_state_dict(dec.state_dict())
    assert torch.equal(Stylizer(enc, grainy_file, device="cpu").stylize(content, styles[:1]), once)
    assert torch.equal(Stylizer(enc, grainy_file, device="cpu", grain=0.0).stylize(content, styles[:1]),
                       plain.stylize(content, styles[:1]))


@pytest.mark.parametrize("grain", [-0.01, 0.51, math.nan, math.inf])
def test_grain_outside_its_range(networks, grain):
    with pytest.raises(InputError, match="grain must be between 0 and 0.5"):
        Stylizer(*networks, device="cpu", grain=grain)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"precision": "fp16"}, "fp16 needs a CUDA device"),
    ({"precision": "fp8"}, "precision must be one of"),
    ({"device": "gpu0"}, "unknown device 'gpu0'"),
])
def test_bad_stylizer_options(kwargs, message):
    if kwargs.get("precision") == "fp16" and torch.cuda.is_available():
        pytest.skip("fp16 is allowed with CUDA")
    with pytest.raises(InputError, match=message):
        Stylizer(Encoder("vgg16"), Decoder("vgg16"), **{"device": "cpu", **kwargs})


def test_encoder_and_decoder_must_share_the_architecture():
    with pytest.raises(InputError, match="encoder is vgg19 but decoder is vgg16"):
        Stylizer(Encoder("vgg19"), Decoder("vgg16"), device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu():
    with pytest.raises(InputError, match="no CUDA device is available"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")
