"""Does a model's proposal agree with a label? The one definition the audits, the bench and the demo use.

A proposal agrees when every head box pairs one-to-one with the label's at IoU >= 0.5 and every person pairs
one-to-one at OKS >= 0.5: no missed and no extra object.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from alp.geometry import box_iou, oks
from alp.manifest import ManifestLine, PersonKeypoints
from alp.schema import KeypointSchema
from alp.settings import Settings


def auto_label_matches(pred: ManifestLine, truth: ManifestLine, settings: Settings, *,
                       iou_min: float = 0.5, oks_min: float = 0.5) -> bool:
    """True when the auto-label matches the truth: every head box pairs one-to-one at IoU >= ``iou_min``
    and every person pairs one-to-one at OKS >= ``oks_min`` (no missed and no extra objects)."""
    head, kp = settings.labeling.head_label_attribute, settings.labeling.keypoint_label_attribute
    tb, pb = truth.boxes(head), pred.boxes(head)
    tk, pk = truth.keypoints(kp), pred.keypoints(kp)
    t_boxes = [a.xyxy for a in tb[0].annotations] if tb else []
    p_boxes = [a.xyxy for a in pb[0].annotations] if pb else []
    if not boxes_match(t_boxes, p_boxes, iou_min):
        return False
    t_persons = tk[0].persons if tk else []
    p_persons = pk[0].persons if pk else []
    schema = settings.schema_
    return _one_to_one(t_persons, p_persons, lambda t, p: _person_oks(t, p, schema), oks_min)


Xyxy = tuple[float, float, float, float]


def boxes_match(truth: Sequence[Xyxy], pred: Sequence[Xyxy], iou_min: float = 0.5) -> bool:
    """The head-box part agrees: the boxes pair one-to-one at IoU >= ``iou_min``."""
    return _one_to_one(truth, pred, lambda t, p: box_iou(t, p), iou_min)


def person_found(truth: Sequence[PersonKeypoints], pred: PersonKeypoints, schema: KeypointSchema,
                 oks_min: float = 0.5) -> bool:
    """One person's part agrees: some person of the label lies within OKS >= ``oks_min`` of the proposal."""
    return any(_person_oks(t, pred, schema) >= oks_min for t in truth)


def _person_oks(truth: PersonKeypoints, pred: PersonKeypoints, schema: KeypointSchema) -> float:
    gt_xy = [(k.x, k.y) for k in truth.keypoints]
    gt_v = [k.v for k in truth.keypoints]
    pr_xy = [(k.x, k.y) for k in pred.keypoints]
    if truth.bbox is not None:
        area = truth.bbox[2] * truth.bbox[3]
    else:
        labeled = [xy for xy, v in zip(gt_xy, gt_v, strict=True) if v > 0]
        area = ((max(x for x, _ in labeled) - min(x for x, _ in labeled))
                * (max(y for _, y in labeled) - min(y for _, y in labeled))) if labeled else 0.0
    return oks(gt_xy, gt_v, pr_xy, max(area, 1.0), schema.sigmas)


def _one_to_one(truth: Sequence[Any], pred: Sequence[Any], score: Callable[[Any, Any], float],
                threshold: float) -> bool:
    """Greedy one-to-one matching by descending score; True when every item on both sides is matched."""
    if len(truth) != len(pred):
        return False
    pairs = sorted(((score(t, p), i, j) for i, t in enumerate(truth) for j, p in enumerate(pred)), reverse=True)
    used_t: set[int] = set()
    used_p: set[int] = set()
    for s, i, j in pairs:
        if s < threshold:
            break
        if i not in used_t and j not in used_p:
            used_t.add(i)
            used_p.add(j)
    return len(used_t) == len(truth)
