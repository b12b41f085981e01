"""Letterboxing the way ultralytics' predictor does it, so ONNX outputs match the .pt models'.

Each image is scaled by ``min(imgsz / h, imgsz / w)`` with bilinear sampling on cv2's pixel grid, and
padded with gray (114) to a multiple of the stride: a 640x480 frame becomes a 640x480 input, not
640x640, which is about a third less work (dynamic-shape ONNX export). A batch is padded to the largest
member's shape; each image keeps its own scale and offsets for mapping predictions back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

PAD_VALUE = 114
STRIDE = 32

FloatArray = NDArray[np.float32]


@dataclass(frozen=True)
class Placement:
    """Where one original image sits inside the model input."""

    scale: float
    pad_left: float
    pad_top: float
    width: int
    height: int

    def to_image_xy(self, xy: NDArray[np.floating]) -> NDArray[np.float64]:
        """Map (..., 2) input-space points back to original pixels (not clipped)."""
        out = np.asarray(xy, dtype=np.float64).copy()
        out[..., 0] = (out[..., 0] - self.pad_left) / self.scale
        out[..., 1] = (out[..., 1] - self.pad_top) / self.scale
        return out

    def to_image_boxes(self, xyxy: NDArray[np.floating]) -> NDArray[np.float64]:
        """Map (N, 4) input-space boxes back to original pixels, clipped to the image."""
        boxes = self.to_image_xy(np.asarray(xyxy, dtype=np.float64).reshape(-1, 2, 2)).reshape(-1, 4)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, self.width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, self.height)
        return boxes


def resized_shape(height: int, width: int, imgsz: int) -> tuple[int, int, float]:
    """(new_h, new_w, scale) of an image scaled to fit ``imgsz`` on its long side."""
    scale = min(imgsz / height, imgsz / width)
    return max(1, round(height * scale)), max(1, round(width * scale)), scale


def input_shape(height: int, width: int, imgsz: int, stride: int = STRIDE) -> tuple[int, int]:
    """The smallest stride-multiple (H, W) that holds the resized image (ultralytics' ``auto`` mode)."""
    new_h, new_w, _ = resized_shape(height, width, imgsz)
    return -(-new_h // stride) * stride, -(-new_w // stride) * stride


def _resize(pixels: NDArray[np.uint8], new_h: int, new_w: int) -> NDArray[np.uint8]:
    h, w = pixels.shape[:2]
    if (h, w) == (new_h, new_w):
        return pixels
    # An affine transform samples bilinearly at (x + 0.5) * w / new_w - 0.5, exactly cv2.INTER_LINEAR's
    # grid; Image.resize would antialias on downscale and drift from what the models saw in validation.
    im = Image.fromarray(pixels)
    out = im.transform((new_w, new_h), Image.Transform.AFFINE, (w / new_w, 0, 0, 0, h / new_h, 0),
                       resample=Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.uint8)


def letterbox_batch(images: list[NDArray[np.uint8]], imgsz: int, stride: int = STRIDE,
                    canvas_shape: tuple[int, int] | None = None) -> tuple[FloatArray, list[Placement]]:
    """One NCHW float32 tensor in [0, 1] for RGB uint8 images, plus each image's placement.

    ``canvas_shape`` fixes (H, W) for graphs exported with a static input size (it must hold
    ``imgsz`` on both sides); by default the canvas is the smallest stride multiple that fits the batch.
    """
    if not images:
        raise ValueError("letterbox_batch needs at least one image")
    if canvas_shape is not None:
        if min(canvas_shape) < imgsz:
            raise ValueError(f"canvas {canvas_shape} cannot hold images scaled to {imgsz}")
        batch_h, batch_w = canvas_shape
    else:
        shapes = [input_shape(im.shape[0], im.shape[1], imgsz, stride) for im in images]
        batch_h = max(s[0] for s in shapes)
        batch_w = max(s[1] for s in shapes)
    canvas = np.full((len(images), batch_h, batch_w, 3), PAD_VALUE, dtype=np.uint8)
    placements = []
    for i, im in enumerate(images):
        h, w = im.shape[:2]
        new_h, new_w, scale = resized_shape(h, w, imgsz)
        dw, dh = (batch_w - new_w) / 2, (batch_h - new_h) / 2
        # ultralytics' rounding of the split padding, so a lone image lands on the same pixels.
        left, top = round(dw - 0.1), round(dh - 0.1)
        canvas[i, top:top + new_h, left:left + new_w] = _resize(im, new_h, new_w)
        placements.append(Placement(scale=scale, pad_left=left, pad_top=top, width=w, height=h))
    tensor = canvas.transpose(0, 3, 1, 2).astype(np.float32)
    tensor *= 1.0 / 255.0
    return np.ascontiguousarray(tensor), placements
