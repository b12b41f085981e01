"""How much of a batch the model labeled, how right it was, and how many seconds people spent: one report per batch.

Read from a batch's outputs once its labeling is complete (the Infer step's ``summary.json`` and route files, the
label step's ``labeled.jsonl``, the bundle's audit outcomes):

* ``auto_share_heads`` / ``auto_share_persons``: of the parts the model proposed (an image's head-box task, each
  person's keypoint task), the share accepted without people;
* ``audit_precision`` / ``audit_precision_low95``: the audited precision of the bundle's auto-accepted parts and the
  lower end of its 95% interval (:mod:`alp.audits`), with every audit of that bundle so far;
* ``auto_precision_truth``: where the truth is known (the demo, the benches), the share of auto-accepted parts that
  match it (head boxes one-to-one at IoU >= 0.5, a person within OKS >= 0.5): what the audits estimate;
* ``human_seconds_ratio``: people's seconds (:mod:`alp.effort`: each action on each part they labeled, against
  the model's proposal they started from) over the seconds to label every image of the batch by hand. Both count
  one worker per task; ``labeling.workers_per_object`` multiplies both alike.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from alp import storage
from alp.agreement import boxes_match, person_found
from alp.audits import bundle_guarantee
from alp.effort import Effort, by_hand_seconds, head_task_seconds, person_task_seconds
from alp.geometry import Box, match_boxes
from alp.manifest import (
    BoxAnnotation,
    ManifestLine,
    PersonKeypoints,
    PreAnnotation,
    ScoredBox,
    auto_share,
    read_manifest_if_present,
)
from alp.settings import Settings

PARTS_KEY = "parts"  # in alp-labeling: {"heads": "people"|"model", "persons": [...]}


class AutomationFigures(BaseModel):
    """A batch's automation, as the demo's rounds and the bench's points carry it: the share of parts the model
    labeled, how right (audits; the truth where known), people's seconds against labeling it all by hand, the
    judgement's thresholds."""

    auto_share_heads: float | None = None
    auto_share_persons: float | None = None
    auto_precision_truth: float | None = None
    auto_precision_truth_heads: float | None = None
    auto_precision_truth_persons: float | None = None
    audit_precision: float | None = None
    audit_precision_low95: float | None = None
    audit_precision_high95: float | None = None
    human_seconds_ratio: float | None = None
    thresholds: dict[str, Any] = Field(default_factory=dict)


class AutomationReport(AutomationFigures):
    """One batch's automation: the figures, and the counts behind them."""

    parts: dict[str, int]
    audits: int
    auto_parts_checked: int
    human_seconds: float
    by_hand_seconds: float


def _share(parts: dict[str, int], kind: str) -> float | None:
    share = auto_share(parts, kind)
    return None if share is None else round(share, 6)


def _sources(line: ManifestLine) -> tuple[bool, list[bool]]:
    """Which parts of a labeled line were the model's: (head boxes, each person)."""
    labeling = line.data.get("alp-labeling")
    parts = labeling.get(PARTS_KEY) if isinstance(labeling, dict) else None
    if not isinstance(parts, dict):
        return False, []
    persons = parts.get("persons")
    return parts.get("heads") == "model", [p == "model" for p in persons] if isinstance(persons, list) else []


def _labels(line: ManifestLine, settings: Settings) -> tuple[list[BoxAnnotation], list[PersonKeypoints]]:
    boxes = line.boxes(settings.labeling.head_label_attribute)
    kps = line.keypoints(settings.labeling.keypoint_label_attribute)
    return (boxes[0].annotations if boxes else []), (kps[0].persons if kps else [])


def _proposed_person(pre: PreAnnotation | None, final_boxes: list[BoxAnnotation], idx: int
                     ) -> tuple[int, PersonKeypoints] | None:
    """The model's person (its index among the proposal's, and the person) behind the final head box ``idx``,
    found through the model's own head boxes, if any."""
    if pre is None or not pre.boxes:
        return None
    pairs = match_boxes([Box(a.left, a.top, a.width, a.height) for a in final_boxes],
                        [Box(b.left, b.top, b.width, b.height) for b in pre.boxes], 0.5)
    model_head = next((j for i, j, _ in pairs if i == idx), None)
    return next(((k, p) for k, p in enumerate(pre.persons) if model_head is not None and p.head_box_index == model_head),
                None)


def labeled_effort(line: ManifestLine, pre: PreAnnotation | None, settings: Settings) -> Effort:
    """People's seconds on the parts of one labeled image they did, and the by-hand seconds of the whole image."""
    boxes, persons = _labels(line, settings)
    model_heads, model_persons = _sources(line)
    e = settings.effort
    seconds = 0.0
    # a blind part (an audit, or a doubtful part drawn for the blind sample) was labeled without the proposal
    proposed_boxes: list[ScoredBox] = pre.boxes if pre is not None and not pre.blind(None) else []
    if not model_heads:
        seconds += head_task_seconds(proposed_boxes, boxes, e)
    for idx, person in enumerate(persons):
        if idx < len(model_persons) and model_persons[idx]:
            continue
        proposed = _proposed_person(pre, boxes, idx)
        if proposed is not None and pre is not None and pre.blind(proposed[0]):
            proposed = None
        seconds += person_task_seconds(proposed[1] if proposed is not None else None, person, e)
    return Effort(human_seconds=seconds, by_hand_seconds=by_hand_seconds(boxes, persons, e))


def _auto_parts_right(line: ManifestLine, truth: ManifestLine, model_heads: bool, model_persons: list[bool],
                      settings: Settings) -> Counter[str]:
    """``<kind>.right`` / ``<kind>.checked`` (kinds ``heads``, ``persons``) over the parts of ``line`` the model's
    labels were accepted for."""
    boxes, persons = _labels(line, settings)
    t_boxes, t_persons = _labels(truth, settings)
    counts: Counter[str] = Counter()
    if model_heads:
        counts["heads.checked"] += 1
        counts["heads.right"] += boxes_match([a.xyxy for a in t_boxes], [a.xyxy for a in boxes])
    for person, from_model in zip(persons, model_persons, strict=False):
        if from_model:
            counts["persons.checked"] += 1
            counts["persons.right"] += person_found(t_persons, person, settings.schema_)
    return counts


def _precision(counts: Counter[str], *kinds: str) -> float | None:
    checked = sum(counts[f"{k}.checked"] for k in kinds)
    return round(sum(counts[f"{k}.right"] for k in kinds) / checked, 6) if checked else None


def batch_automation(batch_dir: str, settings: Settings, data_root: str,
                     truth_by_name: Mapping[str, ManifestLine] | None = None) -> AutomationReport:
    """The automation report of one batch; ``truth_by_name`` (image file name -> truth line) adds the truth
    precision of the auto-accepted parts."""
    batch_dir = batch_dir.rstrip("/") + "/"
    summary_uri = batch_dir + "inference/summary.json"
    summary: dict[str, Any] = json.loads(storage.read_text(summary_uri)) if storage.exists(summary_uri) else {}
    parts: dict[str, int] = summary.get("parts") or {}
    proposals = {line.source_ref: line.preannotation()
                 for line in read_manifest_if_present(batch_dir + "inference/human.jsonl")
                 if isinstance(line.data.get("source-ref"), str)}
    effort = Effort(human_seconds=0.0, by_hand_seconds=0.0)
    truth_counts: Counter[str] = Counter()
    for line in read_manifest_if_present(batch_dir + "inference/auto.jsonl"):
        boxes, persons = _labels(line, settings)
        effort = effort + Effort(human_seconds=0.0, by_hand_seconds=by_hand_seconds(boxes, persons, settings.effort))
        truth = (truth_by_name or {}).get(storage.basename(line.source_ref))
        if truth is not None:
            truth_counts += _auto_parts_right(line, truth, True, [True] * len(persons), settings)
    for line in read_manifest_if_present(batch_dir + "labeling/labeled.jsonl"):
        effort = effort + labeled_effort(line, proposals.get(line.source_ref), settings)
        truth = (truth_by_name or {}).get(storage.basename(line.source_ref))
        if truth is not None:
            truth_counts += _auto_parts_right(line, truth, *_sources(line), settings)
    bundle_id = summary.get("bundle_id")
    guarantee = bundle_guarantee(data_root, settings, bundle_id) if isinstance(bundle_id, str) else None
    j = settings.judgement
    return AutomationReport(
        parts=parts, auto_share_heads=_share(parts, "heads"), auto_share_persons=_share(parts, "persons"),
        audit_precision=guarantee.precision if guarantee else None,
        audit_precision_low95=guarantee.lower_bound if guarantee else None,
        audit_precision_high95=guarantee.upper_bound if guarantee else None,
        audits=guarantee.audits if guarantee else 0,
        auto_precision_truth=_precision(truth_counts, "heads", "persons"),
        auto_precision_truth_heads=_precision(truth_counts, "heads"),
        auto_precision_truth_persons=_precision(truth_counts, "persons"),
        auto_parts_checked=truth_counts["heads.checked"] + truth_counts["persons.checked"],
        human_seconds=round(effort.human_seconds, 1), by_hand_seconds=round(effort.by_hand_seconds, 1),
        human_seconds_ratio=None if effort.ratio is None else round(effort.ratio, 6),
        thresholds=summary.get("judgement") or {"box_threshold": j.box_threshold,
                                                  "keypoint_threshold": j.keypoint_threshold},
    )
