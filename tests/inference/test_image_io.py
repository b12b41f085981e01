"""Bad and unusual inputs: each is either decoded faithfully to upright RGB or rejected with a reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from inference.image_io import ImageRejected, decode_image

LIMITS = {"max_pixels": 4_000_000, "min_side": 32}


def _encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _photo(w: int = 96, h: int = 64) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _reject(data: bytes, **limits: int) -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        decode_image(data, **{**LIMITS, **limits})
    return info.value


def test_given_zero_bytes_then_rejected_as_empty():
    assert _reject(b"").reason == "empty_file"


def test_given_text_named_like_an_image_then_not_an_image():
    assert _reject(b"<html>this is not a jpeg</html>" * 10).reason == "not_an_image"


def test_given_truncated_jpeg_then_rejected_as_truncated():
    data = _encode(_photo(256, 256), "JPEG", quality=90)
    err = _reject(data[: len(data) // 2])
    assert err.reason == "truncated"
    assert "truncated" in err.detail


def test_given_pixel_count_above_cap_then_rejected_before_decoding():
    # A 4000x4000 gray PNG compresses to a few KB: a small file that would expand to 16 MP.
    data = _encode(Image.new("L", (4000, 4000)), "PNG")
    assert len(data) < 200_000
    err = _reject(data, max_pixels=1_000_000)
    assert err.reason == "too_many_pixels"
    assert "16000000" in err.detail


def test_given_tiny_image_then_rejected_as_too_small():
    assert _reject(_encode(_photo(20, 300), "PNG")).reason == "too_small"


def test_given_gif_then_unsupported_format():
    assert _reject(_encode(_photo().convert("P"), "GIF")).reason == "unsupported_format"


def test_given_rgba_then_alpha_composited_over_gray():
    arr = np.zeros((40, 40, 4), dtype=np.uint8)
    arr[..., 0] = 200
    arr[:20, :, 3] = 255  # top half opaque red-ish, bottom half transparent
    out = decode_image(_encode(Image.fromarray(arr, "RGBA"), "PNG"), **LIMITS)
    assert out.pixels.shape == (40, 40, 3) and out.original_mode == "RGBA"
    assert tuple(out.pixels[5, 5]) == (200, 0, 0)
    assert tuple(out.pixels[35, 5]) == (114, 114, 114)


def test_given_palette_png_then_rgb_with_palette_colours():
    im = Image.new("P", (40, 40))
    im.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    im.paste(1, (0, 0, 40, 40))
    out = decode_image(_encode(im, "PNG"), **LIMITS)
    assert out.original_mode == "P"
    assert tuple(out.pixels[0, 0]) == (10, 20, 30)


def test_given_16bit_png_then_scaled_to_8bit_range():
    arr = np.linspace(0, 4095, 64 * 64).reshape(64, 64).astype(np.uint16)  # 12-bit data in 16-bit PNG
    im = Image.fromarray(arr)  # Pillow maps uint16 to mode I;16
    out = decode_image(_encode(im, "PNG"), **LIMITS)
    assert out.pixels.dtype == np.uint8 and out.pixels.shape == (64, 64, 3)
    assert out.pixels.max() == 255 and out.pixels.min() == 0  # not crushed to near-black by a fixed >>8


def test_given_cmyk_jpeg_then_converted_to_rgb():
    cmyk = Image.new("CMYK", (48, 48), (0, 255, 255, 0))  # pure red in CMYK
    out = decode_image(_encode(cmyk, "JPEG", quality=95), **LIMITS)
    assert out.original_mode == "CMYK"
    r, g, b = (int(c) for c in out.pixels[24, 24])
    assert r > 200 and g < 60 and b < 60


def test_given_exif_rotated_jpeg_then_pixels_are_upright():
    im = _photo(120, 60)  # stored landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": shown as portrait
    out = decode_image(_encode(im, "JPEG", exif=exif.tobytes()), **LIMITS)
    assert out.exif_transposed
    assert (out.width, out.height) == (60, 120)


def test_given_plain_jpeg_then_not_transposed_and_rgb():
    out = decode_image(_encode(_photo(), "JPEG"), **LIMITS)
    assert not out.exif_transposed and out.format == "JPEG" and out.pixels.shape == (64, 96, 3)


def test_non_image_still_rejected_after_ultralytics_patched_pillow(tmp_path):
    """ultralytics replaces Image.open with a pi-heif-installing wrapper; decoding must not go through it."""
    from alp.torch_compat import prepare_ultralytics

    prepare_ultralytics(tmp_path / "ul")
    import ultralytics.utils.patches  # noqa: F401  (applies the patch)

    assert _reject(b"plain text with a .jpg name" * 5).reason == "not_an_image"
