"""Optimisation-based style transfer (Gatys et al.): slower than the AdaIN pass, higher fidelity.

    from .transfer import OptimizeOptions, optimize_image
    result = optimize_image(stylizer, content, [style_a, style_b], weights=[0.5, 0.5], balance=True,
                            options=OptimizeOptions(iterations=200))
    result.image  # (3, H, W) in [0, 1]; result.history: the losses of every iteration

The objective and the loop are in :mod:`adain.optimize.gatys`, the balancing in :mod:`adain.optimize.balance`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .. import ops
from ..errors import InputError
from ..net import Encoder
from ..options import check_style_scale
from ..stylizer import ColorMode, ImageLike, Stylizer, finish, model_input, prepare_content, prepare_style
from .balance import balance_factors, balanced_weights, refuse_mask
from .gatys import Callback, Objective, OptimizeOptions, descend

__all__ = ["OptimizeOptions", "OptimizeResult", "optimize_image"]


@dataclass
class OptimizeResult:
    """The stylized image (3, H, W) in [0, 1] on the CPU, the log of the final run, the style-loss factors."""

    image: Tensor
    history: list[dict]
    factors: list[float]  # b_i of the style losses: all 1 unless balanced


def _start(init: str, seed: int, content: Tensor, adain: Callable[[], Tensor], grey: bool) -> Tensor:
    """The first image (1, 3 or 1 when ``grey``, H, W): noise, the prepared content or ``adain()``."""
    channels = 1 if grey else 3
    if init == "noise":
        return torch.rand(1, channels, *content.shape[-2:], generator=torch.Generator().manual_seed(seed))
    img = content if init == "content" else adain()
    return (ops.luminance(img) if grey else img)[None, :channels]


def optimize_image(model: Stylizer | Encoder, content: ImageLike, styles: Sequence[ImageLike],
                   weights: Sequence[float] | None = None, *, mask: Tensor | None = None,
                   preserve_color: ColorMode = "none", content_size: int = 0, style_size: int = 0,
                   crop: bool = False, options: OptimizeOptions | None = None, balance: bool = False,
                   max_iterations: int | None = None, callback: Callback | None = None,
                   style_scale: float = 1.0) -> OptimizeResult:
    """Stylize ``content`` by optimising its pixels; the inputs mean what they mean for ``Stylizer.stylize``.

    ``model`` is a Stylizer, or a bare Encoder when ``options.init`` is not "adain"; the work runs on its
    device, in fp32. ``balance`` calibrates the style-loss factors first (see :mod:`adain.optimize.balance`; with
    init "adain" the AdaIN start is balanced too), which costs up to three more runs. ``max_iterations``
    caps ``options.iterations`` for every run (for servers). ``callback`` sees each log entry as it is
    made, tagged with its "phase": "balance" (with its "round") or "optimize".
    """
    options = options or OptimizeOptions()
    if max_iterations is not None and options.iterations > max_iterations:
        options = dataclasses.replace(options, iterations=max_iterations)
    stylizer = model if isinstance(model, Stylizer) else None
    if options.init == "adain" and stylizer is None:
        raise InputError("starting from the AdaIN result needs a decoder: pass a Stylizer, or start from "
                         "'content' or 'noise'")
    if balance:
        refuse_mask(mask)
    encoder = model.encoder if stylizer is not None else model
    c, w, masks = prepare_content(content, len(styles), weights, preserve_color, mask, content_size, crop)
    grey = preserve_color == "luminance"
    c_in = model_input(c, preserve_color)
    style_images = [prepare_style(s, preserve_color, c, style_size, crop, style_scale=check_style_scale(style_scale))
                    for s in styles]
    objective = Objective(encoder, c_in, style_images, w, masks, options)
    if balance and len(styles) > 1:
        objective.factors = balance_factors(objective, c_in[None, : 1 if grey else 3],
                                            callback=_tagged(callback, "balance"))
    looks = dict(preserve_color=preserve_color, content_size=content_size, style_size=style_size, crop=crop,
                 style_scale=style_scale)

    def adain() -> Tensor:
        blend = weights
        if balance:
            blend = balanced_weights(stylizer, content, styles, weights, options=options, **looks).tolist()
        return stylizer.stylize(content, styles, blend, mask=mask, **looks)

    start = _start(options.init, options.seed, c, adain, grey)
    image, history = descend(objective, start, _tagged(callback, "optimize"))
    out = finish(image.expand(-1, 3, -1, -1)[0].cpu(), c, preserve_color)
    return OptimizeResult(out, history, objective.factors.tolist())


def _tagged(callback: Callback | None, phase: str) -> Callback | None:
    return None if callback is None else (lambda entry: callback({**entry, "phase": phase}))
