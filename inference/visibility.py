"""Dual-model keypoints: three-state visibility, matching the two models' persons, tying heads to persons.

The main pose model learned every labeled point (visible and occluded); the additional model learned
visible points only. For each keypoint (the seed's rule, thresholds from settings):

* main conf > main threshold and additional conf > additional threshold -> visible (v=2);
* main conf > main threshold and additional conf <= additional threshold -> occluded (v=1);
* otherwise -> outside the camera view (v=0).

All functions here are pure and work on numpy arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from alp.geometry import iou_matrix
from alp.schema import V_OCCLUDED, V_OUTSIDE, V_VISIBLE

# A visibility threshold: one for every keypoint (the settings), or one per keypoint (fitted, in bundle.json).
Threshold = float | tuple[float, ...]


def threshold_at(threshold: Threshold, k: int) -> float:
    """Keypoint ``k``'s threshold."""
    return threshold[k] if isinstance(threshold, tuple) else threshold


# Keypoints that sit inside a head box; names follow both shipped schemas.
HEAD_KEYPOINT_WORDS = ("eye", "ear", "nose", "mouth")
# A head box belongs to a person only if most of it lies inside the person's box.
MIN_HEAD_INSIDE_PERSON = 0.5


def classify_visibility(main_conf: NDArray[np.floating] | Sequence[float],
                        visible_conf: NDArray[np.floating] | Sequence[float],
                        main_threshold: Threshold, additional_threshold: Threshold) -> NDArray[np.int64]:
    """COCO visibility codes (0 outside, 1 occluded, 2 visible) per keypoint, element-wise (per-keypoint
    thresholds apply along the last axis)."""
    main = np.asarray(main_conf, dtype=np.float64)
    vis = np.asarray(visible_conf, dtype=np.float64)
    if main.shape != vis.shape:
        raise ValueError(f"confidence arrays differ in shape: {main.shape} vs {vis.shape}")
    in_view = main > np.asarray(main_threshold, dtype=np.float64)
    visible = vis > np.asarray(additional_threshold, dtype=np.float64)
    return np.where(in_view, np.where(visible, V_VISIBLE, V_OCCLUDED), V_OUTSIDE).astype(np.int64)


def match_persons(main_boxes: NDArray[np.floating], visible_boxes: NDArray[np.floating],
                  min_iou: float) -> list[int | None]:
    """For each main-model person, the index of its visible-model counterpart (or None).

    Greedy one-to-one matching by box IoU, best pairs first (ties broken by index, so the result is
    deterministic); pairs below ``min_iou`` stay unmatched.
    """
    ious = iou_matrix(np.asarray(main_boxes, dtype=np.float64), np.asarray(visible_boxes, dtype=np.float64))
    result: list[int | None] = [None] * ious.shape[0]
    if ious.size == 0:
        return result
    pairs = sorted((-float(ious[i, j]), i, j) for i in range(ious.shape[0]) for j in range(ious.shape[1])
                    if ious[i, j] >= min_iou and ious[i, j] > 0)
    used_main: set[int] = set()
    used_vis: set[int] = set()
    for _, i, j in pairs:
        if i in used_main or j in used_vis:
            continue
        result[i] = j
        used_main.add(i)
        used_vis.add(j)
    return result


def head_keypoint_indexes(names: Sequence[str]) -> list[int]:
    return [i for i, n in enumerate(names) if any(w in n for w in HEAD_KEYPOINT_WORDS)]


def assign_heads(person_boxes: NDArray[np.floating], person_keypoints: NDArray[np.floating],
                 head_boxes: NDArray[np.floating], keypoint_names: Sequence[str],
                 main_threshold: Threshold) -> list[int | None]:
    """Tie each person to at most one head box and each head box to at most one person.

    A head qualifies for a person when at least half of the head box lies inside the person box. Among
    qualifying pairs, the cost is the distance from the head box centre to the person's confident face
    keypoints (their mean), or to the top-centre of the person box when none is confident; pairs are
    taken cheapest first.

    Args:
        person_boxes: (P, 4) xyxy.
        person_keypoints: (P, K, 3) x, y, main confidence.
        head_boxes: (H, 4) xyxy.
    """
    persons = np.asarray(person_boxes, dtype=np.float64).reshape(-1, 4)
    heads = np.asarray(head_boxes, dtype=np.float64).reshape(-1, 4)
    kpts = np.asarray(person_keypoints, dtype=np.float64)
    result: list[int | None] = [None] * len(persons)
    if len(persons) == 0 or len(heads) == 0:
        return result
    face = head_keypoint_indexes(keypoint_names)
    head_area = np.clip(heads[:, 2] - heads[:, 0], 0, None) * np.clip(heads[:, 3] - heads[:, 1], 0, None)
    head_centre = np.stack([(heads[:, 0] + heads[:, 2]) / 2, (heads[:, 1] + heads[:, 3]) / 2], axis=1)
    candidates: list[tuple[float, int, int]] = []
    for p, box in enumerate(persons):
        iw = np.clip(np.minimum(box[2], heads[:, 2]) - np.maximum(box[0], heads[:, 0]), 0, None)
        ih = np.clip(np.minimum(box[3], heads[:, 3]) - np.maximum(box[1], heads[:, 1]), 0, None)
        inside = np.where(head_area > 0, iw * ih / np.maximum(head_area, 1e-12), 0.0)
        confident = [k for k in face if kpts.shape[0] > p and kpts[p, k, 2] > threshold_at(main_threshold, k)]
        if confident:
            anchor = kpts[p, confident, :2].mean(axis=0)
        else:
            anchor = np.array([(box[0] + box[2]) / 2, box[1]])
        dist = np.linalg.norm(head_centre - anchor, axis=1)
        for head in np.flatnonzero(inside >= MIN_HEAD_INSIDE_PERSON):
            candidates.append((float(dist[head]), int(p), int(head)))
    used_heads: set[int] = set()
    for _, p, h in sorted(candidates):
        if result[p] is None and h not in used_heads:
            result[p] = h
            used_heads.add(h)
    return result
