"""Reading, resizing and writing images (adain.images); torchvision is the reference for resize, crop and rounding."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF
from torchvision.utils import save_image as tv_save_image

from adain.errors import ImageError, ImageTooLarge, UnsupportedImage
from adain.images import (
    SizeLimits,
    center_crop,
    decoded_pixels,
    encode_image,
    image_size,
    open_image,
    output_format,
    prepare,
    prepared_size,
    read_image,
    read_resized,
    resize_shorter,
    save_image,
    to_tensor,
    to_uint8,
)


@pytest.fixture(scope="module")
def jpeg_bytes(content_paths) -> bytes:
    return content_paths[0].read_bytes()


@pytest.mark.parametrize(("data", "message"), [
    (lambda jpeg: jpeg[: len(jpeg) // 2], "truncated or corrupt image"),
    (lambda jpeg: jpeg[:20], "not an image in a supported format"),  # too short to identify
    (lambda jpeg: b"just some text, not an image\n" * 4, "not an image in a supported format"),
    (lambda jpeg: b"%PDF-1.4\n" + b"0" * 100, "not an image in a supported format"),
    (lambda jpeg: b"", "not an image in a supported format"),
])
def test_bad_image_data_is_a_one_line_error(tmp_path, jpeg_bytes, data, message):
    path = tmp_path / "bad.jpg"
    path.write_bytes(data(jpeg_bytes))
    with pytest.raises(ImageError, match=message) as info:
        read_image(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_and_pixel_limit(tmp_path, content_paths):
    with pytest.raises(ImageError, match="cannot open"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match=r"480x320 is 153600 pixels, more than the limit of 1000"):
        read_image(content_paths[0], max_pixels=1000)


def test_transparency_is_flattened_onto_white():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG")
    img = read_image(buf.getvalue())
    assert img[:, 0, 0].tolist() == [1.0, 0.0, 0.0] and img[:, 1, 1].tolist() == [1.0, 1.0, 1.0]


def test_exif_orientation_is_applied(tmp_path, content_paths):
    img = Image.open(content_paths[0])
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    img.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    upright = read_image(content_paths[0])
    rotated = read_image(tmp_path / "rotated.jpg")
    assert rotated.shape == (3, upright.shape[2], upright.shape[1])
    assert (rotated - upright.rot90(-1, dims=(1, 2))).abs().mean() < 0.02


def test_image_size_reads_the_header_alone_with_the_checks_of_reading(tmp_path, content_paths):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)).save(buf, "PNG")
    hollow = buf.getvalue()[:200]  # the header and a little of the pixels
    assert image_size(hollow) == (200, 300)
    with pytest.raises(ImageError, match="truncated"):
        read_image(hollow)
    with pytest.raises(ImageTooLarge, match="300x200 is 60000 pixels"):
        image_size(hollow, max_pixels=59_999)
    with pytest.raises(UnsupportedImage):
        image_size(hollow, formats=("JPEG",))
    img = Image.open(content_paths[0])
    exif = img.getexif()
    exif[0x0112] = 6  # shown turned by 90 degrees: the sides swap once decoded, the pixel count stays
    img.save(tmp_path / "rotated.jpg", exif=exif)
    h, w = image_size((tmp_path / "rotated.jpg").read_bytes())
    assert read_image(tmp_path / "rotated.jpg").shape[1:] == (w, h)


def test_sixteen_bit_grey_is_scaled_not_clipped():
    buf = io.BytesIO()
    Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16)).save(buf, format="PNG")
    img = read_image(buf.getvalue())
    assert img[0, 0].tolist() == pytest.approx([0.0, 128 / 255, 1.0])


@pytest.mark.parametrize(("h", "w", "size"), [(45, 61, 20), (61, 45, 33), (30, 30, 17), (20, 37, 50)])
def test_resize_and_crop_match_torchvision(h, w, size):
    img = torch.rand(3, h, w, generator=torch.Generator().manual_seed(h * w))
    ours = resize_shorter(img, size)
    reference = TF.resize(img, [size], antialias=True).clamp(0, 1)
    assert ours.shape == reference.shape and min(ours.shape[-2:]) == size
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(center_crop(ours, size), TF.center_crop(reference, [size, size]))
    assert resize_shorter(img, 0) is img


@pytest.mark.parametrize(("h", "w"), [(45, 61), (61, 45), (30, 30), (1, 17), (7, 3)])
@pytest.mark.parametrize("size", [0, 20, 33, 50])
@pytest.mark.parametrize("crop", [False, True])
def test_prepared_size_is_what_prepare_makes(h, w, size, crop):
    out = prepare(torch.rand(3, h, w), size, crop, SizeLimits(10**9, 10**9))
    assert prepared_size((h, w), size, crop) == tuple(out.shape[-2:])


@pytest.mark.parametrize(("hw", "size", "error", "message"), [
    ((1, 400), 64, ImageError, "image: 400x1 at a shorter side of 64 is 25600x64, sides more than 16:1 apart"),
    ((1, 4000), 2048, ImageTooLarge, "4000x1 at a shorter side of 2048 is 8192000x2048 = 16777216000 pixels, "
                                     "more than the limit of 25000000"),
    ((100, 100), 6000, ImageTooLarge, "100x100 at a shorter side of 6000 is 6000x6000 = 36000000 pixels"),
    ((20, 400), 0, ImageError, "image: 400x20 is 400x20, sides more than 16:1 apart"),
])
def test_prepare_checks_the_prepared_size_before_resizing(hw, size, error, message):
    with pytest.raises(error, match=message):  # before resizing: 8192000x2048 would take 201 GB
        prepare(torch.zeros(3, *hw), size, False, SizeLimits(25_000_000, 16))


def test_to_uint8_rounds_like_torchvision_save_image(tmp_path):
    values = torch.tensor([-0.5, 0.0, 0.5 / 255, 0.4 / 255, 1.5 / 255, 0.5, 254.5 / 255, 1.0, 7.0])
    img = values.view(1, 1, -1).expand(3, 1, -1).contiguous()
    tv_save_image(img, tmp_path / "tv.png")
    expected = np.asarray(Image.open(tmp_path / "tv.png"))[0, :, 0]
    assert to_uint8(img)[0, 0].tolist() == expected.tolist()
    assert expected.tolist() == [0, 0, 1, 0, 2, 128, 255, 255, 255]


@pytest.mark.parametrize(("name", "fmt"), [("a.png", "png"), ("a.JPG", "jpeg"), ("b.jpeg", "jpeg"),
                                           ("c.webp", "webp")])
def test_output_formats_round_trip(tmp_path, name, fmt):
    img = torch.rand(3, 13, 11)
    assert output_format(name) == fmt
    save_image(img, tmp_path / name)
    back = read_image(tmp_path / name)
    assert back.shape == img.shape
    if fmt == "png":
        assert torch.equal(to_uint8(back), to_uint8(img))
    assert encode_image(img, fmt)[:4] == (tmp_path / name).read_bytes()[:4]


@pytest.mark.parametrize("name", ["out.gif", "out", "out.png.txt"])
def test_bad_output_extension(name):
    with pytest.raises(ImageError, match="unsupported output format"):
        output_format(name)


def test_unwritable_output_is_an_image_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ImageError, match="cannot write"):
        save_image(torch.rand(3, 4, 4), tmp_path / "file" / "out.png")


def test_to_tensor_checks_shape():
    assert to_tensor(torch.full((3, 2, 2), 255, dtype=torch.uint8)).max() == 1.0
    with pytest.raises(ImageError, match=r"shape \(3, H, W\)"):
        to_tensor(torch.zeros(2, 2, 3, dtype=torch.uint8))


def test_open_image_keeps_mode_when_asked():
    buf = io.BytesIO()
    Image.new("L", (3, 2), 7).save(buf, format="PNG")
    assert open_image(buf.getvalue(), mode=None).mode == "L"


def _encoded(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize(("fmt", "size", "decoded"), [("JPEG", 64, 375 * 250), ("JPEG", 400, 1500 * 1000),
                                                      ("PNG", 64, 3000 * 2000), ("JPEG", 0, 3000 * 2000)])
def test_read_resized_decodes_jpegs_at_reduced_scale_and_resizes_in_8_bits_like_the_float_path(fmt, size, decoded):
    rng = np.random.default_rng(0)
    smooth = Image.fromarray(rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)).resize((2000, 3000))
    data = _encoded(np.asarray(smooth), fmt)
    assert decoded_pixels(data, size) == decoded  # the smallest scale (1/8 or 1/2) keeping twice the size
    got = read_resized(data, size)
    want = prepare(read_image(data), size, False)
    assert got.source_hw == (3000, 2000) and got.image.shape == want.shape and got.image.dtype == torch.float32
    assert (got.image - want).abs().max() <= 4 / 255 and (got.image - want).abs().mean() <= 0.5 / 255


def test_read_resized_turns_the_image_as_its_exif_says_and_checks_the_size_before_decoding():
    array = np.zeros((40, 80, 3), np.uint8)
    array[:, :40] = 255  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned by 90 degrees clockwise: the white half ends up on top
    got = read_resized(_encoded(array, "JPEG", exif=exif), 20)
    assert got.source_hw == (80, 40) and got.image.shape == (3, 40, 20)
    assert got.image[:, :20].mean() > 0.9 and got.image[:, 20:].mean() < 0.1
    with pytest.raises(ImageError, match="sides more than 16:1 apart"):
        read_resized(_encoded(np.zeros((1, 400, 3), np.uint8), "PNG"), 64)
    with pytest.raises(ImageTooLarge, match="more than the limit of 1000"):
        read_resized(_encoded(np.zeros((40, 80, 3), np.uint8), "PNG"), 64, limits=SizeLimits(max_pixels=1000))
