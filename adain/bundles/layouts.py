"""Reading and writing network weights in the canonical layouts.

Two file formats hold the same flat ``"<index>.weight"`` keys:
the original release's ``.pth`` (a pickled state dict, loaded with
``weights_only=True``) and safetensors (ours; the architecture is kept in the
metadata under ``"arch"``, and a decoder's layer and skips under ``"layer"`` and
``"skips"``). A decoder with skips also holds ``"<index>.scale"``, the fixed
per-channel scale of each skip where it joins, and, when it was trained with
weakened skips, their strength under ``"skip_strength"`` (one number, or one per skip; 1 when absent), and when
it is meant to be stylized with grain (``adain.stylizer``), its amount under ``"grain"`` (0 when absent), and when it
was trained with stroke noise (``adain.strokes``), its amount under ``"strokes"`` (0 when absent), and when it has
extra convs at its deepest resolution (``Decoder.extra_convs``), their number under ``"extra_convs"`` (for readers:
the loader counts the convs).
"""

from __future__ import annotations

import json
import pickle
import struct
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor, nn

from ..errors import InputError, WeightsError
from ..net import (
    FEATURE_LAYERS,
    LAYERS,
    MAX_EXTRA_CONVS,
    SKIP_LAYERS,
    Arch,
    Decoder,
    Encoder,
    Layer,
    SkipJoin,
    channels_of,
    parse_skip_strength,
)
from ..options import MAX_GRAIN, MAX_STROKES, check_amount

SAFETENSORS_SUFFIXES = (".safetensors", ".st")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a flat state dict from a ``.pth`` or safetensors file (told apart by content, not by name)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weight file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about odd pickle protocols before it fails
            if _looks_like_safetensors(path):
                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise WeightsError(f"{path}: not a readable weight file (not a PyTorch file of plain tensors, which "
                           f"is all that is loaded, with weights_only=True)") from None
    except Exception as exc:  # a damaged file can fail in many ways inside torch or safetensors
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        detail = f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
        raise WeightsError(f"{path}: not a readable weight file ({detail})") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(f"{path}: expected a flat state dict of tensors")
    return state


def _looks_like_safetensors(path: Path) -> bool:
    """safetensors files start with an 8-byte header length and then a JSON object; .pth files do not."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:] == b"{"


def read_metadata(path: str | Path) -> dict[str, str]:
    """A safetensors file's metadata (empty for other files and for files without any)."""
    path = Path(path)
    if path.suffix not in SAFETENSORS_SUFFIXES:
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError):
        return {}


def read_arch(path: str | Path) -> str | None:
    """The architecture recorded in a safetensors file's metadata, if any."""
    return read_metadata(path).get("arch")


def load_into(module: Encoder | Decoder, path: str | Path, state: dict[str, Tensor] | None = None) -> None:
    """Load canonical weights into ``module``; extra trailing keys are ignored.

    The original ``vgg_normalised.pth`` holds all of VGG19; only the layers up to
    relu4_1 are taken. Missing keys and shape mismatches raise ``WeightsError``.
    ``state``: the file's contents when already read (``path`` then only names it in errors).
    """
    state = read_state_dict(path) if state is None else state
    what = type(module).__name__.lower()
    expected = module.canonical_keys()
    for key, shape in expected.items():
        if key not in state:
            raise WeightsError(f"{path}: missing key {key!r} for a {module.arch} {what}")
        if state[key].shape != shape:
            raise WeightsError(
                f"{path}: key {key!r} has shape {tuple(state[key].shape)}, "
                f"a {module.arch} {what} needs {tuple(shape)}"
            )
        if not torch.isfinite(state[key]).all():
            raise WeightsError(f"{path}: key {key!r} holds NaN or infinite values")
    if isinstance(module, Decoder) and len(state) != len(expected):
        extra = sorted(set(state) - set(expected))[:3]
        raise WeightsError(f"{path}: unexpected keys {extra} for a {module.arch} decoder")
    module.layers.load_state_dict(
        {k: state[k].float() for k in expected}, strict=True
    )


def load_grown(decoder: Decoder, path: str | Path) -> None:
    """Load a decoder file into ``decoder`` (same architecture) that takes more than the file does, so that
    ``decoder`` decodes as the file did until it is trained:

    * more skips: each conv takes the file's weights for the channels it had and zeros for the new skip channels;
    * a deeper layer (relu4_1 from a relu3_1 file): the file's layer enters as a skip, and the new convs at its
      resolution pass it through (identity over the skip's ``scale`` and its strength, zeros for the deeper
      path): as the file at alpha 1, the style steps, where its values are non-negative (AdaIN's may dip below 0,
      which the ReLUs clip). At a strength of 1 for that skip (the default when deepening) that holds at every
      alpha; below 1 the skip comes 1 / strength times too strong at alpha 0 until training adapts;
    * more ``extra_convs`` (not with a deeper layer): the new ones pass their input on (identity kernels; it comes
      after a ReLU, so this is exact).

    The file's skips keep its scales; the new skips keep ``decoder``'s (calibrate them first).
    """
    source = build_decoder(path, decoder.arch)
    depth = FEATURE_LAYERS.index
    deeper = source.layer != decoder.layer
    if (not set(source.skips) <= set(decoder.skips) or depth(source.layer) > depth(decoder.layer)
            or (deeper and source.layer not in decoder.skips) or source.extra_convs > decoder.extra_convs
            or (deeper and decoder.extra_convs)):
        raise WeightsError(f"{path}: a decoder of {decoder.layer} with {_inputs(decoder)} cannot grow from this one, "
                           f"which decodes {source.layer} with {_inputs(source)} (it may add skips, add extra convs, "
                           "or deepen to a layer whose skips include the file's layer, without extra convs)")
    (old, old_extra), (new, new_extra) = source.convs(), decoder.convs()
    head = new[: len(new) - len(old)]
    joins = {m.layer: m for m in decoder.layers if isinstance(m, SkipJoin)}
    with torch.no_grad():
        for o, n in zip(old + old_extra, new[len(head):] + new_extra[: len(old_extra)], strict=True):
            n.weight.zero_()
            n.weight[:, : o.in_channels].copy_(o.weight)
            n.bias.copy_(o.bias)
        for conv in new_extra[len(old_extra):]:
            _identity(conv)
        for join in (m for m in source.layers if isinstance(m, SkipJoin)):
            joins[join.layer].scale.copy_(join.scale)
        if deeper:
            _pass_through(decoder, joins[source.layer], head)


def _inputs(decoder: Decoder) -> str:
    """A decoder's skips and extra convs, for messages."""
    n = decoder.extra_convs
    extra = f" and {n} extra conv{'s' if n > 1 else ''}" if n else ""
    return f"skips {list(decoder.skips) or 'none'}{extra}"


def _identity(conv: nn.Conv2d) -> None:
    """Make the square conv ``conv`` hand its input on unchanged (a centre tap of 1 from each channel to itself)."""
    conv.weight.zero_()
    conv.bias.zero_()
    centre = conv.kernel_size[0] // 2
    channels = torch.arange(conv.out_channels)
    conv.weight[channels, channels, centre, centre] = 1.0


def _pass_through(decoder: Decoder, join: SkipJoin, head: list[nn.Conv2d]) -> None:
    """Set the convs of ``head`` after ``join`` to hand its skip on as it comes at alpha 1 (undoing the skip's
    scale and strength)."""
    at = list(decoder.layers).index(join)
    strength = decoder.skip_strengths[decoder.skips.index(join.layer)]
    passing = [m for m in decoder.layers[at:] if isinstance(m, nn.Conv2d) and any(m is h for h in head)]
    channels = join.scale.numel()
    for i, conv in enumerate(passing):
        conv.weight.zero_()
        conv.bias.zero_()
        first = conv.in_channels - channels if i == 0 else 0  # the join conv: the skip comes after the path
        diagonal = 1.0 / (join.scale * strength) if i == 0 else torch.ones(channels)
        centre = conv.kernel_size[0] // 2
        conv.weight[torch.arange(channels), first + torch.arange(channels), centre, centre] = diagonal


def needs_growing(decoder: Decoder, path: str | Path, state: dict[str, Tensor] | None = None) -> bool:
    """Whether the decoder file at ``path`` takes other inputs or has other extra convs than ``decoder`` (then
    :func:`load_grown`)."""
    return (decoder_skips(path, state) != decoder.skips or decoder_layer(path, state) != decoder.layer
            or decoder_extra_convs(path, state) != decoder.extra_convs)


def load_or_grow(decoder: Decoder, path: str | Path) -> bool:
    """:func:`load_into`, or :func:`load_grown` when ``decoder`` takes more than the file; True if grown."""
    state = read_state_dict(path)
    if needs_growing(decoder, path, state):
        load_grown(decoder, path)
        return True
    load_into(decoder, path, state)
    return False


def safetensors_bytes(state: dict[str, Tensor], metadata: dict[str, str]) -> bytes:
    """``state`` serialised as safetensors, the same bytes for the same input.

    safetensors writes the metadata keys in a random order; they are put back in sorted order here
    (the header keeps its length, so the tensor offsets stay valid).
    """
    data = save(state, metadata=metadata)
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    canonical = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode().ljust(size)
    if len(canonical) != size:
        raise AssertionError("safetensors header changed length when its metadata was sorted")
    return data[:8] + canonical + data[8 + size:]


def save_safetensors(module: nn.Module, path: str | Path, arch: Arch, dtype: torch.dtype | None = None,
                     metadata: dict[str, str] | None = None) -> None:
    """Write ``module`` (an Encoder/Decoder or its ``layers``) as canonical safetensors."""
    layers = getattr(module, "layers", module)
    state = {k: (v.to(dtype) if dtype else v).contiguous() for k, v in layers.state_dict().items()}
    if isinstance(module, Decoder):  # what the file decodes, for a reader (the loader tells it from the shapes)
        skips = {"skips": ",".join(module.skips)} if module.skips else {}
        if any(s != 1.0 for s in module.skip_strengths):
            strength = module.skip_strength
            skips["skip_strength"] = ",".join(map(repr, strength)) if isinstance(strength, tuple) else repr(strength)
        if module.grain:
            skips["grain"] = repr(module.grain)
        if module.strokes:
            skips["strokes"] = repr(module.strokes)
        if module.extra_convs:
            skips["extra_convs"] = str(module.extra_convs)
        metadata = {"layer": module.layer, **skips, **(metadata or {})}
    # not save_file(): that makes the file private to its owner, whatever the umask
    Path(path).write_bytes(safetensors_bytes(state, {"arch": arch, **(metadata or {})}))


def build_encoder(path: str | Path, arch: Arch) -> Encoder:
    """An Encoder of ``arch`` with the weights from ``path``."""
    enc = Encoder(arch)
    load_into(enc, path)
    return enc


def decoder_layer(path: str | Path, state: dict[str, Tensor] | None = None) -> Layer:
    """The layer a decoder file decodes, told by the input channels of its first conv (relu4_1 if unknown).

    ``state``: the file's contents when already read.
    """
    first = (read_state_dict(path) if state is None else state).get("1.weight")
    if first is not None and first.ndim == 4:
        for layer in LAYERS:
            if first.shape[1] == channels_of(layer):
                return layer
    return "relu4_1"


def decoder_skips(path: str | Path, state: dict[str, Tensor] | None = None) -> tuple[str, ...]:
    """The skips a decoder file takes, told by the ``scale`` of each of its joins (its length is the skip's
    channels); none for the plain decoder. ``state``: the file's contents when already read."""
    by_channels = {channels_of(name): name for name in SKIP_LAYERS}
    state = read_state_dict(path) if state is None else state
    scales = [v for k, v in state.items() if k.endswith(".scale")]
    unknown = [tuple(v.shape) for v in scales if v.ndim != 1 or v.numel() not in by_channels]
    if unknown:
        raise WeightsError(f"{path}: skip scales of shape {unknown[0]} match no skip layer")
    return tuple(sorted((by_channels[v.numel()] for v in scales), key=FEATURE_LAYERS.index))


def decoder_extra_convs(path: str | Path, state: dict[str, Tensor] | None = None) -> int:
    """The extra convs a decoder file has at its deepest resolution (``Decoder.extra_convs``), told by the square
    3x3 convs as wide as its first conv's output right after it (where a decoder without them upsamples).
    ``state``: the file's contents when already read."""
    state = read_state_dict(path) if state is None else state
    first, count = state.get("1.weight"), 0
    if first is None or first.ndim != 4:
        return 0
    square = (first.shape[0], first.shape[0], 3, 3)
    while count < MAX_EXTRA_CONVS and tuple(getattr(state.get(f"{4 + 3 * count}.weight"), "shape", ())) == square:
        count += 1
    return count


def decoder_skip_strength(path: str | Path) -> float | tuple[float, ...]:
    """The skip strength a decoder file was trained with (its ``skip_strength`` metadata: one number, or one per
    skip, comma-separated; 1 when absent)."""
    try:
        return parse_skip_strength(read_metadata(path).get("skip_strength", "1"))
    except ValueError as e:
        raise WeightsError(f"{path}: skip_strength {e}") from e


def _decoder_amount(path: str | Path, key: str, top: float) -> float:
    """A noise amount in a decoder file's metadata under ``key`` (0 when absent), checked against ``top``."""
    text = read_metadata(path).get(key, "0")
    try:
        return check_amount(key, float(text), top)
    except (ValueError, InputError):
        raise WeightsError(f"{path}: {key} {text!r} is not a number from 0 to {top:g}") from None


def decoder_grain(path: str | Path) -> float:
    """The grain a decoder file is meant to be stylized with (its ``grain`` metadata; 0 when absent)."""
    return _decoder_amount(path, "grain", MAX_GRAIN)


def decoder_strokes(path: str | Path) -> float:
    """The stroke noise a decoder file was trained with (its ``strokes`` metadata; 0 when absent)."""
    return _decoder_amount(path, "strokes", MAX_STROKES)


def build_decoder(path: str | Path, arch: Arch) -> Decoder:
    """A Decoder of ``arch`` with the weights from ``path``, for the layer they decode (:func:`decoder_layer`),
    the skips they take (:func:`decoder_skips`), its extra convs (:func:`decoder_extra_convs`), the strength they
    were trained with (:func:`decoder_skip_strength`), the grain they are meant for (:func:`decoder_grain`) and the
    stroke noise they were trained with (:func:`decoder_strokes`)."""
    state = read_state_dict(path)
    skips = decoder_skips(path, state)
    try:
        dec = Decoder(arch, decoder_layer(path, state), skips, decoder_skip_strength(path) if skips else 1.0,
                      decoder_grain(path), decoder_strokes(path), decoder_extra_convs(path, state))
    except ValueError as e:
        raise WeightsError(f"{path}: {e}") from e
    load_into(dec, path, state)
    return dec
