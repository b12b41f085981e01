"""Safe image decoding: bytes in, an upright 8-bit RGB array out, or a clear rejection.

Every way an upload can be bad ends in :class:`ImageRejected` with a short machine-readable ``reason``
(the quarantine reason) and a human-readable ``detail``; nothing here raises anything else for bad bytes.

Policy, decided once here so every consumer (inference, training, the labeling UI's image size) agrees:

* the pixel count is checked from the header *before* any pixel is decoded (decompression bombs);
* EXIF orientation is applied, so coordinates refer to the image as browsers and workers see it;
* palette, grayscale, 16-bit, float, CMYK, YCbCr and RGBA/LA images are converted to RGB (alpha is
  composited over mid-gray, the letterbox colour) because they are real photos in a different encoding;
  only images that cannot be decoded faithfully are rejected.
"""

from __future__ import annotations

import io
import sys
import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

# Formats a labeling UI can show and the models were trained on; anything else is refused.
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF", "MPO"})
_EXIF_ORIENTATION = 0x0112
_BACKGROUND = 114  # ultralytics' letterbox gray: transparent pixels blend into what padding looks like

UInt8Image = NDArray[np.uint8]


def pillow_open(fp: io.BytesIO) -> Image.Image:
    """Pillow's own ``Image.open``.

    Importing ultralytics (training, benchmarks, tests in the same process) replaces ``Image.open``
    with a wrapper that, on an unidentified image, tries to install and import ``pi-heif``; a text file
    named ``.jpg`` then raises ModuleNotFoundError instead of UnidentifiedImageError. The wrapper keeps
    Pillow's original as ``_image_open``; use it so bad bytes are judged the same in every process.
    """
    patches = sys.modules.get("ultralytics.utils.patches")
    opener = getattr(patches, "_image_open", None) if patches is not None else None
    return (opener or Image.open)(fp)


class ImageRejected(ValueError):
    """An input that cannot become an RGB image; ``reason`` is the quarantine reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DecodedImage:
    """An upright RGB image (H, W, 3) and facts about its original encoding."""

    pixels: UInt8Image
    format: str
    original_mode: str
    exif_transposed: bool

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16/32-bit integer gray: keep the top 8 bits of the range the data actually uses (16-bit PNGs
        # from cameras often fill only 10-12 bits; a fixed >>8 would render them almost black).
        arr = np.asarray(im, dtype=np.float64)
        hi = float(arr.max()) if arr.size else 0.0
        scale = 255.0 / hi if hi > 255 else 1.0
        gray = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise ImageRejected("bad_pixels", "float image holds NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        norm = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(np.rint(norm).astype(np.uint8)).convert("RGB")
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (_BACKGROUND, _BACKGROUND, _BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # L, 1, CMYK, YCbCr, LAB, HSV, RGBX: Pillow converts these faithfully.
    return im.convert("RGB")


def decode_image(data: bytes, *, max_pixels: int, min_side: int) -> DecodedImage:
    """Decode ``data`` into an upright RGB array or raise :class:`ImageRejected`.

    Args:
        data: the object's bytes.
        max_pixels: largest width*height accepted (checked from the header before decoding).
        min_side: smallest accepted width and height (after EXIF rotation).
    """
    if not data:
        raise ImageRejected("empty_file", "the object has zero bytes")
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check warns or raises at its global limit; ours is the one that applies.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = pillow_open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageRejected("not_an_image", "the bytes are not an image format Pillow recognises") from None
    except Image.DecompressionBombError as exc:
        raise ImageRejected("too_many_pixels", str(exc)) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageRejected("corrupt_header", f"{type(exc).__name__}: {exc}") from None
    with im:
        fmt = im.format or "unknown"
        if fmt not in ALLOWED_FORMATS:
            raise ImageRejected("unsupported_format", f"{fmt} images are not accepted ({sorted(ALLOWED_FORMATS)})")
        width, height = im.size
        if width * height > max_pixels:
            raise ImageRejected(
                "too_many_pixels", f"{width}x{height} = {width * height} pixels exceeds the cap of {max_pixels}"
            )
        original_mode = im.mode
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im.load()
                orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
                upright = ImageOps.exif_transpose(im) if orientation != 1 else im
                rgb = _to_rgb(upright)
                pixels = np.asarray(rgb, dtype=np.uint8)
        except ImageRejected:
            raise
        except Image.DecompressionBombError as exc:
            raise ImageRejected("too_many_pixels", str(exc)) from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            # Pillow reports a cut-off JPEG/PNG as OSError("image file is truncated ...").
            reason = "truncated" if "truncat" in str(exc).lower() else "corrupt_data"
            raise ImageRejected(reason, f"{type(exc).__name__}: {exc}") from None
        transposed = orientation != 1
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ImageRejected("unsupported_mode", f"mode {original_mode} decoded to shape {pixels.shape}")
    h, w = pixels.shape[:2]
    if min(h, w) < min_side:
        raise ImageRejected("too_small", f"{w}x{h} is below the minimum side of {min_side} pixels")
    return DecodedImage(pixels=np.ascontiguousarray(pixels), format=fmt, original_mode=original_mode,
                        exif_transposed=transposed)
