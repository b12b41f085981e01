"""Interactive assist: the keypoints of the person an annotator just outlined, computed on a crop around it.

Label Studio forwards what the annotator drew as ``params.context.result``. A person box (the keypoint config's
person ``RectangleLabels``) is cropped with a margin of :data:`PERSON_MARGIN` of its size on each side; a head box
(the heads control) is widened to where that head's body sits in a cabin frame (:data:`HEAD_WINDOW`: head widths
left and right, head heights above and below). The engine runs on the crop (a larger view of the person than the
whole frame gives it, so the points and their visibility are its best), the person whose box or head box best
overlaps the drawn box is taken, and its coordinates are moved back into the full image.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from alp.serve.predictions import Box, best_person
from alp.serve.protocol import ContextRegion, LabelConfig
from inference.engine import ImagePrediction, InferenceEngine, PersonPrediction
from inference.image_io import DecodedImage

PERSON_MARGIN = 0.25
HEAD_WINDOW = (2.5, 2.5, 1.0, 7.0)  # left, right, above, below, in head widths / heights


@dataclass(frozen=True)
class DrawnBox:
    """The box the annotator drew, in pixels of the full image, and what it outlines."""

    kind: Literal["person", "head"]
    box: Box


def drawn_box(regions: Sequence[ContextRegion], config: LabelConfig, width: int, height: int) -> DrawnBox | None:
    """The last box drawn with the person control (or the heads control) of ``config``; None when there is none."""
    person = config.keypoints.person if config.keypoints is not None else None
    for region in reversed(regions):
        if region.type.lower() != "rectanglelabels":
            continue
        kind: Literal["person", "head"]
        if person is not None and region.from_name == person.name:
            kind = "person"
        elif config.heads is not None and region.from_name == config.heads.name:
            kind = "head"
        else:
            continue
        box = percent_box(region.value, width, height)
        if box is not None:
            return DrawnBox(kind=kind, box=box)
    return None


def percent_box(value: Any, width: int, height: int) -> Box | None:
    """A region value's box (percent of the image) in pixels; None when it is not a box with an area.
    ``rotation`` is left alone: the configs turn rotation off."""
    if not isinstance(value, dict):
        return None
    try:
        x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
    except (KeyError, TypeError, ValueError):
        return None
    if not (w > 0 and h > 0):
        return None
    return x * width / 100, y * height / 100, (x + w) * width / 100, (y + h) * height / 100


def task_person_box(task_predictions: Sequence[Any], config: LabelConfig, width: int, height: int) -> Box | None:
    """The person a keypoint task is about: the person region of a prediction it already carries (the pipeline
    imports each person's task with that person outlined); None when it carries none."""
    person = config.keypoints.person if config.keypoints is not None else None
    if person is None:
        return None
    for prediction in task_predictions:
        result = prediction.get("result") if isinstance(prediction, dict) else None
        for region in result if isinstance(result, list) else []:
            if isinstance(region, dict) and region.get("from_name") == person.name:
                box = percent_box(region.get("value"), width, height)
                if box is not None:
                    return box
    return None


def crop_window(drawn: DrawnBox, width: int, height: int, min_side: int) -> tuple[int, int, int, int]:
    """The crop (x0, y0, x1, y1), inside the image and at least ``min_side`` on each side where the image allows."""
    x1, y1, x2, y2 = drawn.box
    bw, bh = x2 - x1, y2 - y1
    if drawn.kind == "person":
        left = right = bw * PERSON_MARGIN
        above = below = bh * PERSON_MARGIN
    else:
        wl, wr, ha, hb = HEAD_WINDOW
        left, right, above, below = bw * wl, bw * wr, bh * ha, bh * hb
    cx0, cy0 = max(0.0, x1 - left), max(0.0, y1 - above)
    cx1, cy1 = min(float(width), x2 + right), min(float(height), y2 + below)
    xs = _span(int(np.floor(cx0)), int(np.ceil(cx1)), width, min_side)
    ys = _span(int(np.floor(cy0)), int(np.ceil(cy1)), height, min_side)
    return xs[0], ys[0], xs[1], ys[1]


def _span(lo: int, hi: int, limit: int, min_side: int) -> tuple[int, int]:
    """[lo, hi) widened about its centre to ``min_side`` when shorter, kept inside [0, limit)."""
    if hi - lo >= min_side:
        return lo, hi
    if limit <= min_side:
        return 0, limit
    start = int(round((lo + hi) / 2 - min_side / 2))
    start = max(0, min(limit - min_side, start))
    return start, start + min_side


def shift(pred: ImagePrediction, dx: float, dy: float, width: int, height: int) -> ImagePrediction:
    """``pred`` of a crop whose corner is (dx, dy), in the full image's pixels."""
    offset = np.asarray([dx, dy, dx, dy], dtype=np.float64)
    persons = tuple(dataclasses.replace(
        p, box=(p.box[0] + dx, p.box[1] + dy, p.box[2] + dx, p.box[3] + dy),
        keypoints_xy=p.keypoints_xy + np.asarray([dx, dy], dtype=np.float64)) for p in pred.persons)
    heads = pred.head_boxes + offset if len(pred.head_boxes) else pred.head_boxes
    return dataclasses.replace(pred, width=width, height=height, head_boxes=heads, persons=persons)


def assist(engine: InferenceEngine, image: DecodedImage, drawn: DrawnBox,
           min_side: int) -> tuple[ImagePrediction, PersonPrediction | None]:
    """Run the engine on the crop around ``drawn``; the crop's prediction in full-image pixels and the person the
    box outlines (None when the model found nobody there). Blocking: call it from a worker thread."""
    x0, y0, x1, y1 = crop_window(drawn, image.width, image.height, min_side)
    crop = DecodedImage(pixels=np.ascontiguousarray(image.pixels[y0:y1, x0:x1]), format=image.format,
                        original_mode=image.original_mode, exif_transposed=image.exif_transposed)
    pred = shift(engine.predict_decoded([crop])[0], float(x0), float(y0), image.width, image.height)
    chosen = best_person(pred, drawn.box, by=drawn.kind)
    return pred, None if chosen is None else pred.persons[chosen]


def person_only(pred: ImagePrediction, person: PersonPrediction) -> ImagePrediction:
    """``pred`` narrowed to one person and its head box: what the judgement scores for an assisted person."""
    heads, scores, head_index = pred.head_boxes[:0], pred.head_scores[:0], None
    if person.head_box_index is not None and person.head_box_index < len(pred.head_boxes):
        heads = pred.head_boxes[person.head_box_index:person.head_box_index + 1]
        scores = pred.head_scores[person.head_box_index:person.head_box_index + 1]
        head_index = 0
    return dataclasses.replace(pred, head_boxes=heads, head_scores=scores, unmatched_visible_persons=0,
                               near_miss_persons=0, persons=(dataclasses.replace(person, head_box_index=head_index),))
