"""A zero-shot bundle's output as the schema's labels: keypoints mapped by name, head boxes from faces.

A zero-shot bundle (:mod:`training.zero_shot`) runs one pretrained COCO-pose model. Its 17 points become the
bundle's schema by name (:func:`map_keypoints`), and since it has no head detector each person's head box is
derived from the person's face keypoints (:func:`heads_from_faces`). Pure numpy; the engine calls both once per
image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]

# Target points COCO lacks but that follow from two of its points: the midpoint, as confident as the less
# confident of the two (a neck is where the shoulders say it is only if both are where the model says).
DERIVED_MIDPOINTS: dict[str, tuple[str, str]] = {"neck": ("left_shoulder", "right_shoulder")}


def known_keypoints(source_names: Sequence[str], target_names: Sequence[str]) -> NDArray[np.bool_]:
    """Which target points the source model gives (copied or derived); the others (``mouth`` from COCO) are left
    to people: :func:`map_keypoints` gives them confidence 0, and the prefill leaves them unplaced."""
    source = set(source_names)
    return np.array([n in source or (n in DERIVED_MIDPOINTS and set(DERIVED_MIDPOINTS[n]) <= source)
                     for n in target_names], dtype=bool)


def map_keypoints(kp: NDArray[np.floating], source_names: Sequence[str],
                  target_names: Sequence[str]) -> F64:
    """``(N, Ks, 3)`` keypoints (x, y, confidence) in ``source_names``' order -> ``(N, Kt, 3)`` in
    ``target_names``' order.

    A name present in both is copied; a derived point (:data:`DERIVED_MIDPOINTS`: ``neck``) is the midpoint of its
    two source points with the smaller of their confidences; any other target point is (0, 0) with confidence 0.
    With the same names in both (``coco17`` from COCO) the map is the identity.
    """
    src = np.asarray(kp, dtype=np.float64)
    if src.ndim != 3 or src.shape[1] != len(source_names) or src.shape[2] != 3:
        raise ValueError(f"expected (N, {len(source_names)}, 3) keypoints, got {src.shape}")
    index = {n: i for i, n in enumerate(source_names)}
    out = np.zeros((src.shape[0], len(target_names), 3), dtype=np.float64)
    for t, name in enumerate(target_names):
        if name in index:
            out[:, t] = src[:, index[name]]
        elif name in DERIVED_MIDPOINTS and all(p in index for p in DERIVED_MIDPOINTS[name]):
            a, b = (src[:, index[p]] for p in DERIVED_MIDPOINTS[name])
            out[:, t, :2] = (a[:, :2] + b[:, :2]) / 2.0
            out[:, t, 2] = np.minimum(a[:, 2], b[:, 2])
    return out


# --- head boxes from face keypoints ------------------------------------------------------------------------
#
# The rule. Each named point has a place on a typical adult head and shoulders (cm; x towards the person's left,
# y down, z forward, origin midway between the ears; rounded anthropometric means: pupils 6.4 cm apart, ears
# 15 cm, the eyes 8.5 cm in front of the ears, the nose tip 4.5 cm below the eyes, shoulders 39 cm apart and
# 18 cm below the ears). A projection only shortens distances, so every pair of confident points bounds the
# image scale (pixels per cm) from below by their distance in pixels over their distance on the typical head;
# the scale is the largest bound: the pair least foreshortened by the head's turn (ears for a frontal face, eye
# and ear in profile). Shoulders only help size the head (a face cut by the frame edge has its points bunched);
# the head itself needs two confident face points. The box is a typical head (HEAD_WIDTH_CM x HEAD_HEIGHT_CM)
# at that scale, centred between the ears when both are seen (the head's axis), else on the face points, at eye
# height (the eyes sit halfway between the crown and the chin), grown to hold every confident face point with a
# margin, and clipped to the image.
TYPICAL_POINTS_CM: dict[str, tuple[float, float, float]] = {
    "nose": (0.0, 3.0, 11.0),
    "left_eye": (3.2, -1.5, 8.5),
    "right_eye": (-3.2, -1.5, 8.5),
    "left_ear": (7.5, 0.0, 0.0),
    "right_ear": (-7.5, 0.0, 0.0),
    "left_shoulder": (19.5, 18.0, -2.0),
    "right_shoulder": (-19.5, 18.0, -2.0),
}
FACE_POINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear")
EYES = ("left_eye", "right_eye")
EARS = ("left_ear", "right_ear")
HEAD_WIDTH_CM = 17.0  # head breadth (15 cm) and hair
HEAD_HEIGHT_CM = 23.0  # crown to chin
FACE_MARGIN_CM = 1.0  # room beyond the outermost face point: an ear point sits 1 cm inside the typical head's side
# Face points counted as evidence of a head. COCO-pose confidences say "annotatable here" (in the frame, visible or
# occluded), and a face cut by the frame edge or turned away scores low: measured on bus.jpg, the man cut by the
# right edge has face points at 0.13-0.24 and the person whose head is out of the frame at most 0.10. Low on
# purpose: zero-shot proposals always go to people, who delete a wrong head box faster than they draw a missing
# one, and a person's keypoint proposal reaches its task only through the person's head box.
FACE_MIN_CONF = 0.15


@dataclass(frozen=True)
class FaceHeads:
    """Head boxes derived from faces: boxes ``(H, 4)`` xyxy in image pixels, scores ``(H,)``, and the person
    (row of the keypoints) each head belongs to ``(H,)``; at most one head per person, in person order."""

    boxes: F64
    scores: F64
    person: NDArray[np.int64]

    def head_of(self, persons: int) -> list[int | None]:
        """For each of ``persons`` persons, the index of its head box (None: no head derived)."""
        out: list[int | None] = [None] * persons
        for h, p in enumerate(self.person):
            out[int(p)] = h
        return out


MIN_HEAD_PX = 1.0  # a head narrower than a pixel is no head to label: its points sit (nearly) at one spot


def _scale(points: dict[str, NDArray[np.float64]]) -> float:
    """Pixels per cm: the largest lower bound any pair of the given points sets (see the rule above)."""
    names = sorted(points)
    best = 0.0
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            typical = float(np.linalg.norm(np.subtract(TYPICAL_POINTS_CM[a], TYPICAL_POINTS_CM[b])))
            best = max(best, float(np.linalg.norm(points[a] - points[b])) / typical)
    return best


def head_from_face(kp: NDArray[np.floating], names: Sequence[str], width: int, height: int, *,
                   min_conf: float = FACE_MIN_CONF) -> tuple[tuple[float, float, float, float], float] | None:
    """One person's head box (xyxy, clipped to the ``width`` x ``height`` image) and its score (the mean
    confidence of the face points it was built from), or None when fewer than two face points reach ``min_conf``
    or they give no size (a head under ``MIN_HEAD_PX`` wide: the points (nearly) at one spot)."""
    arr = np.asarray(kp, dtype=np.float64)
    index = {n: i for i, n in enumerate(names)}
    # the decoder clips points to the image already; clip again so the box provably holds what it was built from
    limit = np.array([float(width), float(height)])

    def confident(group: Sequence[str]) -> dict[str, NDArray[np.float64]]:
        return {n: np.clip(arr[index[n], :2], 0.0, limit) for n in group
                if n in index and np.isfinite(arr[index[n]]).all() and arr[index[n], 2] >= min_conf}

    face = confident(FACE_POINTS)
    if len(face) < 2:
        return None
    scale = _scale({**face, **confident(("left_shoulder", "right_shoulder"))})
    if HEAD_WIDTH_CM * scale < MIN_HEAD_PX:  # the points (nearly) at one spot: no size to build a head from
        return None
    xy = np.stack(list(face.values()))
    if all(e in face for e in EARS):
        cx = (face["left_ear"][0] + face["right_ear"][0]) / 2.0
    else:
        cx = (xy[:, 0].min() + xy[:, 0].max()) / 2.0
    # at eye height; two face points include an eye or an ear, and the ears sit 1.5 cm below the eyes
    eyes = [face[e][1] for e in EYES if e in face]
    cy = float(np.mean(eyes)) if eyes else float(np.mean([face[e][1] for e in EARS if e in face])) - 1.5 * scale
    half_w, half_h, margin = HEAD_WIDTH_CM * scale / 2.0, HEAD_HEIGHT_CM * scale / 2.0, FACE_MARGIN_CM * scale
    x0 = min(cx - half_w, float(xy[:, 0].min()) - margin)
    x1 = max(cx + half_w, float(xy[:, 0].max()) + margin)
    y0 = min(cy - half_h, float(xy[:, 1].min()) - margin)
    y1 = max(cy + half_h, float(xy[:, 1].max()) + margin)
    box = (max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1))
    if box[2] <= box[0] or box[3] <= box[1]:
        return None
    score = float(np.mean([arr[index[n], 2] for n in face]))
    return box, min(1.0, max(0.0, score))


def heads_from_faces(keypoints: NDArray[np.floating], names: Sequence[str], width: int, height: int, *,
                     min_conf: float = FACE_MIN_CONF) -> FaceHeads:
    """Each person's head box from its face keypoints (:func:`head_from_face`).

    Args:
        keypoints: ``(N, K, 3)`` x, y (image pixels), confidence, in ``names``' order (COCO's for the zero-shot
            bundle: the model's own points, before mapping, so the rule sees every face point it has).
    """
    arr = np.asarray(keypoints, dtype=np.float64)
    boxes: list[tuple[float, float, float, float]] = []
    scores: list[float] = []
    person: list[int] = []
    for p in range(arr.shape[0]):
        found = head_from_face(arr[p], names, width, height, min_conf=min_conf)
        if found is not None:
            boxes.append(found[0])
            scores.append(found[1])
            person.append(p)
    return FaceHeads(boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                     scores=np.asarray(scores, dtype=np.float64), person=np.asarray(person, dtype=np.int64))
