"""What one training step minimises: the paper's content and style losses plus the optional terms of a
:class:`TrainingObjective` (structure, layout, pixel, grid, colour, texture, features, coarse, patch)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import ops
from ..net import FEATURE_LAYERS, Encoder
from ..strokes import stroke_noise
from .losses import (
    colour_loss,
    content_loss,
    decoder_targets,
    feature_distribution_loss,
    grid_loss,
    layout_loss,
    normalised_feature_loss,
    patch_loss,
    style_losses,
    texture_loss,
)
from .setup import Models


@dataclass(frozen=True)
class TrainingObjective:
    """What the decoder is trained to minimise, besides the paper's content + style_weight * style.

    ``structure``: weight of the instance-normalised relu3_1 loss against the content photo;
    ``layout``: weight of the coarse standardised-luminance loss against it; ``pixel``: weight of
    the pixel L1 loss, used in reconstruction steps (the style image is then the content itself);
    ``grid``: weight of the loss on the output's gradient profile modulo 8 (the upsampling grid);
    ``colour`` and ``texture``: weights of the encoder-free appearance losses against the style image
    (:func:`adain.train.losses.colour_loss`, :func:`adain.train.losses.texture_loss`), and ``features``: weight of
    the sliced Wasserstein distance of the encoder's relu1_1..relu3_1 feature distributions to the style image's
    (:func:`adain.train.losses.feature_distribution_loss`); ``coarse``: weight of the style loss and texture term
    taken again at half size (:func:`coarse_losses`); ``patch``: weight of the sliced Wasserstein distance of the
    output's pixel patches to the style image's (:func:`adain.train.losses.patch_loss`). These five are off in
    reconstruction steps.
    ``content_layers``: shallower layers where the paper's content loss is taken too, each against AdaIN there.
    ``grain``: the standard deviation of the noise added to the photo before it is encoded (a new draw each step;
    off in reconstruction steps): the AdaIN targets come from the noisy photo, the layout and grid terms compare
    with the photo itself.
    ``strokes``: the amount of stroke noise (:func:`adain.strokes.stroke_noise`, a new draw each step; off in
    reconstruction steps) added to the decoder's deepest input; the content loss's target stays the AdaIN output
    without it.
    """

    structure: float = 0.0
    layout: float = 0.0
    pixel: float = 0.0
    grid: float = 0.0
    colour: float = 0.0
    texture: float = 0.0
    features: float = 0.0
    coarse: float = 0.0
    content_layers: tuple[str, ...] = ()  # where the content loss is taken besides the decoder's layer
    grain: float = 0.0
    patch: float = 0.0
    strokes: float = 0.0


STRUCTURE_LAYER = 2  # relu3_1
FEATURE_LAYERS_MATCHED = 3  # relu1_1..relu3_1: the features term's layers
RECON_PIXEL_WEIGHT = 10.0  # pixel L1 (images in [0, 1]) in reconstruction steps


def compute_losses(models: Models, content: Tensor, style: Tensor, objective: TrainingObjective = TrainingObjective()
                   ) -> tuple[Tensor, list[Tensor], Tensor, dict[str, Tensor]]:
    """(content-side loss, per-layer style losses, output, weighted feature terms) of one batch.

    The content-side loss is the paper's (MSE of the AdaIN layer's features to the AdaIN target, and the same at
    each of the ``objective``'s ``content_layers`` against AdaIN there, unweakened) plus the
    ``objective``'s structure, layout, pixel and grid terms; the feature terms hold its ``features`` term when on
    (its colour and texture terms are :func:`appearance_losses`'). AdaIN works at every input of the decoder (its
    layer and its skips), each with the style's own statistics there; ``style is content`` makes it a
    reconstruction step, whose skips go in at full strength.
    """
    enc, dec = models.encoder, models.decoder
    k = FEATURE_LAYERS.index(enc.layer)
    recon = style is content
    with torch.no_grad():
        seen = content
        if objective.grain and not recon:
            seen = (content + objective.grain * torch.randn_like(content)).clamp_(0, 1)
        content_feats = enc.features(seen, FEATURE_LAYERS[-1] if recon else enc.layer)
        style_feats = content_feats if recon else enc.features(style)
        targets = decoder_targets(dec, content_feats, style_feats, 0.0 if recon else 1.0)
        given = targets
        if objective.strokes and not recon:
            deepest = targets[-1]
            given = [*targets[:-1], deepest + stroke_noise(deepest, [objective.strokes] * len(deepest), seed=None)]
    out = dec(given, tuple(content.shape[-2:]))
    out_feats = enc.features(out)
    lc = content_loss(out_feats[k], targets[-1])
    for name in objective.content_layers:
        i = FEATURE_LAYERS.index(name)
        target = content_feats[i] if recon else ops.adain(content_feats[i], ops.channel_stats(style_feats[i]))
        lc = lc + content_loss(out_feats[i], target)
    if objective.structure:
        lc = lc + objective.structure * normalised_feature_loss(out_feats[STRUCTURE_LAYER],
                                                                content_feats[STRUCTURE_LAYER])
    if objective.layout:
        lc = lc + objective.layout * layout_loss(out, content)
    if objective.pixel:
        lc = lc + objective.pixel * F.l1_loss(out.float(), content.float())
    if objective.grid:
        lc = lc + objective.grid * grid_loss(out, content)
    terms = {}
    if objective.features:
        n = FEATURE_LAYERS_MATCHED
        terms["features"] = objective.features * feature_distribution_loss(out_feats[:n], style_feats[:n])
    return lc, style_losses(out_feats, style_feats), out, terms


def appearance_losses(out: Tensor, style: Tensor, objective: TrainingObjective) -> dict[str, Tensor]:
    """The weighted encoder-free style terms of ``objective`` that are on: colour, texture and patch."""
    terms = {}
    if objective.colour:
        terms["colour"] = objective.colour * colour_loss(out, style)
    if objective.texture:
        terms["texture"] = objective.texture * texture_loss(out, style)
    if objective.patch:
        terms["patch"] = objective.patch * patch_loss(out, style)
    return terms


def coarse_losses(encoder: Encoder, out: Tensor, style: Tensor, objective: TrainingObjective, style_weight: float
                  ) -> dict[str, Tensor]:
    """The paper's style loss (times ``style_weight``) and the texture term again, on output and style image at half
    size (2x2 means), all times ``objective.coarse``: strokes twice the size the full-size terms see, as a picture
    stylized at twice the training scale shows them. Empty when the term is off."""
    if not objective.coarse:
        return {}
    out, style = F.avg_pool2d(out.float(), 2), F.avg_pool2d(style.float(), 2)
    with torch.no_grad():
        style_feats = encoder.features(style)
    total = style_weight * torch.stack(style_losses(encoder.features(out), style_feats)).sum()
    if objective.texture:
        total = total + objective.texture * texture_loss(out, style)
    return {"coarse": objective.coarse * total}


def is_reconstruction(args: argparse.Namespace, step: int) -> bool:
    """Whether step ``step`` (0-based) trains reconstruction (the style image is the content photo): the first
    ``--recon-steps``, then every ``--recon-every``-th step (which keeps the photo's shapes within reach)."""
    every = args.recon_every
    return step < args.recon_steps or bool(every and (step + 1) % every == 0)


def objective_at(args: argparse.Namespace, step: int) -> tuple[TrainingObjective, bool]:
    """The objective of step ``step`` (0-based) and whether it is a reconstruction step (style = content)."""
    recon = is_reconstruction(args, step)
    style = 0.0 if recon else 1.0  # the style terms, the grain and the strokes are off in reconstruction steps
    extra = tuple(name for name in (args.content_layers or ()) if name != args.layer)
    return TrainingObjective(
        structure=args.structure_weight, layout=args.layout_weight, pixel=RECON_PIXEL_WEIGHT if recon else 0.0,
        grid=args.grid_weight, colour=style * args.colour_weight, texture=style * args.texture_weight,
        features=style * args.features_weight, coarse=style * args.coarse_weight, patch=style * args.patch_weight,
        content_layers=extra, grain=style * args.grain, strokes=style * args.strokes), recon
