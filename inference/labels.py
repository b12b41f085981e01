"""Predictions -> manifest labels: Ground Truth box labels, the custom keypoint label, pre-annotations."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from alp.manifest import (
    BoundingBoxLabel,
    BoxAnnotation,
    BoxMetadata,
    ImageSize,
    Keypoint,
    KeypointLabel,
    KeypointMetadata,
    ManifestLine,
    ObjectConfidence,
    PartRoutes,
    PersonKeypoints,
    PreAnnotation,
    ScoredBox,
)
from alp.schema import V_OUTSIDE
from alp.settings import Settings
from inference.engine import ImagePrediction, PersonPrediction

CREATION_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"


def _r(x: float) -> float:
    # Six decimals: stable bytes across runs and far below a pixel.
    return round(float(x), 6)


def normalize_creation_date(value: str) -> str:
    """Ground Truth's creation-date spelling for an ISO time (kept as given when it does not parse)."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return parsed.strftime(CREATION_DATE_FORMAT)


def person_keypoints(person: PersonPrediction, keypoint_names: Sequence[str]) -> PersonKeypoints:
    kpts = []
    for k, name in enumerate(keypoint_names):
        if person.keypoint_known is not None and not person.keypoint_known[k]:
            # the model has no such point (a zero-shot bundle's mouth): no position and no score, which the task
            # shows unplaced and unanswered, not as a point the model put outside the image
            kpts.append(Keypoint(name=name, x=0.0, y=0.0, v=V_OUTSIDE))
            continue
        v = int(person.visibility[k])
        x, y = (0.0, 0.0) if v == V_OUTSIDE else (person.keypoints_xy[k, 0], person.keypoints_xy[k, 1])
        vis_conf = None if person.keypoint_conf_visible is None else _r(person.keypoint_conf_visible[k])
        kpts.append(Keypoint(name=name, x=_r(x), y=_r(y), v=v, score=_r(person.keypoint_conf[k]),
                             score_visible=vis_conf))
    x1, y1, x2, y2 = person.box
    return PersonKeypoints(keypoints=kpts, head_box_index=person.head_box_index,
                           bbox=[_r(x1), _r(y1), _r(x2 - x1), _r(y2 - y1)], score=_r(person.score))


def image_size(pred: ImagePrediction) -> ImageSize:
    return ImageSize(width=pred.width, height=pred.height, depth=3)


def scored_boxes(pred: ImagePrediction) -> list[ScoredBox]:
    return [ScoredBox(left=_r(b[0]), top=_r(b[1]), width=_r(b[2] - b[0]), height=_r(b[3] - b[1]), score=_r(s))
            for b, s in zip(pred.head_boxes, pred.head_scores, strict=True)]


def prediction_labels(pred: ImagePrediction, *, keypoint_names: Sequence[str], schema_name: str, job_name: str,
                      creation_date: str, confidence: float | None = None
                      ) -> tuple[BoundingBoxLabel, BoxMetadata, KeypointLabel, KeypointMetadata]:
    """Model labels in the Ground Truth output format, ``human-annotated: "no"``, with confidences."""
    size = image_size(pred)
    boxes = BoundingBoxLabel(image_size=[size], annotations=[
        BoxAnnotation(class_id=0, left=_r(b[0]), top=_r(b[1]), width=_r(b[2] - b[0]), height=_r(b[3] - b[1]))
        for b in pred.head_boxes
    ])
    box_meta = BoxMetadata(objects=[ObjectConfidence(confidence=_r(s)) for s in pred.head_scores],
                           human_annotated="no", creation_date=creation_date, job_name=job_name,
                           confidence=None if confidence is None else _r(confidence))
    kpt_label = KeypointLabel(image_size=[size], keypoint_schema=schema_name,
                              persons=[person_keypoints(p, keypoint_names) for p in pred.persons])
    kpt_meta = KeypointMetadata(human_annotated="no", creation_date=creation_date, job_name=job_name,
                                confidence=None if confidence is None else _r(confidence))
    return boxes, box_meta, kpt_label, kpt_meta


def with_prediction_labels(line: ManifestLine, pred: ImagePrediction, settings: Settings, *, bundle_id: str,
                           creation_date: str, confidence: float | None = None) -> ManifestLine:
    """``line`` plus the model's head boxes and keypoints under the configured label attributes."""
    boxes, box_meta, kpts, kpt_meta = prediction_labels(
        pred, keypoint_names=settings.schema_.names, schema_name=settings.schema_.name,
        job_name=f"auto-{bundle_id}", creation_date=creation_date, confidence=confidence,
    )
    return (line.with_boxes(settings.labeling.head_label_attribute, boxes, box_meta)
            .with_keypoints(settings.labeling.keypoint_label_attribute, kpts, kpt_meta))


def preannotation(pred: ImagePrediction | None, *, route: Literal["human", "audit"], reason: str,
                  keypoint_names: Sequence[str], bundle_id: str | None, size: ImageSize | None = None,
                  parts: PartRoutes | None = None) -> PreAnnotation:
    """What people see pre-drawn (boxes; keypoints with visibility and scores), why they see it, and which of
    its parts they label (``parts``; None: all)."""
    if pred is None:
        return PreAnnotation(route=route, reason=reason, image_size=size, bundle_id=bundle_id)
    return PreAnnotation(route=route, reason=reason, image_size=image_size(pred),
                         boxes=scored_boxes(pred),
                         persons=[person_keypoints(p, keypoint_names) for p in pred.persons],
                         bundle_id=bundle_id, parts=parts)

