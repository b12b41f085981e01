"""The pre-annotation Lambda's logic (``PreHumanTaskLambdaArn``): one manifest line -> one task's input.

In: ``version``, ``labelingJobArn``, ``dataObject`` (the whole input-manifest line, ``source-ref`` or
``source``). Out: ``taskInput`` (everything the Liquid template reads as ``task.input``: the image, the
model's prefill, the route reason) and ``isHumanAnnotationRequired``.

A missing or malformed pre-annotation still gives a task that shows the image, without prefill, and the
reason is logged; a line with neither ``source-ref`` nor ``source`` fails with a clear error. Pure apart from
the log: the Lambda, the local workforce and the tests call :func:`pre_annotation` alike. Imports: stdlib,
pydantic and the ``alp`` core only (the Lambda asset has no numpy).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import ValidationError

from alp.labeling.contracts import (
    HEAD_LABEL,
    PERSON_KEY,
    VISIBILITY_CHOICES,
    VISIBILITY_PREFIX,
    PersonTask,
    PreAnnotationEvent,
    PreAnnotationResponse,
)
from alp.manifest import PREANNOTATION_KEY, BoxAnnotation, ImageSize, ManifestError, ManifestLine
from alp.schema import VISIBILITY_NAMES, get_schema

# The name the Lambda's log lines have always carried (log filters and alarms key on it).
log = logging.getLogger("alp.gt_pre_annotation")


class PreAnnotationError(ValueError):
    """The event or its manifest line cannot make a task."""


def pre_annotation(event: dict[str, Any]) -> dict[str, Any]:
    """The pre-annotation response for one Ground Truth event; logs why a prefill was dropped."""
    try:
        parsed = PreAnnotationEvent.model_validate(event)
    except ValidationError as exc:
        raise PreAnnotationError(f"pre-annotation event: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
    try:
        task_input, notes = build_task_input(parsed.data_object)
    except ManifestError as exc:
        raise PreAnnotationError(f"data object of {parsed.labeling_job_arn or 'the job'}: {exc}") from None
    source = task_input["taskObject"]
    for note in notes:
        log.warning(json.dumps({"event": "prefill_dropped", "source": source[:300], "why": note}))
    return PreAnnotationResponse(task_input=task_input).dump()


# The judgement writes reasons as "code: detail; code: detail"; workers see a plain sentence per code.
_REASON_TEXT = {
    "no_model": "There is no model yet: please draw every head from scratch.",
    "audit": "Quality check: please label this image from scratch, carefully.",
    "no_detections": "The model found no one here: please check the whole image.",
    "low_box": "The model was unsure about some head boxes.",
    "unassigned_head": "The model found a head it could not tie to a person.",
    "no_head": "The model found a person without a head box.",
    "low_keypoints": "The model was unsure about some body points.",
    "unmatched_person": "The model may have missed or doubled a person.",
    "near_miss": "The model may have missed a person: please check for anyone without a head box.",
    "model_error": "The model could not process this image.",
    "zero_shot": "A general pose model, not trained on this project yet, proposed these: please check every head "
                 "and body point, and place the points it left out.",
}


# --- manifest line -> taskInput -------------------------------------------------------------------------

def reason_codes(reason: str) -> list[str]:
    """The codes of a judgement reason (``"low_box: ...; no_head: ..."`` -> ``["low_box", "no_head"]``)."""
    codes = []
    for part in reason.split(";"):
        code = part.split(":", 1)[0].strip()
        if code and code not in codes:
            codes.append(code)
    return codes


def reason_text(route: str, reason: str) -> str:
    """A sentence for workers: fixed texts only, so nothing from a manifest is shown as is."""
    if route == "audit":
        return _REASON_TEXT["audit"]
    texts = [_REASON_TEXT[c] for c in reason_codes(reason) if c in _REASON_TEXT and c != "audit"]
    return " ".join(texts) if texts else "The model was unsure about this image."


def _round(v: float) -> float:
    return round(float(v), 2)


def _clip_box(box: BoxAnnotation | Any, size: ImageSize | None) -> dict[str, float] | None:
    left, top, right, bottom = box.left, box.top, box.left + box.width, box.top + box.height
    if size is not None:
        left, top = max(0.0, left), max(0.0, top)
        right, bottom = min(float(size.width), right), min(float(size.height), bottom)
    if right - left < 1 or bottom - top < 1:
        return None
    return {"left": _round(left), "top": _round(top), "width": _round(right - left), "height": _round(bottom - top)}


def _percent_box(box: list[float], size: ImageSize) -> dict[str, float]:
    """The highlight rectangle as percentages, so the reference view scales with the page."""
    left, top, width, height = box
    return {
        "left": round(100.0 * max(0.0, left) / size.width, 3),
        "top": round(100.0 * max(0.0, top) / size.height, 3),
        "width": round(100.0 * width / size.width, 3),
        "height": round(100.0 * height / size.height, 3),
    }


def build_task_input(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``taskInput`` for one manifest line, plus the reasons (logged by the caller) a prefill was dropped.

    A line with neither ``source-ref`` nor ``source`` raises :class:`ManifestError`; a missing or malformed
    pre-annotation only removes the prefill, the task still shows the image.
    """
    line = ManifestLine(data)  # raises ManifestError naming the missing source
    source = data.get("source-ref") if "source-ref" in data else data.get("source")
    if not isinstance(source, str) or not source:
        raise ManifestError("'source' must be a non-empty string")
    notes: list[str] = []
    route, reason = "human", "unknown"
    pre = None
    try:
        pre = line.preannotation()
    except ManifestError as exc:
        notes.append(f"malformed {PREANNOTATION_KEY}: {exc}")
    try:
        route_info = line.route()
    except ManifestError as exc:
        route_info = None
        notes.append(f"malformed route: {exc}")
    if pre is not None:
        route, reason = pre.route, pre.reason
    elif route_info is not None:
        route, reason = route_info.route, route_info.reason
    elif PREANNOTATION_KEY not in data:
        notes.append(f"no {PREANNOTATION_KEY} on the line")
    common: dict[str, Any] = {
        "taskObject": source,
        "route": route,
        "reason": reason,
        "reasonText": reason_text(route, reason),
    }
    if PERSON_KEY in data:
        return _keypoint_task_input(data, common, route, notes), notes
    initial: list[dict[str, Any]] = []
    size = pre.image_size if pre is not None else None
    if pre is not None and pre.blind(None):
        notes.append("audit item: no prefill, so people label it independently of the model")
    elif pre is not None:
        for box in pre.boxes:
            clipped = _clip_box(box, size)
            if clipped is None:
                notes.append("dropped an empty or off-image prefill box")
                continue
            initial.append({"label": HEAD_LABEL, **clipped})
    task = {
        **common,
        "kind": "head-boxes",
        "labels": [HEAD_LABEL],
        "initialBoxes": initial,
        "prefilled": bool(initial),
        "imageSize": size.dump() if size is not None else None,
    }
    return task, notes


def _keypoint_task_input(data: dict[str, Any], common: dict[str, Any], route: str,
                         notes: list[str]) -> dict[str, Any]:
    try:
        person = PersonTask.model_validate(data[PERSON_KEY])
        names = list(get_schema(person.keypoint_schema).names)
    except ValidationError as exc:
        raise ManifestError(f"{PERSON_KEY!r}: {exc.errors()[0]['msg']}") from None
    except ValueError as exc:
        raise ManifestError(f"{PERSON_KEY!r}: {exc}") from None
    size = person.image_size
    by_name: dict[str, tuple[float, float, int]] = {}
    prefill = person.prefill
    if prefill is not None and route == "audit":
        notes.append("audit item: no prefill, so people label it independently of the model")
        prefill = None
    if prefill is not None:
        got = [k.name for k in prefill.keypoints]
        if got != names:
            notes.append(f"prefill has points {got[:3]}... not the schema's {len(names)}: no prefill")
        else:
            # A model scores every point it gives; in a scored prefill, a point without a score is one the model does
            # not give at all (a zero-shot bundle's mouth): people see it unplaced and unanswered, not as "outside".
            scored = any(k.score is not None for k in prefill.keypoints)
            for k in prefill.keypoints:
                if scored and k.score is None and k.v == 0:
                    continue
                inside = 0 <= k.x <= size.width and 0 <= k.y <= size.height
                v = k.v if inside else 0
                by_name[k.name] = (_round(k.x), _round(k.y), v)
    initial = [{"label": n, "x": by_name[n][0], "y": by_name[n][1]} for n in names if by_name.get(n, (0, 0, 0))[2] > 0]
    rows = []
    for n in names:
        chosen = VISIBILITY_NAMES[by_name[n][2]] if n in by_name else None
        rows.append({"name": n, "title": n.replace("_", " "), "field": VISIBILITY_PREFIX + n,
                     **{c: chosen == c for c in VISIBILITY_CHOICES}})
    if common["reason"] == "no_model" and route != "audit":
        common = {**common, "reasonText": "There is no model yet: please place every point of this person."}
    return {
        **common,
        "kind": "keypoints",
        "labels": list(names),
        "initialKeypoints": initial,
        "points": rows,
        "prefilled": bool(by_name),
        "imageSize": size.dump(),
        "highlight": _percent_box(person.head_box, size),
        "personNumber": person.head_index + 1,
        "personCount": person.persons_in_image,
    }
