"""Loading weight files: both formats, the full VGG19 release file, and errors naming the file and the fault."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from adain.bundles.layouts import build_decoder, build_encoder, read_arch, save_safetensors
from adain.errors import WeightsError
from adain.net import Decoder, Encoder


@pytest.mark.parametrize("arch", ["vgg19", "vgg16"])
def test_both_formats_give_the_same_networks(weight_files, arch):
    files = weight_files[arch]
    pth, st = build_encoder(files["encoder_pth"], arch), build_encoder(files["encoder_st"], arch)
    for a, b in zip(pth.state_dict().values(), st.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    dec_pth, dec_st = build_decoder(files["decoder_pth"], arch), build_decoder(files["decoder_st"], arch)
    assert torch.equal(dec_pth.layers[1].weight, dec_st.layers[1].weight)
    assert read_arch(files["encoder_st"]) == arch and read_arch(files["encoder_pth"]) is None


def test_full_vgg19_release_file_loads_up_to_relu4_1(weight_files):
    state = torch.load(weight_files["vgg19"]["encoder_pth"])
    assert "51.weight" in state  # the fixture holds all of VGG19, as vgg_normalised.pth does
    enc = build_encoder(weight_files["vgg19"]["encoder_pth"], "vgg19")
    assert torch.equal(enc.layers[29].weight, state["29.weight"])


def _save(tmp_path, name, state):
    path = tmp_path / name
    torch.save(state, path)
    return path


def test_wrong_architecture_names_file_and_key(weight_files):
    path = weight_files["vgg16"]["encoder_pth"]
    with pytest.raises(WeightsError, match="missing key '25.weight' for a vgg19 encoder") as info:
        build_encoder(path, "vgg19")
    assert str(path) in str(info.value)
    path = weight_files["vgg19"]["decoder_st"]
    with pytest.raises(WeightsError, match=r"key '11.weight' has shape \(256, 256, 3, 3\), a vgg16 decoder needs "
                                           r"\(128, 256, 3, 3\)") as info:
        build_decoder(path, "vgg16")
    assert str(path) in str(info.value)


def test_decoder_file_given_as_encoder(weight_files):
    path = weight_files["vgg19"]["decoder_pth"]
    with pytest.raises(WeightsError, match=f"{path}: missing key '0.weight' for a vgg19 encoder"):
        build_encoder(path, "vgg19")


def test_missing_key_and_shape_mismatch(weight_files, tmp_path):
    state = torch.load(weight_files["vgg16"]["decoder_pth"])
    del state["5.bias"]
    path = _save(tmp_path, "missing.pth", state)
    with pytest.raises(WeightsError, match=f"{path}: missing key '5.bias' for a vgg16 decoder"):
        build_decoder(path, "vgg16")
    state = dict(Encoder("vgg16").layers.state_dict())
    state["2.weight"] = torch.zeros(32, 3, 3, 3)
    path = _save(tmp_path, "shape.pth", state)
    with pytest.raises(WeightsError, match=rf"{path}: key '2.weight' has shape \(32, 3, 3, 3\), a vgg16 encoder needs "
                                           r"\(64, 3, 3, 3\)"):
        build_encoder(path, "vgg16")


def test_extra_decoder_keys_and_non_finite_values(weight_files, tmp_path):
    state = torch.load(weight_files["vgg16"]["decoder_pth"])
    path = _save(tmp_path, "extra.pth", {**state, "99.weight": torch.zeros(1)})
    with pytest.raises(WeightsError, match=f"{path}: unexpected keys \\['99.weight'\\] for a vgg16 decoder"):
        build_decoder(path, "vgg16")
    state["1.bias"][0] = float("nan")
    path = _save(tmp_path, "nan.pth", state)
    with pytest.raises(WeightsError, match=f"{path}: key '1.bias' holds NaN"):
        build_decoder(path, "vgg16")


@pytest.mark.parametrize("name, damage", [
    ("cut.pth", lambda data: data[: len(data) // 2]),
    ("cut.safetensors", lambda data: data[: len(data) // 2]),
    ("junk.pth", lambda data: b"\x00junk" * 100),
    ("junk.safetensors", lambda data: b"\x00junk" * 100),
    ("empty.pth", lambda data: b""),
])
def test_corrupt_files(weight_files, tmp_path, name, damage):
    source = weight_files["vgg16"]["decoder_st" if name.endswith(".safetensors") else "decoder_pth"]
    path = tmp_path / name
    path.write_bytes(damage(source.read_bytes()))
    with pytest.raises(WeightsError, match=f"{path}: not a readable weight file"):
        build_decoder(path, "vgg16")


def test_not_a_state_dict(tmp_path):
    path = _save(tmp_path, "list.pth", [torch.zeros(1)])
    with pytest.raises(WeightsError, match=f"{path}: expected a flat state dict of tensors"):
        build_decoder(path, "vgg16")
    with pytest.raises(WeightsError, match=f"{tmp_path / 'none.pth'}: weight file not found"):
        build_decoder(tmp_path / "none.pth", "vgg16")


def test_save_safetensors_records_the_arch(tmp_path):
    path = tmp_path / "enc.safetensors"
    save_safetensors(Encoder("vgg16"), path, "vgg16")
    assert read_arch(path) == "vgg16"
    build_encoder(path, "vgg16")


@pytest.mark.parametrize(("key", "value", "top", "too_much"), [("grain", 0.15, "0.5", "0.9"),
                                                                ("strokes", 0.5, "2", "2.5")])
def test_a_decoder_file_keeps_its_noise(tmp_path, key, value, top, too_much):
    """The grain a decoder is meant for (the strokes it was trained with) is in its file's metadata (absent, and read
    as 0, when there is none); a value out of range or not a number is refused, naming the file."""
    from safetensors.torch import save_file

    from adain.bundles.layouts import read_metadata

    dec = Decoder("vgg16", "relu3_1")
    save_safetensors(dec, tmp_path / "plain.safetensors", "vgg16")
    assert key not in read_metadata(tmp_path / "plain.safetensors")
    assert getattr(build_decoder(tmp_path / "plain.safetensors", "vgg16"), key) == 0.0
    setattr(dec, key, value)
    save_safetensors(dec, tmp_path / "noise.safetensors", "vgg16")
    assert getattr(build_decoder(tmp_path / "noise.safetensors", "vgg16"), key) == value
    state = {k: v.contiguous() for k, v in dec.layers.state_dict().items()}
    for bad in (too_much, "-0.1", "lots"):
        save_file(state, tmp_path / "bad.safetensors", metadata={"arch": "vgg16", key: bad})
        with pytest.raises(WeightsError, match=f"bad.safetensors: {key} '{bad}' is not a number from 0 to {top}"):
            build_decoder(tmp_path / "bad.safetensors", "vgg16")


def test_save_safetensors_gives_the_same_bytes_for_the_same_weights(tmp_path):
    # safetensors itself orders metadata keys at random: several keys used to give a different file each time
    decoder = Decoder("vgg16", "relu3_1")
    metadata = {"step": "7", "layer": "relu3_1", "encoder_sha256": "ab" * 32, "note": "bilder ä"}
    files = [tmp_path / f"dec{i}.safetensors" for i in range(6)]
    for path in files:
        save_safetensors(decoder, path, "vgg16", torch.float16, metadata)
    assert len({path.read_bytes() for path in files}) == 1
    with safe_open(files[0], "pt") as f:
        assert f.metadata() == {"arch": "vgg16", **metadata}
    loaded = build_decoder(files[0], "vgg16")
    for key, value in decoder.layers.state_dict().items():
        assert torch.equal(loaded.layers.state_dict()[key], value.half().float())


def test_decoder_skips_come_shallowest_first_whatever_the_key_order(tmp_path) -> None:
    from adain.bundles.layouts import decoder_skips
    from adain.net import Decoder

    state = Decoder("vgg16", "relu3_1", ("relu1_1", "relu2_1")).layers.state_dict()  # joins met deepest first
    assert list(state).index("4.scale") < list(state).index("12.scale")
    torch.save(state, tmp_path / "skips.pth")
    assert decoder_skips(tmp_path / "skips.pth") == ("relu1_1", "relu2_1")


def test_a_decoder_without_skips_grows_skips_that_start_silent(tmp_path) -> None:
    from adain.bundles.layouts import load_grown, load_or_grow
    from tests.conftest import random_networks

    plain = random_networks("vgg16", seed=3, layer="relu3_1")[1]
    save_safetensors(plain, tmp_path / "plain.safetensors", "vgg16")
    grown = random_networks("vgg16", seed=4, layer="relu3_1", skips=("relu1_1", "relu2_1"))[1]
    assert load_or_grow(grown, tmp_path / "plain.safetensors")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 256, 8, 8, generator=g)
    skips = [torch.rand(1, 64, 32, 32, generator=g), torch.rand(1, 128, 16, 16, generator=g)]
    with torch.no_grad():
        torch.testing.assert_close(grown([*skips, x]), plain(x))  # decodes as the file, whatever the skips
    convs = [m for m in grown.layers if isinstance(m, torch.nn.Conv2d)]
    assert [c.in_channels for c in convs] == [256, 256, 128, 128, 64]
    assert convs[1].weight[:, 128:].abs().sum() == 0 and convs[3].weight[:, 64:].abs().sum() == 0

    with_skip = random_networks("vgg16", seed=3, layer="relu3_1", skips=("relu2_1",))[1]
    save_safetensors(with_skip, tmp_path / "skip.safetensors", "vgg16")
    less = random_networks("vgg16", seed=3, layer="relu3_1", skips=("relu1_1",))[1]
    with pytest.raises(WeightsError, match=r"skips \['relu1_1'\] cannot grow from this one, which decodes "
                                           r"relu3_1 with skips \['relu2_1'\]"):
        load_grown(less, tmp_path / "skip.safetensors")  # it would lose the file's skip
    deeper = random_networks("vgg16", seed=3, layer="relu4_1")[1]
    save_safetensors(deeper, tmp_path / "deeper.safetensors", "vgg16")
    with pytest.raises(WeightsError, match="which decodes relu4_1"):
        load_grown(grown, tmp_path / "deeper.safetensors")
    same = random_networks("vgg16", seed=5, layer="relu3_1", skips=("relu2_1",))[1]
    assert not load_or_grow(same, tmp_path / "skip.safetensors")  # same skips: a plain load
    torch.testing.assert_close(same.layers.state_dict(), with_skip.layers.state_dict(), rtol=1e-3, atol=1e-3)


def test_a_decoder_with_skips_grows_one_more_keeping_its_own(tmp_path) -> None:
    from adain.bundles.layouts import load_or_grow
    from tests.conftest import random_networks

    source = random_networks("vgg16", seed=3, layer="relu3_1", skips=("relu2_1",))[1]
    source.layers[4].scale.uniform_(0.5, 2.0)  # a calibrated scale, which the grown decoder must keep
    save_safetensors(source, tmp_path / "skip.safetensors", "vgg16")
    grown = random_networks("vgg16", seed=4, layer="relu3_1", skips=("relu1_1", "relu2_1"))[1]
    assert load_or_grow(grown, tmp_path / "skip.safetensors")
    g = torch.Generator().manual_seed(0)
    x, s1, s2 = torch.rand(1, 256, 8, 8, generator=g), torch.rand(1, 64, 32, 32, generator=g), \
        torch.rand(1, 128, 16, 16, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(grown([s1, s2, x]), source([s2, x]))


@pytest.mark.parametrize("relu3_1_strength", [1.0, 0.3])
def test_a_relu3_1_decoder_deepens_to_relu4_1_passing_its_layer_through(tmp_path, relu3_1_strength) -> None:
    """Grown to relu4_1, the file's relu3_1 comes in as a skip and decodes as before at alpha 1, whatever relu4_1
    holds, and at alpha 0 too when that skip is fed whole; the new convs learn from zero on the deeper path."""
    from adain.bundles.layouts import load_or_grow, read_metadata
    from adain.net import SkipJoin
    from tests.conftest import random_networks

    source = random_networks("vgg16", seed=3, layer="relu3_1", skips=("relu1_1", "relu2_1"))[1]
    source.skip_strength = 0.3
    save_safetensors(source, tmp_path / "shallow.safetensors", "vgg16")
    strengths = (0.3, 0.3, relu3_1_strength)
    deep = Decoder("vgg16", "relu4_1", ("relu1_1", "relu2_1", "relu3_1"), strengths)
    joins = {m.layer: m for m in deep.layers if isinstance(m, SkipJoin)}
    joins["relu3_1"].scale.uniform_(0.5, 2.0)  # as calibrated before growing
    assert load_or_grow(deep, tmp_path / "shallow.safetensors")
    g = torch.Generator().manual_seed(0)
    s1, s2, s3 = (torch.rand(1, c, n, n, generator=g) for c, n in ((64, 32), (128, 16), (256, 8)))
    x4 = torch.randn(1, 512, 4, 4, generator=g)
    with torch.no_grad():
        for alpha in (1.0, 0.0):
            k1, k2, k3 = deep.skip_gains(alpha)
            as_file = source([k1 * s1, k2 * s2, s3])
            if alpha == 1.0 or relu3_1_strength == 1.0:
                torch.testing.assert_close(deep([k1 * s1, k2 * s2, k3 * s3, x4]), as_file)
            else:  # relu3_1 whole, passed through as if at 0.3: too strong until trained
                assert not torch.allclose(deep([k1 * s1, k2 * s2, k3 * s3, x4]), as_file, atol=1e-3)
    convs = [m for m in deep.layers if isinstance(m, torch.nn.Conv2d)]
    assert [c.in_channels for c in convs[:3]] == [512, 512, 256]
    assert convs[1].weight[:, :256].abs().sum() == 0  # the deeper path starts silent
    save_safetensors(deep, tmp_path / "deep.safetensors", "vgg16")
    assert read_metadata(tmp_path / "deep.safetensors")["skips"] == "relu1_1,relu2_1,relu3_1"
    again = build_decoder(tmp_path / "deep.safetensors", "vgg16")
    assert (again.layer, again.skips, again.skip_strengths) == ("relu4_1", ("relu1_1", "relu2_1", "relu3_1"),
                                                                strengths)


def test_extra_convs_grow_as_the_identity_and_the_file_keeps_them(tmp_path) -> None:
    """Extra convs at the deepest resolution start by passing their input on, so a grown decoder decodes as its
    file; a file with extra convs says how many, loads back with them, and grows more keeping them; a decoder
    with fewer refuses it."""
    from adain.bundles.layouts import decoder_extra_convs, load_grown, load_or_grow, needs_growing, read_metadata
    from tests.conftest import random_networks

    skips = ("relu1_1", "relu2_1")
    source = random_networks("vgg16", seed=3, layer="relu3_1", skips=skips)[1]
    save_safetensors(source, tmp_path / "plain.safetensors", "vgg16")
    grown = Decoder("vgg16", "relu3_1", skips, extra_convs=2)
    assert load_or_grow(grown, tmp_path / "plain.safetensors")
    g = torch.Generator().manual_seed(0)
    feats = [torch.rand(1, 64, 32, 32, generator=g), torch.rand(1, 128, 16, 16, generator=g),
             torch.randn(1, 256, 8, 8, generator=g)]  # AdaIN's output dips below 0
    with torch.no_grad():
        torch.testing.assert_close(grown(feats), source(feats))
        mirror, extra = grown.convs()
        assert [(c.in_channels, c.out_channels) for c in extra] == [(128, 128), (128, 128)]
        assert [c.in_channels for c in mirror] == [256, 256, 128, 128, 64]
        for conv in extra:  # as if trained
            conv.weight.add_(0.02 * torch.randn(conv.weight.shape, generator=g))
        trained = grown(feats)
    assert not torch.allclose(trained, source(feats), atol=1e-3)

    save_safetensors(grown, tmp_path / "extra.safetensors", "vgg16")
    assert read_metadata(tmp_path / "extra.safetensors")["extra_convs"] == "2"
    assert "extra_convs" not in read_metadata(tmp_path / "plain.safetensors")
    assert decoder_extra_convs(tmp_path / "plain.safetensors") == 0
    again = build_decoder(tmp_path / "extra.safetensors", "vgg16")
    assert (again.extra_convs, again.skips) == (2, skips)
    assert not needs_growing(again, tmp_path / "extra.safetensors")
    more = Decoder("vgg16", "relu3_1", skips, extra_convs=3)
    assert load_or_grow(more, tmp_path / "extra.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(again(feats), trained)
        torch.testing.assert_close(more(feats), trained)

    with pytest.raises(WeightsError, match="and 1 extra conv cannot grow from this one, which decodes relu3_1 with "
                                           r"skips \['relu1_1', 'relu2_1'\] and 2 extra convs"):
        load_grown(Decoder("vgg16", "relu3_1", skips, extra_convs=1), tmp_path / "extra.safetensors")
    with pytest.raises(WeightsError, match="without extra convs"):  # deepening the layer grows no extra convs
        load_grown(Decoder("vgg16", "relu4_1", (*skips, "relu3_1"), extra_convs=1), tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="0 to 8 extra convs"):
        Decoder("vgg16", "relu3_1", extra_convs=9)
