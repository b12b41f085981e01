"""The label-savings bench's baseline router and its scoring of auto-labels (pure functions + one adapter).

Strategy (a) is the pipeline itself: the judgement function routes each image. Strategy (b) spends the
same per-round human budget on *randomly chosen* images and auto-labels the rest with the same model's
predictions. It is swapped in after the labeling pipeline's Infer step by rewriting that step's outputs
(``auto.jsonl``, ``human.jsonl``, ``audit_model.jsonl``, ``summary.json``); the Label and Merge steps then
run unchanged, so both strategies share the workforce, merge, training and metrics code.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from alp import storage
from alp.geometry import box_iou, oks
from alp.manifest import (
    PREANNOTATION_KEY,
    ROUTE_KEY,
    BoundingBoxLabel,
    BoxAnnotation,
    BoxMetadata,
    KeypointLabel,
    KeypointMetadata,
    ManifestLine,
    ObjectConfidence,
    PersonKeypoints,
    PreAnnotation,
    RouteInfo,
    ScoredBox,
    read_manifest,
)
from alp.schema import KeypointSchema
from alp.settings import Settings

RANDOM_REASON = "random_selection: baseline strategy of the label-savings bench"


def auto_to_human(line: ManifestLine, settings: Settings) -> ManifestLine:
    """An auto-labeled line turned into a human task pre-drawn with the model's labels."""
    head, kp = settings.labeling.head_label_attribute, settings.labeling.keypoint_label_attribute
    route = line.route()
    boxes = line.boxes(head)
    kps = line.keypoints(kp)
    scored: list[ScoredBox] = []
    size = None
    if boxes is not None:
        label, meta = boxes
        size = label.size
        confs = [o.confidence for o in meta.objects] + [0.0] * len(label.annotations)
        scored = [ScoredBox(left=a.left, top=a.top, width=a.width, height=a.height, score=confs[i])
                  for i, a in enumerate(label.annotations)]
    pre = PreAnnotation(route="human", reason=RANDOM_REASON, image_size=size, boxes=scored,
                        persons=kps[0].persons if kps is not None else [],
                        bundle_id=route.bundle_id if route else None)
    out = line.without(*settings.labeling.label_keys).with_model(PREANNOTATION_KEY, pre)
    return out.with_model(ROUTE_KEY, RouteInfo(route="human", reason=RANDOM_REASON,
                                               score=route.score if route else None,
                                               bundle_id=route.bundle_id if route else None))


def human_to_auto(line: ManifestLine, settings: Settings) -> ManifestLine:
    """A human/audit line auto-labeled with the model's proposal it carries (what the model would write)."""
    pre = line.preannotation()
    if pre is None or pre.image_size is None:
        raise ValueError(f"{line.source_ref}: no pre-annotation with an image size to auto-label from")
    route = line.route()
    job = f"auto-{pre.bundle_id or 'model'}"
    box_label = BoundingBoxLabel(image_size=[pre.image_size], annotations=[
        BoxAnnotation(left=b.left, top=b.top, width=b.width, height=b.height) for b in pre.boxes])
    box_meta = BoxMetadata(objects=[ObjectConfidence(confidence=b.score) for b in pre.boxes],
                           human_annotated="no", job_name=job)
    kp_label = KeypointLabel(image_size=[pre.image_size], keypoint_schema=settings.schema_.name, persons=pre.persons)
    kp_meta = KeypointMetadata(human_annotated="no", job_name=job)
    out = line.without(PREANNOTATION_KEY)
    out = out.with_boxes(settings.labeling.head_label_attribute, box_label, box_meta)
    out = out.with_keypoints(settings.labeling.keypoint_label_attribute, kp_label, kp_meta)
    return out.with_model(ROUTE_KEY, RouteInfo(route="auto", reason="random_selection: not drawn for people",
                                               score=route.score if route else None,
                                               bundle_id=pre.bundle_id))


@dataclass(frozen=True)
class RandomRouting:
    auto: list[ManifestLine]
    human: list[ManifestLine]


def route_randomly(auto: Sequence[ManifestLine], human: Sequence[ManifestLine], budget: int, rng: random.Random,
                   settings: Settings) -> RandomRouting:
    """``budget`` images drawn at random for people, the rest auto-labeled; input order is kept.

    Lines routed to people without a model proposal (cold start, model errors) cannot be auto-labeled, so
    they stay with people and count against the budget.
    """
    pool = [*(("auto", i) for i in range(len(auto))), *(("human", i) for i in range(len(human)))]
    forced = {("human", i) for i, line in enumerate(human)
              if (pre := line.preannotation()) is None or pre.image_size is None}
    free = [p for p in pool if p not in forced]
    k = max(0, min(budget - len(forced), len(free)))
    chosen = forced | set(rng.sample(free, k))
    new_auto: list[ManifestLine] = []
    new_human: list[ManifestLine] = []
    for kind, i in pool:
        line = auto[i] if kind == "auto" else human[i]
        if (kind, i) in chosen:
            new_human.append(auto_to_human(line, settings) if kind == "auto" else line.with_model(
                ROUTE_KEY, RouteInfo(route="human", reason=RANDOM_REASON,
                                     score=(r.score if (r := line.route()) else None))))
        else:
            new_auto.append(line if kind == "auto" else human_to_auto(line, settings))
    return RandomRouting(new_auto, new_human)


def reroute_batch_randomly(inference_dir: str, budget: int, seed: int, settings: Settings) -> dict[str, int]:
    """Rewrite the Infer step's outputs in ``inference_dir`` with :func:`route_randomly`; returns the counts."""
    from alp.manifest import dumps_lines

    def read(name: str) -> list[ManifestLine]:
        uri = storage.join(inference_dir, name)
        return read_manifest(uri) if storage.exists(uri) else []

    auto, human, quarantine = read("auto.jsonl"), read("human.jsonl"), read("quarantine.jsonl")
    routed = route_randomly(auto, human, budget, random.Random(seed), settings)
    storage.write_text(storage.join(inference_dir, "auto.jsonl"), dumps_lines(routed.auto))
    storage.write_text(storage.join(inference_dir, "human.jsonl"), dumps_lines(routed.human))
    storage.write_text(storage.join(inference_dir, "audit_model.jsonl"), "")
    counts = {"auto": len(routed.auto), "human": len(routed.human), "audit": 0, "quarantine": len(quarantine)}
    summary_uri = storage.join(inference_dir, "summary.json")
    if storage.exists(summary_uri):
        summary = json.loads(storage.read_text(summary_uri))
        summary["routes"] = counts
        summary["human_reasons"] = {"random_selection": counts["human"]}
        summary["strategy"] = "random"
        storage.write_text(summary_uri, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return counts


# --- auto-label precision ----------------------------------------------------------------------------
def auto_label_matches(pred: ManifestLine, truth: ManifestLine, settings: Settings, *,
                       iou_min: float = 0.5, oks_min: float = 0.5) -> bool:
    """True when the auto-label matches the truth: every head box pairs one-to-one at IoU >= ``iou_min``
    and every person pairs one-to-one at OKS >= ``oks_min`` (no missed and no extra objects)."""
    head, kp = settings.labeling.head_label_attribute, settings.labeling.keypoint_label_attribute
    tb, pb = truth.boxes(head), pred.boxes(head)
    tk, pk = truth.keypoints(kp), pred.keypoints(kp)
    t_boxes = [a.xyxy for a in tb[0].annotations] if tb else []
    p_boxes = [a.xyxy for a in pb[0].annotations] if pb else []
    if not _one_to_one(t_boxes, p_boxes, lambda t, p: box_iou(t, p), iou_min):
        return False
    t_persons = tk[0].persons if tk else []
    p_persons = pk[0].persons if pk else []
    schema = settings.schema_
    return _one_to_one(t_persons, p_persons, lambda t, p: _person_oks(t, p, schema), oks_min)


def _person_oks(truth: PersonKeypoints, pred: PersonKeypoints, schema: KeypointSchema) -> float:
    gt_xy = np.array([[k.x, k.y] for k in truth.keypoints], dtype=np.float64)
    gt_v = np.array([k.v for k in truth.keypoints], dtype=np.int64)
    pr_xy = np.array([[k.x, k.y] for k in pred.keypoints], dtype=np.float64)
    if truth.bbox is not None:
        area = truth.bbox[2] * truth.bbox[3]
    else:
        vis = gt_xy[gt_v > 0]
        area = float(np.ptp(vis[:, 0]) * np.ptp(vis[:, 1])) if len(vis) else 0.0
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
