"""Geometry shared by metrics, consolidation, matching and judgement: IoU and OKS.

Boxes are ``(x1, y1, x2, y2)`` in pixels unless a name says otherwise. OKS follows COCO's definition:
``exp(-d^2 / (2 * s^2 * k^2))`` averaged over the ground truth's labeled points (v > 0), with
``s^2`` the object's area and ``k = 2 * sigma``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def ltwh_to_xyxy(left: float, top: float, width: float, height: float) -> tuple[float, float, float, float]:
    return (left, top, left + width, top + height)


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
        out = np.where(union > 0, inter / union, 0.0)
    return out


def oks(gt_xy: FloatArray, gt_v: NDArray[np.int_], pred_xy: FloatArray, area: float,
        sigmas: Sequence[float]) -> float:
    """COCO object keypoint similarity of one prediction against one ground truth.

    ``gt_xy``/``pred_xy`` are (K, 2), ``gt_v`` (K,). Only labeled ground-truth points (v > 0) count; with
    none labeled the OKS is 0 (COCO then ignores the object, which its callers decide).
    """
    gt_xy = np.asarray(gt_xy, dtype=np.float64)
    pred_xy = np.asarray(pred_xy, dtype=np.float64)
    labeled = np.asarray(gt_v) > 0
    if not labeled.any():
        return 0.0
    variances = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2
    d2 = np.sum((gt_xy - pred_xy) ** 2, axis=1)
    e = d2 / variances / (area + np.spacing(1)) / 2.0  # exactly pycocotools' COCOeval.computeOks
    return float(np.mean(np.exp(-e[labeled])))
