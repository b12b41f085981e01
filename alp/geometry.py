"""Geometry shared by metrics, consolidation, matching and judgement: boxes, IoU and OKS.

Boxes are ``(x1, y1, x2, y2)`` in pixels unless a name says otherwise; :class:`Box` is the ``left, top,
width, height`` form the labels use. OKS follows COCO's definition: ``exp(-d^2 / (2 * s^2 * k^2))`` averaged
over the ground truth's labeled points (v > 0), with ``s^2`` the object's area and ``k = 2 * sigma``.

Everything but :func:`iou_matrix` is stdlib only: the Ground Truth Lambdas import this module and their
asset ships without numpy.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    FloatArray = NDArray[np.float64]

MIN_OKS_AREA = 32.0 * 32.0
_AREA_EPS = sys.float_info.epsilon  # numpy's spacing(1), as pycocotools' COCOeval.computeOks adds it


def ltwh_to_xyxy(left: float, top: float, width: float, height: float) -> tuple[float, float, float, float]:
    return (left, top, left + width, top + height)


@dataclass(frozen=True)
class Box:
    """A box as labels store it: left, top, width, height in pixels."""

    left: float
    top: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return ltwh_to_xyxy(self.left, self.top, self.width, self.height)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two xyxy boxes (0 when either is empty)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def iou_matrix(a: FloatArray, b: FloatArray) -> FloatArray:
    """Pairwise IoU of xyxy boxes ``a`` (N, 4) and ``b`` (M, 4) -> (N, M)."""
    import numpy as np  # here only: the rest of the module must load where numpy is absent (the Lambdas)

    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        out: FloatArray = np.where(union > 0, inter / union, 0.0)
    return out


def match_boxes(a: Sequence[Box], b: Sequence[Box], iou_threshold: float) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching by descending IoU (ties by index, so it is deterministic)."""
    pairs = sorted(
        ((box_iou(x.xyxy, y.xyxy), i, j) for i, x in enumerate(a) for j, y in enumerate(b)),
        key=lambda p: (-p[0], p[1], p[2]),
    )
    used_a: set[int] = set()
    used_b: set[int] = set()
    out = []
    for iou, i, j in pairs:
        if iou < iou_threshold:
            break
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        out.append((i, j, iou))
    return out


def box_agreement(a: Sequence[Box], b: Sequence[Box], iou_threshold: float = 0.5) -> float:
    """IoU-weighted F1 of two box sets: 1 when identical, 0 when nothing matches; both empty -> 1."""
    if not a and not b:
        return 1.0
    matches = match_boxes(a, b, iou_threshold)
    return 2.0 * sum(m[2] for m in matches) / (len(a) + len(b))


def point_similarity(dx: float, dy: float, area: float, sigma: float) -> float:
    """COCO's per-keypoint similarity ``exp(-d^2 / (2 s^2 k^2))`` with ``s^2`` the area, ``k = 2 sigma``."""
    return math.exp(-(dx * dx + dy * dy) / ((2.0 * sigma) ** 2) / (area + _AREA_EPS) / 2.0)


def oks(gt_xy: Sequence[Sequence[float]], gt_v: Sequence[int], pred_xy: Sequence[Sequence[float]], area: float,
        sigmas: Sequence[float]) -> float:
    """COCO object keypoint similarity of one prediction against one ground truth.

    ``gt_xy``/``pred_xy`` are K points ``(x, y)``, ``gt_v`` K visibilities (lists or numpy arrays). Only
    labeled ground-truth points (v > 0) count; with none labeled the OKS is 0 (COCO then ignores the
    object, which its callers decide).
    """
    sims = [point_similarity(float(p[0]) - float(g[0]), float(p[1]) - float(g[1]), area, float(s))
            for g, v, p, s in zip(gt_xy, gt_v, pred_xy, sigmas, strict=True) if v > 0]
    return sum(sims) / len(sims) if sims else 0.0


def keypoint_area(points: Iterable[tuple[float, float, int]], floor_box: Box | None = None) -> float:
    """The object scale for OKS: the box around the labeled points (and the head box), at least 32x32."""
    labeled = [p for p in points if p[2] > 0]
    xs = [p[0] for p in labeled]
    ys = [p[1] for p in labeled]
    if floor_box is not None:
        xs += [floor_box.left, floor_box.right]
        ys += [floor_box.top, floor_box.bottom]
    if not xs:
        return MIN_OKS_AREA
    return max(MIN_OKS_AREA, (max(xs) - min(xs)) * (max(ys) - min(ys)))
