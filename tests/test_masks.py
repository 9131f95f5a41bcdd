"""Spatial-control masks (adain.masks): label images, grey masks, errors, resizing to the content and features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from adain.errors import InputError
from adain.images import prepare
from adain.masks import feature_masks, fit_masks, fitted_masks, masks_from_images, read_masks


def _u8(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.uint8)


def test_label_image_gives_one_hot_masks():
    masks = masks_from_images([_u8([[0, 1, 2], [2, 2, 0]])], 3)
    assert masks.shape == (3, 2, 3)
    assert torch.equal(masks.argmax(0), torch.tensor([[0, 1, 2], [2, 2, 0]]))
    assert torch.equal(masks.sum(0), torch.ones(2, 3))


def test_grey_mask_blends_two_styles():
    masks = masks_from_images([_u8([[0, 255, 51]])], 2)
    torch.testing.assert_close(masks[1], torch.tensor([[0.0, 1.0, 0.2]]))
    torch.testing.assert_close(masks.sum(0), torch.ones(1, 3))


def test_one_grey_mask_per_style_is_normalised_and_shared_where_all_are_zero():
    masks = masks_from_images([_u8([[255, 0, 0]]), _u8([[255, 0, 51]])], 2)
    torch.testing.assert_close(masks, torch.tensor([[[0.5, 0.5, 0.0]], [[0.5, 0.5, 1.0]]]))


@pytest.mark.parametrize(("images", "n_styles", "message"), [
    ([[[0, 1, 3]]], 3, "mask has label 3, but there are only 3 styles"),
    ([[[0, 1, 2]]], 2, "mask has label 2, but there are only 2 styles"),  # small values: labels, not grey
    ([[[0, 100, 200]]], 3, r"mask values \[0, 100, 200\]... do not name 3 styles"),
    ([[[0]], [[0]]], 3, "2 masks given for 3 styles"),
    ([[[0, 0]], [[0]]], 2, "the per-style masks differ in size"),
])
def test_masks_that_do_not_fit_the_styles(images, n_styles, message):
    with pytest.raises(InputError, match=message):
        masks_from_images([_u8(m) for m in images], n_styles)


def test_palette_indices_are_labels(tmp_path):
    img = Image.fromarray(np.array([[0, 1], [1, 0]], dtype=np.uint8), mode="P")
    img.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)  # index 0 shows white, 1 black: indices still count
    img.save(tmp_path / "labels.png")
    masks = read_masks([tmp_path / "labels.png"], 2)
    assert torch.equal(masks[1], torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    with pytest.raises(InputError, match="label 1, but there are only 1 styles"):
        read_masks([tmp_path / "labels.png"], 1)


def test_read_grey_masks_from_files(tmp_path):
    Image.fromarray(np.array([[0, 255]], dtype=np.uint8)).convert("RGB").save(tmp_path / "m.png")
    masks = read_masks([tmp_path / "m.png"], 2)
    assert torch.equal(masks, torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]]))


def test_fit_masks_resizes_and_crops_like_the_content():
    content = torch.rand(3, 30, 50)
    masks = masks_from_images([(torch.arange(50) >= 25).to(torch.uint8).expand(30, 50)], 2)
    fitted = fit_masks(masks, (30, 50), 17, crop=True)
    assert fitted.shape[-2:] == prepare(content, 17, True).shape[-2:] == (17, 17)
    torch.testing.assert_close(fitted.sum(0), torch.ones(17, 17))
    assert fitted[1, :, 0].max() < 0.05 and fitted[1, :, -1].min() > 0.95


def _halves(h: int, w: int) -> torch.Tensor:
    """Two-style masks (2, h, w): the left half to the first style, the right half to the second."""
    return masks_from_images([(torch.arange(w) >= w // 2).to(torch.uint8).expand(h, w)], 2)


@pytest.mark.parametrize("crop", [False, True])
def test_a_mask_of_the_output_size_is_taken_as_it_is(crop):
    out_hw = prepare(torch.rand(3, 300, 500), 17, crop).shape[-2:]  # (17, 28), or (17, 17) cropped
    masks = _halves(*out_hw)
    assert torch.equal(fit_masks(masks, (300, 500), 17, crop), masks)


@pytest.mark.parametrize(("mask_hw", "crop"), [((60, 100), False), ((61, 100), False), ((150, 250), True)])
def test_a_mask_of_the_contents_shape_at_another_size_is_resized_like_the_content(mask_hw, crop):
    at_content_size = fit_masks(_halves(30, 50), (30, 50), 17, crop)
    fitted = fit_masks(_halves(*mask_hw), (30, 50), 17, crop)
    assert fitted.shape == at_content_size.shape
    torch.testing.assert_close(fitted.sum(0), torch.ones(fitted.shape[-2:]))
    assert (fitted - at_content_size).abs().mean() < 0.02


@pytest.mark.parametrize("mask_hw", [(30, 40), (50, 30), (30, 53)])
def test_fit_masks_rejects_another_shape(mask_hw):
    h, w = mask_hw
    with pytest.raises(InputError, match=f"mask is {w}x{h} but the content image is 50x30 .28x17 as prepared.; "
                                         "give a mask of either size, or of the same shape"):
        fit_masks(torch.ones(2, h, w), (30, 50), 17, False)


def test_feature_masks_average_over_cells():
    masks = torch.zeros(2, 20, 20)
    masks[0, :, :10] = 1
    masks[1] = 1 - masks[0]
    small = feature_masks(masks, (3, 3))  # 20 -> 3: cells [0, 7), [6, 14), [13, 20)
    assert small.shape == (2, 3, 3)
    torch.testing.assert_close(small[0, 0], torch.tensor([1.0, 0.5, 0.0]))
    torch.testing.assert_close(small.sum(0), torch.ones(3, 3))


@pytest.mark.parametrize(("images", "n_styles"), [
    ([np.repeat(np.arange(60) // 20, 40).reshape(60, 40).T.astype(np.uint8)], 3),  # labels 0..2, in stripes
    ([np.tile(np.linspace(0, 255, 60), (40, 1)).astype(np.uint8)], 2),  # one grey ramp for two styles
])
def test_fitted_masks_resize_each_style_in_8_bits_like_fitting_the_float_masks(images, n_styles):
    grey = [torch.from_numpy(m) for m in images]
    fitted = fitted_masks(grey, n_styles, (40, 60), 17)
    want = fit_masks(masks_from_images(grey, n_styles), (40, 60), 17, False)
    assert fitted.shape == want.shape == (n_styles, 17, 25)
    torch.testing.assert_close(fitted.sum(0), torch.ones(17, 25))
    assert (fitted - want).abs().max() <= 2 / 255
    with pytest.raises(InputError, match="mask is 60x40 but the content image is 40x60"):
        fitted_masks(grey, n_styles, (60, 40), 17)
