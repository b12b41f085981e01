"""Parsing of one worker's answer: the form a Ground Truth task submits -> typed boxes or keypoints.

Every malformed answer (not JSON, NaN, wrong types, unknown labels, markup in strings, points off the image)
raises :class:`WorkerAnswerError` with a reason; callers skip that answer and record why. Stdlib only (the
post-annotation Lambda ships without numpy).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from alp.geometry import Box
from alp.labeling.contracts import (
    ELAPSED_FIELD,
    HEAD_ELEMENT,
    HEAD_LABEL,
    KEYPOINT_ELEMENT,
    VISIBILITY_CHOICES,
    VISIBILITY_PREFIX,
)
from alp.schema import VISIBILITY_CODES

EDGE_TOLERANCE_PX = 2.0  # the crowd elements can report a click a pixel past the border
MAX_ELAPSED_SECONDS = 86400.0


class WorkerAnswerError(ValueError):
    """A worker's answer cannot be used; the message is the reason recorded in the worker report."""


@dataclass(frozen=True)
class BoxAnswer:
    worker_id: str
    image_size: tuple[int, int]
    boxes: tuple[Box, ...]
    elapsed_seconds: float | None = None


@dataclass(frozen=True)
class KeypointAnswer:
    worker_id: str
    image_size: tuple[int, int]
    points: tuple[tuple[float, float, int], ...]  # schema order; (0, 0, 0) when outside
    elapsed_seconds: float | None = None


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WorkerAnswerError(f"{what} is {type(value).__name__}, not a number")
    if not math.isfinite(value):
        raise WorkerAnswerError(f"{what} is not a finite number")
    return float(value)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise WorkerAnswerError(f"{what} is {type(value).__name__}, not a string")
    if "<" in value or ">" in value:
        raise WorkerAnswerError(f"{what} contains markup")
    return value


def _decode(content: str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(content, Mapping):
        return content
    try:
        # NaN and Infinity are refused here rather than trusted: json.loads accepts them by default.
        data = json.loads(content, parse_constant=lambda c: (_ for _ in ()).throw(WorkerAnswerError(f"{c} in answer")))
    except json.JSONDecodeError as exc:
        raise WorkerAnswerError(f"answer is not JSON ({exc.msg})") from None
    except RecursionError:  # a hostile answer nested deeper than the parser's stack: refuse it, do not crash
        raise WorkerAnswerError("answer is nested too deeply") from None
    if not isinstance(data, dict):
        raise WorkerAnswerError(f"answer is a JSON {type(data).__name__}, not an object")
    return data


def _image_size(element: Mapping[str, Any]) -> tuple[int, int]:
    props = element.get("inputImageProperties")
    if not isinstance(props, Mapping):
        raise WorkerAnswerError("inputImageProperties missing")
    w = _number(props.get("width"), "image width")
    h = _number(props.get("height"), "image height")
    if w < 1 or h < 1 or w != int(w) or h != int(h):
        raise WorkerAnswerError(f"image size {w}x{h} is not a positive whole number of pixels")
    return int(w), int(h)


def _elapsed(data: Mapping[str, Any]) -> float | None:
    raw = data.get(ELAPSED_FIELD)
    try:
        value = float(raw) if isinstance(raw, str | int | float) and not isinstance(raw, bool) else None
    except ValueError:
        return None
    if value is None or not math.isfinite(value) or not 0 < value <= MAX_ELAPSED_SECONDS:
        return None
    return value


@dataclass(frozen=True)
class _Element:
    """A crowd element of the submitted form: the image size it reports and its list of drawn things."""

    image_size: tuple[int, int]
    items: list[Any]
    item_word: str

    def objects(self) -> Iterator[tuple[int, Mapping[str, Any]]]:
        for i, raw in enumerate(self.items):
            if not isinstance(raw, Mapping):
                raise WorkerAnswerError(f"{self.item_word} {i} is not an object")
            yield i, raw


def _element(data: Mapping[str, Any], name: str, list_field: str, item_word: str) -> _Element:
    element = data.get(name)
    if not isinstance(element, Mapping):
        raise WorkerAnswerError(f"no {name!r} element in the answer")
    size = _image_size(element)
    raw_items = element.get(list_field, [])
    if not isinstance(raw_items, list):
        raise WorkerAnswerError(f"{list_field} is not a list")
    return _Element(size, raw_items, item_word)


def parse_box_answer(worker_id: str, content: str | Mapping[str, Any]) -> BoxAnswer:
    """Parse the head-box form: ``{"heads": {"boundingBoxes": [...], "inputImageProperties": {...}}}``."""
    data = _decode(content)
    element = _element(data, HEAD_ELEMENT, "boundingBoxes", "box")
    w, h = element.image_size
    boxes = []
    for i, raw in element.objects():
        label = _text(raw.get("label", HEAD_LABEL), f"box {i} label")
        if label != HEAD_LABEL:
            raise WorkerAnswerError(f"box {i} has unknown label {label[:40]!r}")
        left, top = _number(raw.get("left"), f"box {i} left"), _number(raw.get("top"), f"box {i} top")
        width, height = _number(raw.get("width"), f"box {i} width"), _number(raw.get("height"), f"box {i} height")
        if width <= 0 or height <= 0:
            raise WorkerAnswerError(f"box {i} has no area")
        t = EDGE_TOLERANCE_PX
        if left < -t or top < -t or left + width > w + t or top + height > h + t:
            raise WorkerAnswerError(f"box {i} lies outside the {w}x{h} image")
        left, top = max(0.0, left), max(0.0, top)
        boxes.append(Box(left, top, min(width, w - left), min(height, h - top)))
    return BoxAnswer(worker_id, (w, h), tuple(boxes), _elapsed(data))


def _visibility(value: Any, name: str) -> int:
    """One point's visibility as the form submits it: a plain value, or ``{choice: bool}`` as the crowd
    elements serialize radio and checkbox groups."""
    if isinstance(value, str):
        choice = value
    elif isinstance(value, Mapping):
        chosen = [k for k, v in value.items() if v is True]
        if len(chosen) != 1:
            raise WorkerAnswerError(f"visibility of {name} has {len(chosen)} choices")
        choice = chosen[0]
    else:
        raise WorkerAnswerError(f"visibility of {name} missing")
    choice = _text(choice, f"visibility of {name}")
    if choice not in VISIBILITY_CHOICES:
        raise WorkerAnswerError(f"visibility of {name} is {choice[:40]!r}")
    return VISIBILITY_CODES[choice]


def parse_keypoint_answer(worker_id: str, content: str | Mapping[str, Any], names: Sequence[str]) -> KeypointAnswer:
    """Parse the keypoint form: the ``crowd-keypoint`` element plus one visibility field per point.

    A point marked outside is dropped even if placed; a point marked visible or occluded but not placed
    counts as outside (the worker gave no position).
    """
    data = _decode(content)
    element = _element(data, KEYPOINT_ELEMENT, "keypoints", "point")
    w, h = element.image_size
    known = set(names)
    placed: dict[str, tuple[float, float]] = {}
    for i, raw in element.objects():
        label = _text(raw.get("label"), f"point {i} label")
        if label not in known:
            raise WorkerAnswerError(f"point {i} has unknown label {label[:40]!r}")
        if label in placed:
            raise WorkerAnswerError(f"point {label} placed twice")
        x, y = _number(raw.get("x"), f"point {label} x"), _number(raw.get("y"), f"point {label} y")
        t = EDGE_TOLERANCE_PX
        if not (-t <= x <= w + t and -t <= y <= h + t):
            raise WorkerAnswerError(f"point {label} lies outside the {w}x{h} image")
        placed[label] = (min(max(x, 0.0), float(w)), min(max(y, 0.0), float(h)))
    points = []
    for name in names:
        v = _visibility(data.get(VISIBILITY_PREFIX + name), name)
        xy = placed.get(name)
        points.append((xy[0], xy[1], v) if v > 0 and xy is not None else (0.0, 0.0, 0))
    return KeypointAnswer(worker_id, (w, h), tuple(points), _elapsed(data))
