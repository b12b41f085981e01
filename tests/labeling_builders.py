"""Small hand-made truth and batch lines for the labeling tests (no image files).

The synthetic generator of the demo writes richer truth with images; these lines carry the same label
attributes (head boxes + keypoints with ``head_box_index`` and ``bbox``) so the simulated workforce, the
consolidation and the merge can be exercised in milliseconds.
"""

from __future__ import annotations

import random
from typing import Any

from alp import manifest
from alp.settings import Settings
from alp.synth.truth import truth_line_from_labels

# Offsets of the in-cabin points from the head centre, in head widths (x) and head heights (y).
_LAYOUT = {
    "left_eye": (0.18, -0.1), "right_eye": (-0.18, -0.1), "left_ear": (0.42, 0.0), "right_ear": (-0.42, 0.0),
    "nose": (0.0, 0.08), "mouth": (0.0, 0.28), "neck": (0.0, 0.8), "left_shoulder": (0.9, 1.05),
    "right_shoulder": (-0.9, 1.05), "left_elbow": (1.1, 2.0), "right_elbow": (-1.1, 2.0),
    "left_wrist": (0.7, 2.7), "right_wrist": (-0.7, 2.7), "left_hip": (0.5, 3.0), "right_hip": (-0.5, 3.0),
    "left_ankle": (0.6, 5.6), "right_ankle": (-0.6, 5.6),
}


def truth_line(source_ref: str, settings: Settings, *, persons: int = 2, seed: int = 0,
               width: int = 640, height: int = 480) -> manifest.ManifestLine:
    """A truth line: ``persons`` occupants side by side, each a head box and 17 points (some occluded,
    the ankles usually below the frame)."""
    rng = random.Random(seed)
    schema = settings.schema_
    boxes, people = [], []
    for i in range(persons):
        hw, hh = rng.uniform(45, 70), rng.uniform(55, 80)
        cx = width * (i + 0.5) / persons + rng.uniform(-20, 20)
        cy = height * 0.28 + rng.uniform(-15, 15)
        boxes.append(manifest.BoxAnnotation(left=round(cx - hw / 2, 1), top=round(cy - hh / 2, 1), width=round(hw, 1),
                                   height=round(hh, 1)))
        points = []
        for name in schema.names:
            dx, dy = _LAYOUT.get(name, (0.0, 1.0))
            x, y = cx + dx * hw, cy + dy * hh
            inside = 0 <= x < width and 0 <= y < height
            v = 0 if not inside else (1 if rng.random() < 0.15 else 2)
            points.append(manifest.Keypoint(name=name, x=round(x, 1) if inside else 0.0, y=round(y, 1) if inside else 0.0, v=v))
        labeled = [(k.x, k.y) for k in points if k.v > 0]
        xs = [p[0] for p in labeled] + [cx - hw / 2, cx + hw / 2]
        ys = [p[1] for p in labeled] + [cy - hh / 2, cy + hh / 2]
        people.append(manifest.PersonKeypoints(keypoints=points, head_box_index=i,
                                      bbox=[round(min(xs), 1), round(min(ys), 1), round(max(xs) - min(xs), 1),
                                            round(max(ys) - min(ys), 1)]))
    size = manifest.ImageSize(width=width, height=height)
    return truth_line_from_labels(source_ref, manifest.BoundingBoxLabel(image_size=[size], annotations=boxes),
                                  manifest.KeypointLabel(image_size=[size], keypoint_schema=schema.name, persons=people),
                                  settings, job_name="synthetic", creation_date="2026-01-01T00:00:00.000000",
                                  head_confidence=None)


def model_guess(truth: manifest.ManifestLine, settings: Settings, *, seed: int = 0, jitter_px: float = 4.0,
                drop_last_person: bool = False) -> tuple[list[manifest.ScoredBox], list[manifest.PersonKeypoints]]:
    """A plausible model proposal for a truth line: jittered boxes and points, optionally one head missed."""
    rng = random.Random(seed)
    found_b = truth.boxes(settings.labeling.head_label_attribute)
    found_k = truth.keypoints(settings.labeling.keypoint_label_attribute)
    assert found_b is not None and found_k is not None
    annotations = found_b[0].annotations[:-1] if drop_last_person else found_b[0].annotations
    boxes = [manifest.ScoredBox(left=a.left + rng.gauss(0, jitter_px), top=a.top + rng.gauss(0, jitter_px), width=a.width,
                       height=a.height, score=round(rng.uniform(0.3, 0.9), 3)) for a in annotations]
    persons = []
    for p in found_k[0].persons:
        if p.head_box_index is None or p.head_box_index >= len(boxes):
            continue
        persons.append(manifest.PersonKeypoints(
            head_box_index=p.head_box_index, score=0.5,
            keypoints=[manifest.Keypoint(name=k.name, x=max(0.0, k.x + rng.gauss(0, jitter_px)),
                                y=max(0.0, k.y + rng.gauss(0, jitter_px)), v=k.v, score=0.5, score_visible=0.5)
                       for k in p.keypoints]))
    return boxes, persons


def human_line(source_ref: str, truth: manifest.ManifestLine | None, settings: Settings, *, route: str = "human",
               reason: str = "low_keypoints: person 0 keypoint score 0.310 (quantile) < keypoint_threshold 0.5",
               seed: int = 0, key: str | None = None, parts: manifest.PartRoutes | None = None,
               drop_last_person: bool | None = None) -> manifest.ManifestLine:
    """A line of ``inference/human.jsonl``: the batch line plus the model's proposal and the route.
    ``truth=None`` is the cold start: no model, no prefill. ``parts``: the per-part routes (None: the whole
    image is people's); the model misses the last person of a ``human`` line unless ``drop_last_person`` says."""
    data: dict[str, Any] = {
        "source-ref": source_ref,
        manifest.OBJECT_KEY: {"bucket": "unlabeled", "key": key or source_ref.rsplit("/", 1)[-1], "etag": f"e{seed}"},
    }
    line = manifest.ManifestLine(data)
    if truth is None:
        pre = manifest.PreAnnotation(route="human", reason="no_model")
        return line.with_model(manifest.PREANNOTATION_KEY, pre).with_model(manifest.ROUTE_KEY, manifest.RouteInfo(route="human", reason="no_model"))
    found = truth.boxes(settings.labeling.head_label_attribute)
    assert found is not None
    drop = route == "human" if drop_last_person is None else drop_last_person
    boxes, persons = model_guess(truth, settings, seed=seed, drop_last_person=drop)
    pre = manifest.PreAnnotation(route="audit" if route == "audit" else "human", reason=reason, image_size=found[0].size,
                        boxes=boxes, persons=persons, bundle_id="bundle-test", parts=parts)
    route_info = manifest.RouteInfo(route="audit" if route == "audit" else "human", reason=reason)
    line = line.with_model(manifest.PREANNOTATION_KEY, pre).with_model(manifest.ROUTE_KEY, route_info)
    if route == "audit":
        # The model's would-be labels, as the inference step writes them for audit items.
        line = _with_model_labels(line, found[0].size, boxes, persons, settings)
    return line


def auto_line(source_ref: str, truth: manifest.ManifestLine, settings: Settings, *, seed: int = 0) -> manifest.ManifestLine:
    """A line of ``inference/auto.jsonl``: the model's labels, ``human-annotated: no``."""
    found = truth.boxes(settings.labeling.head_label_attribute)
    assert found is not None
    boxes, persons = model_guess(truth, settings, seed=seed)
    line = manifest.ManifestLine({"source-ref": source_ref,
                         manifest.OBJECT_KEY: {"bucket": "unlabeled", "key": source_ref.rsplit("/", 1)[-1]}})
    return _with_model_labels(line, found[0].size, boxes, persons, settings,
                              creation_date="2026-01-01T00:00:00.000000")


def _with_model_labels(line: manifest.ManifestLine, size: manifest.ImageSize, boxes: list[manifest.ScoredBox], persons: list[manifest.PersonKeypoints],
                       settings: Settings, creation_date: str | None = None) -> manifest.ManifestLine:
    """``line`` with the model's labels, ``human-annotated: no`` (``creation_date`` None: stamped now)."""
    dated: dict[str, Any] = {"creation_date": creation_date} if creation_date else {}
    heads = manifest.BoundingBoxLabel(image_size=[size], annotations=[
        manifest.BoxAnnotation(left=b.left, top=b.top, width=b.width, height=b.height) for b in boxes])
    labeling = settings.labeling
    return (line.with_boxes(labeling.head_label_attribute, heads,
                            manifest.BoxMetadata(human_annotated="no", job_name="auto", **dated))
            .with_keypoints(labeling.keypoint_label_attribute, manifest.KeypointLabel(image_size=[size], persons=persons),
                            manifest.KeypointMetadata(human_annotated="no", job_name="auto", **dated)))
