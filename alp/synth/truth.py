"""Truth lines: a manifest line holding people's labels (head boxes and keypoints), built in one place.

:func:`truth_line_from_labels` is the one builder: labels in, a line in the project's Ground Truth
formats out (``human-annotated: "yes"``, under the label attributes the settings name). The synthetic
generator writes each rendered scene through :func:`truth_line`; the training sample data and the tests'
hand-made truth go through the builder as well.

Points outside the frame keep the (x, y) the skeleton puts them at, with ``v = 0`` (COCO would write
0, 0): consumers that need COCO's convention get it from :func:`alp.coco.manifest_to_coco`, and metrics
ignore ``v = 0`` points.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
    PersonKeypoints,
    utc_now_iso,
)
from alp.schema import INCABIN17
from alp.settings import Settings
from alp.synth.scene import SceneTruth

SYNTH_KEY = "alp-synth"
JOB_NAME = "synthetic-truth"
CREATION_DATE = "2024-01-01T00:00:00.000000"  # fixed, so the manifest's bytes depend only on the seed


def truth_line_from_labels(source_ref: str, heads: BoundingBoxLabel, keypoints: KeypointLabel,
                           settings: Settings, *, job_name: str, creation_date: str | None = None,
                           head_confidence: float | None = 1.0,
                           extra: Mapping[str, Any] | None = None) -> ManifestLine:
    """A line labeled by people: ``heads`` and ``keypoints`` under the settings' label attributes.

    Args:
        creation_date: the metadata's ``creation-date``; None stamps the current time.
        head_confidence: each head box's confidence in the metadata's ``objects``; None lists none.
        extra: keys written beside ``source-ref`` (``alp-split``, ``alp-synth``...).
    """
    date = creation_date or utc_now_iso()
    objects = [] if head_confidence is None else [ObjectConfidence(confidence=head_confidence)
                                                  for _ in heads.annotations]
    box_meta = BoxMetadata(objects=objects, human_annotated="yes", creation_date=date, job_name=job_name)
    keypoint_meta = KeypointMetadata(human_annotated="yes", creation_date=date, job_name=job_name)
    return (ManifestLine.for_image(source_ref, **(extra or {}))
            .with_boxes(settings.labeling.head_label_attribute, heads, box_meta)
            .with_keypoints(settings.labeling.keypoint_label_attribute, keypoints, keypoint_meta))


def scene_labels(truth: SceneTruth) -> tuple[BoundingBoxLabel, KeypointLabel]:
    """A rendered scene's head boxes and ``incabin17`` keypoints as Ground Truth labels."""
    size = ImageSize(width=truth.width, height=truth.height, depth=3)
    boxes, persons = [], []
    for i, person in enumerate(truth.persons):
        left, top, w, h = person.head_box
        boxes.append(BoxAnnotation(class_id=0, left=left, top=top, width=w, height=h))
        kps = [Keypoint(name=name, x=round(float(x), 2), y=round(float(y), 2), v=int(v))
               for name, (x, y, v) in zip(INCABIN17.names, person.keypoints, strict=True)]
        persons.append(PersonKeypoints(keypoints=kps, head_box_index=i, bbox=[float(v) for v in person.bbox]))
    return (BoundingBoxLabel(image_size=[size], annotations=boxes),
            KeypointLabel(image_size=[size], keypoint_schema=INCABIN17.name, persons=persons))


def truth_line(truth: SceneTruth, source_ref: str, settings: Settings | None = None) -> ManifestLine:
    """The manifest line for one rendered scene: its labels plus what drew it under ``alp-synth``."""
    heads, keypoints = scene_labels(truth)
    info: dict[str, Any] = {"seed": truth.seed, "index": truth.index, "hard": truth.hard,
                            "camera": truth.camera, "mode": truth.mode, "factors": list(truth.factors),
                            "roles": [p.role for p in truth.persons]}
    return truth_line_from_labels(source_ref, heads, keypoints, settings or Settings(), job_name=JOB_NAME,
                                  creation_date=CREATION_DATE, extra={SYNTH_KEY: info})
