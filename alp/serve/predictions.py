"""Engine output -> Label Studio results (the shapes :mod:`alp.labeling.label_studio` imports) and our own JSON.

Label Studio results are in percent of the image with ``original_width``/``original_height``: head boxes as
``rectanglelabels`` of the heads control; per person the person box (``rectanglelabels`` of the person control),
each point the model places (visible or occluded, inside the image) as a ``keypointlabels`` region, and for an
occluded point a ``choices`` region of the visibility control with the same region id (Label Studio ties a
per-region choice to its region by id). A point outside the view is left unplaced, as the keypoint task asks.
Names come from the project's labeling config, not from ours, so a renamed control still gets its regions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from alp.geometry import iou_matrix
from alp.schema import V_OCCLUDED, V_OUTSIDE
from alp.serve.protocol import OCCLUDED, LabelConfig
from alp.settings import JudgementSettings
from inference.engine import ImagePrediction, PersonPrediction
from inference.judgement import RouteDecision, route_image

POINT_WIDTH = 0.6  # a keypoint region's drawn size, percent of the image width (as the imported tasks draw it)
Visibility = Literal["visible", "occluded", "outside"]
VISIBILITY: dict[int, Visibility] = {0: "outside", 1: "occluded", 2: "visible"}
Box = tuple[float, float, float, float]  # xyxy pixels


def _pct(value: float, whole: int) -> float:
    return round(100.0 * float(value) / whole, 4)


def _box_value(box: Sequence[float], w: int, h: int) -> dict[str, float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = max(0.0, min(x1, w)), max(0.0, min(x2, w))
    y1, y2 = max(0.0, min(y1, h)), max(0.0, min(y2, h))
    return {"x": _pct(x1, w), "y": _pct(y1, h), "width": _pct(x2 - x1, w), "height": _pct(y2 - y1, h),
            "rotation": 0}


def _region(region_id: str, from_name: str, to_name: str, kind: str, w: int, h: int,
            value: dict[str, Any], score: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": region_id, "from_name": from_name, "to_name": to_name, "type": kind,
                           "original_width": w, "original_height": h, "image_rotation": 0, "value": value}
    if score is not None:
        out["score"] = round(float(score), 4)
    return out


def head_results(pred: ImagePrediction, config: LabelConfig) -> list[dict[str, Any]]:
    heads = config.heads
    if heads is None:
        return []
    w, h = pred.width, pred.height
    return [_region(f"head-{i}", heads.name, heads.to_name, "rectanglelabels", w, h,
                    {**_box_value(box, w, h), "rectanglelabels": [heads.label]}, score)
            for i, (box, score) in enumerate(zip(pred.head_boxes, pred.head_scores, strict=True))]


def keypoint_results(person: PersonPrediction, index: int, config: LabelConfig, keypoint_names: Sequence[str],
                     width: int, height: int, *, with_box: bool = True, prefix: str = "p") -> list[dict[str, Any]]:
    """One person's regions: its box (``with_box``), its placed points and their occluded choices; region ids
    start with ``prefix`` and the person's index."""
    controls = config.keypoints
    if controls is None:
        return []
    out: list[dict[str, Any]] = []
    if with_box and controls.person is not None:
        p = controls.person
        out.append(_region(f"person-{index}", p.name, p.to_name, "rectanglelabels", width, height,
                           {**_box_value(person.box, width, height), "rectanglelabels": [p.label]}, person.score))
    wanted = set(controls.labels) if controls.labels else set(keypoint_names)
    for k, name in enumerate(keypoint_names):
        v = int(person.visibility[k])
        known = person.keypoint_known is None or bool(person.keypoint_known[k])
        x, y = float(person.keypoints_xy[k, 0]), float(person.keypoints_xy[k, 1])
        if name not in wanted or not known or v == V_OUTSIDE or not (0 <= x <= width and 0 <= y <= height):
            continue
        region_id = f"{prefix}{index}-{name}"
        value = {"x": _pct(x, width), "y": _pct(y, height), "width": POINT_WIDTH}
        out.append(_region(region_id, controls.name, controls.to_name, "keypointlabels", width, height,
                           {**value, "keypointlabels": [name]}, float(person.keypoint_conf[k])))
        if v == V_OCCLUDED and controls.visibility is not None:
            out.append(_region(region_id, controls.visibility, controls.to_name, "choices", width, height,
                               {**value, "choices": [OCCLUDED]}))
    return out


def studio_results(pred: ImagePrediction, config: LabelConfig, keypoint_names: Sequence[str],
                   persons: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """The whole image's regions for ``config``; ``persons`` limits the keypoints to those persons."""
    chosen = range(len(pred.persons)) if persons is None else persons
    out = head_results(pred, config)
    for i in chosen:
        out += keypoint_results(pred.persons[i], i, config, keypoint_names, pred.width, pred.height)
    return out


def best_person(pred: ImagePrediction, box: Box, *, by: Literal["person", "head"] = "person",
                min_overlap: float = 0.05) -> int | None:
    """The person ``box`` outlines: the best IoU with a person box or its head box (``by="person"``), or with its
    head box only (``by="head"``); None when nothing overlaps at least ``min_overlap``."""
    if not pred.persons:
        return None
    target = np.asarray([box], dtype=np.float64)
    bodies = np.asarray([p.box for p in pred.persons], dtype=np.float64)
    scores = np.zeros(len(pred.persons)) if by == "head" else iou_matrix(bodies, target)[:, 0]
    for i, p in enumerate(pred.persons):
        if p.head_box_index is not None and p.head_box_index < len(pred.head_boxes):
            head = np.asarray([pred.head_boxes[p.head_box_index]], dtype=np.float64)
            scores[i] = max(scores[i], float(iou_matrix(head, target)[0, 0]))
    best = int(np.argmax(scores))
    return best if scores[best] >= min_overlap else None


def judge(pred: ImagePrediction, key: str, keypoint_names: Sequence[str], settings: JudgementSettings) -> RouteDecision:
    """The judgement's decision on this prediction (its score is what Label Studio shows as the prediction score)."""
    return route_image(key, pred.evidence(keypoint_names), settings)


def rounded(score: float | None) -> float | None:
    return None if score is None else round(float(score), 6)


# --- our own JSON (POST /v1/predict) ------------------------------------------------------------------------------

class ApiKeypoint(BaseModel):
    name: str
    x: float | None  # None: outside the view (or a point the model does not give)
    y: float | None
    visibility: Visibility
    score: float | None
    score_visible: float | None


class ApiHead(BaseModel):
    box: list[float]  # x1, y1, x2, y2 pixels
    score: float


class ApiPerson(BaseModel):
    box: list[float]
    score: float
    head: int | None  # index into heads
    keypoints: list[ApiKeypoint]


class ApiPrediction(BaseModel):
    """``POST /v1/predict``'s answer."""

    bundle_id: str
    width: int
    height: int
    route: str
    reason: str
    score: float | None
    heads: list[ApiHead]
    persons: list[ApiPerson]


def _r(value: float) -> float:
    return round(float(value), 2)


def api_prediction(pred: ImagePrediction, decision: RouteDecision, bundle_id: str,
                   keypoint_names: Sequence[str]) -> ApiPrediction:
    persons = []
    for p in pred.persons:
        points = []
        for k, name in enumerate(keypoint_names):
            known = p.keypoint_known is None or bool(p.keypoint_known[k])
            v = int(p.visibility[k]) if known else V_OUTSIDE
            placed = v != V_OUTSIDE
            vis = p.keypoint_conf_visible
            points.append(ApiKeypoint(
                name=name, x=_r(p.keypoints_xy[k, 0]) if placed else None, y=_r(p.keypoints_xy[k, 1]) if placed else None,
                visibility=VISIBILITY[v],
                score=round(float(p.keypoint_conf[k]), 4) if known else None,
                score_visible=round(float(vis[k]), 4) if known and vis is not None else None))
        persons.append(ApiPerson(box=[_r(v) for v in p.box], score=round(p.score, 4), head=p.head_box_index,
                                 keypoints=points))
    heads = [ApiHead(box=[_r(v) for v in b], score=round(float(s), 4))
             for b, s in zip(pred.head_boxes, pred.head_scores, strict=True)]
    return ApiPrediction(bundle_id=bundle_id, width=pred.width, height=pred.height, route=decision.route,
                         reason=decision.reason, score=rounded(decision.score), heads=heads, persons=persons)
