"""The training losses and their held-out evaluation."""

from __future__ import annotations

import pytest
import torch

from adain.net import Decoder
from adain.train.losses import content_loss, held_out_losses, style_losses
from tests.conftest import random_networks

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def nets():
    return random_networks("vgg16")


def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_losses_vanish_only_on_a_match() -> None:
    a, b = torch.rand(2, 4, 5, 5), torch.rand(2, 4, 5, 5) + 1
    assert content_loss(a, a).item() == 0 and content_loss(a, b).item() == pytest.approx(((a - b) ** 2).mean().item())
    assert [x.item() for x in style_losses([a, b], [a, b])] == [0, 0]
    shifted = style_losses([a], [a + 0.5])[0].item()  # means differ by 0.5, stds equal
    assert shifted == pytest.approx(0.25, rel=1e-5)


def test_held_out_losses(nets) -> None:
    encoder, decoder = nets
    fresh = Decoder("vgg16").train()
    decoder.eval()
    content, style = images(5, 1), images(5, 2)
    result = held_out_losses(encoder, {"trained": decoder, "fresh": fresh}, content, style, batch_size=2)
    assert result.pairs == 5 and set(result.decoders) == {"trained", "fresh"}
    assert fresh.training and not decoder.training  # each decoder's mode is left as it was
    one_by_one = held_out_losses(encoder, {"trained": decoder}, content, style, batch_size=1)
    assert one_by_one.decoders["trained"].content == pytest.approx(result.decoders["trained"].content, rel=1e-5)
    assert one_by_one.decoders["trained"].style_layers == pytest.approx(result.decoders["trained"].style_layers,
                                                                         rel=1e-5)
    for losses in (*result.decoders.values(), result.content_as_output):
        assert len(losses.style_layers) == 4 and losses.style == pytest.approx(sum(losses.style_layers))
        assert losses.content >= result.target_content_floor > 0  # no image beats the floor
    assert result.target_style < result.decoders["trained"].style_layers[-1]
    d = result.decoders["trained"].as_dict(style_weight=10)
    assert d["total"] == pytest.approx(d["content"] + 10 * d["style"])
    with pytest.raises(ValueError, match="no held-out pairs"):
        held_out_losses(encoder, {"trained": decoder}, content[:0], style[:0])


def test_content_as_output_is_free_when_the_style_is_the_content(nets) -> None:
    encoder, decoder = nets
    content = images(3, 3)
    result = held_out_losses(encoder, {"trained": decoder}, content, content.clone())
    assert result.content_as_output.style == 0  # the output's statistics are the style's
    assert result.content_as_output.content < 1e-3 * result.decoders["trained"].content  # t = f(c) up to eps


def test_style_steps_feed_weak_skips_and_reconstruction_steps_whole() -> None:
    from adain import ops
    from adain.train.losses import decoder_targets

    encoder, _ = random_networks("vgg16", layer="relu3_1")
    weak = Decoder("vgg16", "relu3_1", ("relu1_1", "relu2_1"), skip_strength=0.3)
    c, s = encoder.features(images(1, 0)), encoder.features(images(1, 1))
    full = [ops.adain(c[i], ops.channel_stats(s[i])) for i in range(3)]
    style_step = decoder_targets(weak, c, s)
    torch.testing.assert_close(style_step, [0.3 * full[0], 0.3 * full[1], full[2]])
    torch.testing.assert_close(decoder_targets(weak, c, s, alpha=0.0), full)
    assert weak.skip_gains(0.5) == pytest.approx((0.65, 0.65))
    with pytest.raises(ValueError, match="skip strength"):
        Decoder("vgg16", "relu3_1", ("relu1_1",), skip_strength=0.0)

    each = Decoder("vgg16", "relu3_1", ("relu1_1", "relu2_1"), skip_strength=(0.3, 1.0))  # one per skip
    torch.testing.assert_close(decoder_targets(each, c, s), [0.3 * full[0], full[1], full[2]])
    assert each.skip_strength == (0.3, 1.0) and each.skip_gains(0.5) == pytest.approx((0.65, 1.0))
    with pytest.raises(ValueError, match="1 skip strengths for 2 skips"):
        Decoder("vgg16", "relu3_1", ("relu1_1", "relu2_1"), skip_strength=[0.3])
