"""Consolidation of several workers' answers into one label, and worker quality from gold items.

Pure functions over plain data, stdlib only (the post-annotation Lambda ships without numpy):

* boxes: clustered across workers by IoU (each worker contributes at most one box per cluster), a cluster
  kept when at least half the workers drew it, its coordinates the per-edge median;
* keypoints: per point, the visibility by majority vote and the coordinates by median over the workers
  who placed the point;
* confidence: a per-object agreement score in [0, 1];
* worker quality: workers whose mean agreement with gold items is under a threshold are left out of
  consolidation, as in the LSUN / Berkeley DeepDrive labeling pipelines.

Every malformed worker answer (not JSON, NaN, wrong types, unknown labels, markup in strings, points off the
image) raises :class:`WorkerAnswerError` with a reason; callers skip that answer and record why.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from alp.labeling.tasks import (
    CONSOLIDATION_KEY,
    ELAPSED_FIELD,
    HEAD_ELEMENT,
    HEAD_LABEL,
    KEYPOINT_ELEMENT,
    VISIBILITY_CHOICES,
    VISIBILITY_PREFIX,
    ConsolidationInfo,
    GoldItem,
    JobContext,
)
from alp.schema import VISIBILITY_CODES

EDGE_TOLERANCE_PX = 2.0  # the crowd elements can report a click a pixel past the border
MIN_OKS_AREA = 32.0 * 32.0
MAX_ELAPSED_SECONDS = 86400.0


class WorkerAnswerError(ValueError):
    """A worker's answer cannot be used; the message is the reason recorded in the worker report."""


# --- geometry (stdlib) -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Box:
    left: float
    top: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)


def box_iou(a: Box, b: Box) -> float:
    iw = min(a.right, b.right) - max(a.left, b.left)
    ih = min(a.bottom, b.bottom) - max(a.top, b.top)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def match_boxes(a: Sequence[Box], b: Sequence[Box], iou_threshold: float) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching by descending IoU (ties by index, so it is deterministic)."""
    pairs = sorted(
        ((box_iou(x, y), i, j) for i, x in enumerate(a) for j, y in enumerate(b)),
        key=lambda p: (-p[0], p[1], p[2]),
    )
    used_a: set[int] = set()
    used_b: set[int] = set()
    out = []
    for iou, i, j in pairs:
        if iou < iou_threshold:
            break
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        out.append((i, j, iou))
    return out


def box_agreement(a: Sequence[Box], b: Sequence[Box], iou_threshold: float = 0.5) -> float:
    """IoU-weighted F1 of two box sets: 1 when identical, 0 when nothing matches; both empty -> 1."""
    if not a and not b:
        return 1.0
    matches = match_boxes(a, b, iou_threshold)
    return 2.0 * sum(m[2] for m in matches) / (len(a) + len(b))


def point_similarity(dx: float, dy: float, area: float, sigma: float) -> float:
    """COCO's per-keypoint similarity ``exp(-d^2 / (2 s^2 k^2))`` with ``s^2`` the area, ``k = 2 sigma``."""
    return math.exp(-(dx * dx + dy * dy) / ((2.0 * sigma) ** 2) / (max(area, 1e-9)) / 2.0)


def oks(gt: Sequence[tuple[float, float, int]], pred: Sequence[tuple[float, float]], area: float,
        sigmas: Sequence[float]) -> float:
    """Object keypoint similarity over the ground truth's labeled points (v > 0); none labeled -> 0."""
    sims = [point_similarity(p[0] - g[0], p[1] - g[1], area, s)
            for g, p, s in zip(gt, pred, sigmas, strict=True) if g[2] > 0]
    return sum(sims) / len(sims) if sims else 0.0


def keypoint_area(points: Iterable[tuple[float, float, int]], floor_box: Box | None = None) -> float:
    """The object scale for OKS: the box around the labeled points (and the head box), at least 32x32."""
    xs = [p[0] for p in points if p[2] > 0]
    ys = [p[1] for p in points if p[2] > 0]
    if floor_box is not None:
        xs += [floor_box.left, floor_box.right]
        ys += [floor_box.top, floor_box.bottom]
    if not xs:
        return MIN_OKS_AREA
    return max(MIN_OKS_AREA, (max(xs) - min(xs)) * (max(ys) - min(ys)))


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% by default); ``n == 0`` -> (0, 1)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _r(v: float) -> float:
    return round(v, 2)


# --- parsing one worker's answer -------------------------------------------------------------------------

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


def parse_box_answer(worker_id: str, content: str | Mapping[str, Any]) -> BoxAnswer:
    """Parse the head-box form: ``{"heads": {"boundingBoxes": [...], "inputImageProperties": {...}}}``."""
    data = _decode(content)
    element = data.get(HEAD_ELEMENT)
    if not isinstance(element, Mapping):
        raise WorkerAnswerError(f"no {HEAD_ELEMENT!r} element in the answer")
    w, h = _image_size(element)
    raw_boxes = element.get("boundingBoxes", [])
    if not isinstance(raw_boxes, list):
        raise WorkerAnswerError("boundingBoxes is not a list")
    boxes = []
    for i, raw in enumerate(raw_boxes):
        if not isinstance(raw, Mapping):
            raise WorkerAnswerError(f"box {i} is not an object")
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
    element = data.get(KEYPOINT_ELEMENT)
    if not isinstance(element, Mapping):
        raise WorkerAnswerError(f"no {KEYPOINT_ELEMENT!r} element in the answer")
    w, h = _image_size(element)
    raw_points = element.get("keypoints", [])
    if not isinstance(raw_points, list):
        raise WorkerAnswerError("keypoints is not a list")
    known = set(names)
    placed: dict[str, tuple[float, float]] = {}
    for i, raw in enumerate(raw_points):
        if not isinstance(raw, Mapping):
            raise WorkerAnswerError(f"point {i} is not an object")
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


# --- consolidation ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConsolidatedBoxes:
    image_size: tuple[int, int]
    boxes: tuple[Box, ...]
    box_confidence: tuple[float, ...]
    confidence: float


@dataclass(frozen=True)
class ConsolidatedPerson:
    image_size: tuple[int, int]
    points: tuple[tuple[float, float, int], ...]
    point_confidence: tuple[float, ...]
    confidence: float


def majority_size(sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The image size most answers report (ties: the smallest, so the choice is deterministic)."""
    counts = Counter(sizes)
    best = max(counts.values())
    return min(s for s, c in counts.items() if c == best)


def consolidate_boxes(answers: Sequence[BoxAnswer], iou_threshold: float = 0.5) -> ConsolidatedBoxes:
    """Cluster boxes across workers and take per-edge medians; keep clusters drawn by >= half the workers."""
    if not answers:
        raise ValueError("no answers to consolidate")
    answers = sorted(answers, key=lambda a: a.worker_id)
    n = len(answers)
    clusters: list[list[Box]] = []
    centres: list[Box] = []
    for answer in answers:
        matches = match_boxes(answer.boxes, centres, iou_threshold)
        matched = {i for i, _, _ in matches}
        for i, j, _ in matches:
            clusters[j].append(answer.boxes[i])
            centres[j] = _median_box(clusters[j])
        for i, box in enumerate(answer.boxes):
            if i not in matched:
                clusters.append([box])
                centres.append(box)
    kept: list[tuple[Box, float]] = []
    scores = []
    for members in clusters:
        centre = _median_box(members)
        score = len(members) / n * statistics.fmean(box_iou(m, centre) for m in members)
        scores.append(score)
        if 2 * len(members) >= n:
            kept.append((centre, score))
    kept.sort(key=lambda kc: (kc[0].left, kc[0].top, kc[0].width, kc[0].height))
    confidence = statistics.fmean(scores) if scores else 1.0
    return ConsolidatedBoxes(
        image_size=majority_size([a.image_size for a in answers]),
        boxes=tuple(Box(_r(b.left), _r(b.top), _r(b.width), _r(b.height)) for b, _ in kept),
        box_confidence=tuple(round(s, 4) for _, s in kept),
        confidence=round(confidence, 4),
    )


def _median_box(boxes: Sequence[Box]) -> Box:
    left = statistics.median(b.left for b in boxes)
    top = statistics.median(b.top for b in boxes)
    right = statistics.median(b.right for b in boxes)
    bottom = statistics.median(b.bottom for b in boxes)
    return Box(left, top, max(0.0, right - left), max(0.0, bottom - top))


def majority_visibility(votes: Sequence[int]) -> int:
    """The most voted visibility; a tie goes to the lower median of the votes, a deterministic middle."""
    counts = Counter(votes)
    best = max(counts.values())
    tied = sorted(v for v, c in counts.items() if c == best)
    if len(tied) == 1:
        return tied[0]
    ordered = sorted(votes)
    middle = ordered[(len(ordered) - 1) // 2]
    return middle if middle in tied else tied[0]


def consolidate_keypoints(answers: Sequence[KeypointAnswer], sigmas: Sequence[float]) -> ConsolidatedPerson:
    """Per point: visibility by majority, coordinates by median over the workers who placed it."""
    if not answers:
        raise ValueError("no answers to consolidate")
    answers = sorted(answers, key=lambda a: a.worker_id)
    k = len(answers[0].points)
    points: list[tuple[float, float, int]] = []
    vote_share: list[float] = []
    for idx in range(k):
        votes = [a.points[idx][2] for a in answers]
        v = majority_visibility(votes)
        placed = [a.points[idx] for a in answers if a.points[idx][2] > 0]
        if v > 0 and placed:
            points.append((_r(statistics.median(p[0] for p in placed)), _r(statistics.median(p[1] for p in placed)), v))
        else:
            v = 0
            points.append((0.0, 0.0, 0))
        vote_share.append(sum(1 for x in votes if x == v) / len(votes))
    area = keypoint_area(points)
    # Spatial agreement: each worker's OKS against the consolidated person, over the points it keeps.
    spatial = [oks(points, [(p[0], p[1]) for p in a.points], area, sigmas) for a in answers] \
        if any(p[2] > 0 for p in points) else [1.0]
    point_conf = []
    for idx in range(k):
        x, y, v = points[idx]
        if v > 0:
            sims = [point_similarity(a.points[idx][0] - x, a.points[idx][1] - y, area, sigmas[idx])
                    if a.points[idx][2] > 0 else 0.0 for a in answers]
            point_conf.append(round(vote_share[idx] * statistics.fmean(sims), 4))
        else:
            point_conf.append(round(vote_share[idx], 4))
    confidence = statistics.fmean(vote_share) * statistics.fmean(spatial)
    return ConsolidatedPerson(
        image_size=majority_size([a.image_size for a in answers]),
        points=tuple(points),
        point_confidence=tuple(point_conf),
        confidence=round(confidence, 4),
    )


# --- gold agreement --------------------------------------------------------------------------------------

def gold_box_agreement(answer: BoxAnswer, gold: GoldItem, iou_threshold: float = 0.5) -> float:
    truth = [Box(b.left, b.top, b.width, b.height) for b in gold.boxes or []]
    return box_agreement(answer.boxes, truth, iou_threshold)


def gold_keypoint_agreement(answer: KeypointAnswer, gold: GoldItem, sigmas: Sequence[float]) -> float:
    """Mean over points: 1 for an agreeing 'outside', the OKS point similarity for an agreeing placed
    point, 0 for a visibility that differs."""
    if gold.person is None:
        return 0.0
    truth = [(k.x, k.y, k.v) for k in gold.person.keypoints]
    if len(truth) != len(answer.points):
        return 0.0
    area = keypoint_area(truth)
    total = 0.0
    for g, a, s in zip(truth, answer.points, sigmas, strict=True):
        if g[2] != a[2]:
            continue
        total += 1.0 if g[2] == 0 else point_similarity(a[0] - g[0], a[1] - g[1], area, s)
    return total / len(truth)


# --- worker reports --------------------------------------------------------------------------------------

class WorkerStats(BaseModel):
    """One worker's record in a job: answers, gold agreement, time."""

    model_config = ConfigDict(extra="ignore")

    worker_id: str
    items: int = 0
    usable: int = 0
    ignored: dict[str, int] = Field(default_factory=dict, description="reason -> count")
    gold_items: int = 0
    gold_agreement_sum: float = 0.0
    seconds_sum: float = 0.0
    seconds_count: int = 0
    excluded: bool = False

    @property
    def gold_agreement(self) -> float | None:
        return self.gold_agreement_sum / self.gold_items if self.gold_items else None

    @property
    def seconds_per_item(self) -> float | None:
        return self.seconds_sum / self.seconds_count if self.seconds_count else None

    def summary(self) -> dict[str, Any]:
        ga, spi = self.gold_agreement, self.seconds_per_item
        return {
            "worker_id": self.worker_id, "items": self.items, "usable": self.usable, "ignored": self.ignored,
            "gold_items": self.gold_items,
            "gold_agreement": round(ga, 4) if ga is not None else None,
            "seconds_per_item": round(spi, 2) if spi is not None else None,
            "excluded": self.excluded,
        }

    def merged(self, other: WorkerStats) -> WorkerStats:
        ignored = Counter(self.ignored)
        ignored.update(other.ignored)
        return WorkerStats(
            worker_id=self.worker_id, items=self.items + other.items, usable=self.usable + other.usable,
            ignored=dict(sorted(ignored.items())), gold_items=self.gold_items + other.gold_items,
            gold_agreement_sum=self.gold_agreement_sum + other.gold_agreement_sum,
            seconds_sum=self.seconds_sum + other.seconds_sum, seconds_count=self.seconds_count + other.seconds_count,
            excluded=self.excluded or other.excluded,
        )


class WorkerReport(BaseModel):
    """Written beside the job output for each consolidation request, and merged per job by the label step."""

    model_config = ConfigDict(extra="ignore")

    job_name: str
    kind: str
    gold_agreement_threshold: float
    objects: int = 0
    labeled: int = 0
    unlabeled: int = 0
    workers: list[WorkerStats] = Field(default_factory=list)

    @property
    def excluded(self) -> list[str]:
        return [w.worker_id for w in self.workers if w.excluded]

    def summary(self) -> dict[str, Any]:
        return {
            "job_name": self.job_name, "kind": self.kind, "gold_agreement_threshold": self.gold_agreement_threshold,
            "objects": self.objects, "labeled": self.labeled, "unlabeled": self.unlabeled,
            "excluded_workers": self.excluded, "workers": [w.summary() for w in self.workers],
        }


def merge_reports(reports: Sequence[WorkerReport]) -> WorkerReport | None:
    """Sum several reports of one job (Ground Truth may call the consolidation more than once)."""
    if not reports:
        return None
    stats: dict[str, WorkerStats] = {}
    for report in reports:
        for w in report.workers:
            stats[w.worker_id] = stats[w.worker_id].merged(w) if w.worker_id in stats else w
    first = reports[0]
    return WorkerReport(
        job_name=first.job_name, kind=first.kind, gold_agreement_threshold=first.gold_agreement_threshold,
        objects=sum(r.objects for r in reports), labeled=sum(r.labeled for r in reports),
        unlabeled=sum(r.unlabeled for r in reports), workers=[stats[k] for k in sorted(stats)],
    )


# --- the whole consolidation request ---------------------------------------------------------------------

@dataclass
class ResolvedObject:
    """A payload object whose answers were fetched: ``answers`` maps worker id -> form content text."""

    dataset_object_id: str
    source: str | None
    answers: list[tuple[str, str]] = field(default_factory=list)
    fetch_errors: dict[str, str] = field(default_factory=dict)


@dataclass
class ConsolidationResult:
    outputs: list[dict[str, Any]]
    report: WorkerReport
    log: list[str]


def consolidate_request(objects: Sequence[ResolvedObject], context: JobContext,
                        prior: WorkerReport | None = None) -> ConsolidationResult:
    """Consolidate one request: parse every answer, score workers on gold, drop those under the threshold,
    consolidate what remains. Deterministic: the same objects and context give the same output."""
    log: list[str] = []
    stats: dict[str, WorkerStats] = {}
    parsed: dict[str, dict[str, BoxAnswer | KeypointAnswer]] = {}
    ignored: dict[str, dict[str, str]] = {}

    def stat(worker: str) -> WorkerStats:
        return stats.setdefault(worker, WorkerStats(worker_id=worker))

    def skip(obj_id: str, worker: str, reason: str) -> None:
        s = stat(worker)
        key = _reason_key(reason)
        s.ignored[key] = s.ignored.get(key, 0) + 1
        ignored.setdefault(obj_id, {})[worker] = reason
        log.append(f"object {obj_id}: answer of worker {worker} ignored: {reason}")

    for obj in sorted(objects, key=lambda o: _sort_key(o.dataset_object_id)):
        parsed[obj.dataset_object_id] = {}
        for worker, reason in sorted(obj.fetch_errors.items()):
            stat(worker).items += 1
            skip(obj.dataset_object_id, worker, reason)
        gold = context.gold_for(obj.dataset_object_id, obj.source)
        for worker, content in sorted(obj.answers):
            s = stat(worker)
            s.items += 1
            try:
                answer: BoxAnswer | KeypointAnswer
                if context.kind == "head-boxes":
                    answer = parse_box_answer(worker, content)
                else:
                    answer = parse_keypoint_answer(worker, content, context.keypoint_names)
            except WorkerAnswerError as exc:
                skip(obj.dataset_object_id, worker, str(exc))
                continue
            s.usable += 1
            if answer.elapsed_seconds is not None:
                s.seconds_sum += answer.elapsed_seconds
                s.seconds_count += 1
            if gold is not None:
                s.gold_items += 1
                s.gold_agreement_sum += (
                    gold_box_agreement(answer, gold, context.box_iou_threshold) if isinstance(answer, BoxAnswer)
                    else gold_keypoint_agreement(answer, gold, context.sigmas)
                )
            parsed[obj.dataset_object_id][worker] = answer

    # Gold agreement so far in this job (earlier requests included) decides who is left out.
    for worker, s in stats.items():
        total = s.merged(_prior_stats(prior, worker)) if prior is not None else s
        ga = total.gold_agreement
        s.excluded = ga is not None and ga < context.gold_agreement_threshold
        if s.excluded:
            log.append(f"worker {worker} excluded: gold agreement {ga:.3f} < {context.gold_agreement_threshold}")

    outputs = []
    labeled = 0
    for obj in sorted(objects, key=lambda o: _sort_key(o.dataset_object_id)):
        answers = parsed[obj.dataset_object_id]
        skipped = dict(ignored.get(obj.dataset_object_id, {}))
        usable = {w: a for w, a in answers.items() if not stats[w].excluded}
        for w in answers:
            if stats[w].excluded:
                skipped[w] = "worker excluded: gold agreement under threshold"
        is_gold = context.gold_for(obj.dataset_object_id, obj.source) is not None
        if usable:
            label = _consolidated_label(list(usable.values()), context)
            info = ConsolidationInfo(
                confidence=label.pop("_confidence"), objects=label.pop("_objects"),
                workers_used=sorted(usable), workers_ignored=dict(sorted(skipped.items())), gold=is_gold,
            )
            labeled += 1
        else:
            reason = "no usable worker answer" if obj.answers or obj.fetch_errors else "no worker answered"
            label = {}
            info = ConsolidationInfo(unlabeled=True, reason=reason, workers_ignored=dict(sorted(skipped.items())),
                                     gold=is_gold)
            log.append(f"object {obj.dataset_object_id}: unlabeled ({reason})")
        label[CONSOLIDATION_KEY] = info.model_dump(mode="json", exclude_none=True)
        outputs.append({
            "datasetObjectId": obj.dataset_object_id,
            "consolidatedAnnotation": {"content": {context.label_attribute: label}},
        })
    report = WorkerReport(
        job_name=context.job_name, kind=context.kind, gold_agreement_threshold=context.gold_agreement_threshold,
        objects=len(objects), labeled=labeled, unlabeled=len(objects) - labeled,
        workers=[stats[k] for k in sorted(stats)],
    )
    return ConsolidationResult(outputs=outputs, report=report, log=log)


def _reason_key(reason: str) -> str:
    """A short bucket for the report: the reason without the numbers and names that vary per answer."""
    words = [w for w in reason.replace(":", " ").split() if not any(ch.isdigit() for ch in w)]
    return " ".join(words[:6])[:60]


def _prior_stats(prior: WorkerReport, worker: str) -> WorkerStats:
    for w in prior.workers:
        if w.worker_id == worker:
            return w
    return WorkerStats(worker_id=worker)


def _sort_key(obj_id: str) -> tuple[int, str]:
    return (int(obj_id), obj_id) if obj_id.isdigit() else (1 << 62, obj_id)


def _consolidated_label(answers: list[BoxAnswer | KeypointAnswer], context: JobContext) -> dict[str, Any]:
    if context.kind == "head-boxes":
        boxes = consolidate_boxes([a for a in answers if isinstance(a, BoxAnswer)], context.box_iou_threshold)
        w, h = boxes.image_size
        return {
            "image_size": [{"width": w, "height": h, "depth": 3}],
            "annotations": [{"class_id": 0, "left": b.left, "top": b.top, "width": b.width, "height": b.height}
                            for b in boxes.boxes],
            "_confidence": boxes.confidence,
            "_objects": list(boxes.box_confidence),
        }
    person = consolidate_keypoints([a for a in answers if isinstance(a, KeypointAnswer)], context.sigmas)
    w, h = person.image_size
    return {
        "image_size": [{"width": w, "height": h, "depth": 3}],
        "schema": context.keypoint_schema,
        "persons": [{
            "keypoints": [{"name": n, "x": p[0], "y": p[1], "v": p[2]}
                          for n, p in zip(context.keypoint_names, person.points, strict=True)],
            "score": person.confidence,
        }],
        "_confidence": person.confidence,
        "_objects": list(person.point_confidence),
    }
