"""AdaIN and colour operations (adain.ops) on small random tensors, checked against their definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from adain import ops


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _feat(gen: torch.Generator, n: int = 1, c: int = 4, h: int = 7, w: int = 5) -> torch.Tensor:
    return torch.randn(n, c, h, w, generator=gen) * 2 + 1


def test_channel_stats_are_population_std_with_eps_inside(gen):
    f = _feat(gen, n=2)
    stats = ops.channel_stats(f)
    x = f.double().numpy().reshape(2, 4, -1)
    np.testing.assert_allclose(stats.mean.numpy(), x.mean(2), rtol=1e-5)
    np.testing.assert_allclose(stats.std.numpy(), np.sqrt(x.var(2) + ops.EPS), rtol=1e-5)
    constant = ops.channel_stats(torch.full((1, 1, 3, 3), 0.5))
    assert constant.std.item() == pytest.approx(ops.EPS**0.5)


def test_adain_gives_the_style_statistics(gen):
    f = _feat(gen)
    style = ops.Stats(torch.tensor([[0.0, 1.0, -2.0, 3.0]]), torch.tensor([[0.5, 2.0, 1.0, 0.1]]))
    out = ops.channel_stats(ops.adain(f, style), eps=0.0)
    torch.testing.assert_close(out.mean, style.mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std, style.std, rtol=1e-4, atol=0)


def test_blending_stats_equals_blending_adain_outputs(gen):
    f = _feat(gen)
    styles = ops.Stats(torch.rand(3, 4, generator=gen), torch.rand(3, 4, generator=gen) + 0.1)
    w = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    blended = ops.blend_stats(styles, w)
    direct = sum(w[i].item() * ops.adain(f, ops.Stats(styles.mean[i : i + 1], styles.std[i : i + 1]))
                 for i in range(3))
    torch.testing.assert_close(ops.adain(f, ops.Stats(blended.mean[None], blended.std[None])), direct)


def test_masked_adain_takes_region_statistics_over_the_region_only(gen):
    f = _feat(gen)
    region = torch.zeros(7, 5, dtype=torch.bool)
    region[:3] = True
    region[5, 2:] = True
    masks = torch.stack([region, ~region]).float()[None]
    styles = ops.Stats(torch.tensor([[1.0, 2, 3, 4], [-1.0, -2, -3, -4]]), torch.tensor([[1.0] * 4, [0.2] * 4]))
    out = ops.masked_adain(f, masks, styles)
    for k, where in enumerate((region, ~region)):
        stats = ops.channel_stats(out[0][:, where][None, :, :, None], eps=0.0)
        torch.testing.assert_close(stats.mean[0], styles.mean[k], atol=1e-5, rtol=0)
        torch.testing.assert_close(stats.std[0], styles.std[k], rtol=1e-3, atol=0)


def test_masked_adain_with_one_full_region_is_adain(gen):
    f = _feat(gen)
    style = ops.Stats(torch.rand(1, 4, generator=gen), torch.rand(1, 4, generator=gen) + 0.1)
    torch.testing.assert_close(ops.masked_adain(f, torch.ones(1, 1, 7, 5), style), ops.adain(f, style))


def test_masked_stats_weight_positions(gen):
    f = _feat(gen, c=2)
    m = torch.rand(1, 1, 7, 5, generator=gen)
    stats = ops.masked_stats(f, m)
    x, w = f[0].double().flatten(1).numpy(), m.double().flatten().numpy()
    mean = (x * w).sum(1) / w.sum()
    np.testing.assert_allclose(stats.mean[0, 0].numpy(), mean, rtol=1e-5)
    var = ((x - mean[:, None]) ** 2 * w).sum(1) / w.sum()
    np.testing.assert_allclose(stats.std[0, 0].numpy(), np.sqrt(var + ops.EPS), rtol=1e-5)


def test_ycbcr_round_trip_and_known_values(gen):
    img = torch.rand(3, 6, 4, generator=gen)
    torch.testing.assert_close(ops.ycbcr_to_rgb(ops.rgb_to_ycbcr(img)), img, atol=1e-6, rtol=0)
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    torch.testing.assert_close(ops.rgb_to_ycbcr(red).flatten(), torch.tensor([0.299, -0.168736, 0.5]))
    grey = torch.full((3, 2, 2), 0.4)
    torch.testing.assert_close(ops.rgb_to_ycbcr(grey)[1:], torch.zeros(2, 2, 2), atol=1e-7, rtol=0)


def test_luminance_and_chroma(gen):
    img, other = torch.rand(3, 5, 5, generator=gen), torch.rand(3, 5, 5, generator=gen)
    lum = ops.luminance(img)
    assert torch.equal(lum[0], lum[1]) and torch.equal(lum[1], lum[2])
    torch.testing.assert_close(lum[0], 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2])
    mixed = ops.with_chroma_of(other, img)
    torch.testing.assert_close(ops.rgb_to_ycbcr(mixed)[0], ops.rgb_to_ycbcr(other)[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(ops.rgb_to_ycbcr(mixed)[1:], ops.rgb_to_ycbcr(img)[1:], atol=1e-6, rtol=0)


def test_coral_matches_mean_and_covariance(gen):
    source = torch.rand(3, 20, 30, generator=gen) ** 2
    target = torch.rand(3, 11, 13, generator=gen) * torch.tensor([0.2, 0.5, 1.0]).view(3, 1, 1)
    out = ops.coral(source, target)
    assert out.shape == source.shape and out.dtype == source.dtype
    o, t = out.double().flatten(1).numpy(), target.double().flatten(1).numpy()
    np.testing.assert_allclose(o.mean(1), t.mean(1), atol=1e-6)
    np.testing.assert_allclose(np.cov(o, bias=True), np.cov(t, bias=True), atol=2e-5)


def test_large_maps_are_taken_a_few_channels_at_a_time_with_the_same_results(monkeypatch: pytest.MonkeyPatch
                                                                             ) -> None:
    """AdaIN and its statistics make fp32 copies of the feature map; above ops.CHUNK_ELEMENTS they do so a few
    channels at a time, which must not change a single value, nor the gradients training takes through them."""
    torch.manual_seed(0)
    feat = (torch.rand(2, 6, 9, 11) * 3).to(torch.bfloat16)
    style = ops.Stats(torch.rand(2, 6), torch.rand(2, 6) + 0.5)
    masks = torch.rand(2, 3, 9, 11).softmax(1)
    region_styles = ops.Stats(torch.rand(3, 6), torch.rand(3, 6) + 0.5)

    def results() -> list[Tensor]:
        grad_feat = feat.float().requires_grad_(True)
        ops.adain(grad_feat, style).square().sum().backward()
        return [*ops.channel_stats(feat), *ops.masked_stats(feat, masks), ops.adain(feat, style),
                ops.masked_adain(feat, masks, region_styles), grad_feat.grad]

    whole = results()
    monkeypatch.setattr(ops, "CHUNK_ELEMENTS", 2 * 9 * 11 * 2)  # two channels at a time
    assert [(g.start, g.stop) for g in ops.channel_groups(feat)] == [(0, 2), (2, 4), (4, 6)]
    for a, b in zip(whole, results(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
