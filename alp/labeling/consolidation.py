"""Consolidation of several workers' answers into one label per object, and of one whole request.

Pure functions over plain data, stdlib and pydantic only (the post-annotation Lambda ships without numpy):

* boxes: clustered across workers by IoU (each worker contributes at most one box per cluster), a cluster
  kept when at least half the workers drew it, its coordinates the per-edge median;
* keypoints: per point, the visibility by majority vote and the coordinates by median over the workers
  who placed the point;
* confidence: a per-object agreement score in [0, 1];
* a request: every answer read and scored on gold, workers under the gold threshold left out, what remains
  consolidated into one :class:`~alp.labeling.contracts.ConsolidatedObject` per object.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from alp.geometry import Box, box_iou, keypoint_area, match_boxes, oks, point_similarity
from alp.labeling.answers import (
    BoxAnswer,
    KeypointAnswer,
    WorkerAnswerError,
    parse_box_answer,
    parse_keypoint_answer,
)
from alp.labeling.contracts import ConsolidatedLabel, ConsolidatedObject, ConsolidationInfo, JobContext
from alp.labeling.worker_reports import WorkerReport, WorkerStats, gold_agreement
from alp.manifest import BoundingBoxLabel, BoxAnnotation, ImageSize, Keypoint, KeypointLabel, PersonKeypoints

EXCLUDED_REASON = "worker excluded: gold agreement under threshold"


def _r(v: float) -> float:
    return round(v, 2)


# --- one object ------------------------------------------------------------------------------------------

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
        score = len(members) / n * statistics.fmean(box_iou(m.xyxy, centre.xyxy) for m in members)
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
    xy, visibility = [(p[0], p[1]) for p in points], [p[2] for p in points]
    spatial = [oks(xy, visibility, [(p[0], p[1]) for p in a.points], area, sigmas) for a in answers] \
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


@dataclass(frozen=True)
class ObjectLabel:
    """One object's consolidated label and how much the workers agreed on it."""

    content: BoundingBoxLabel | KeypointLabel
    confidence: float
    objects: tuple[float, ...]  # per box or per keypoint


def consolidated_label(answers: Sequence[BoxAnswer | KeypointAnswer], context: JobContext) -> ObjectLabel:
    """The label of one object from its usable answers, in the job's label format."""
    if context.kind == "head-boxes":
        boxes = consolidate_boxes([a for a in answers if isinstance(a, BoxAnswer)], context.box_iou_threshold)
        w, h = boxes.image_size
        return ObjectLabel(
            content=BoundingBoxLabel(image_size=[ImageSize(width=w, height=h)], annotations=[
                BoxAnnotation(left=b.left, top=b.top, width=b.width, height=b.height) for b in boxes.boxes]),
            confidence=boxes.confidence, objects=boxes.box_confidence,
        )
    person = consolidate_keypoints([a for a in answers if isinstance(a, KeypointAnswer)], context.sigmas)
    w, h = person.image_size
    keypoints = [Keypoint(name=n, x=p[0], y=p[1], v=p[2])
                 for n, p in zip(context.keypoint_names, person.points, strict=True)]
    return ObjectLabel(
        content=KeypointLabel(image_size=[ImageSize(width=w, height=h)], keypoint_schema=context.keypoint_schema,
                              persons=[PersonKeypoints(keypoints=keypoints, score=person.confidence)]),
        confidence=person.confidence, objects=person.point_confidence,
    )


# --- the whole consolidation request ---------------------------------------------------------------------

@dataclass
class ResolvedObject:
    """A payload object whose answers were fetched: ``answers`` holds (worker id, form content text)."""

    dataset_object_id: str
    source: str | None
    answers: list[tuple[str, str]] = field(default_factory=list)
    fetch_errors: dict[str, str] = field(default_factory=dict)


@dataclass
class ReadAnswers:
    """Every answer of a request, parsed, with the workers' records and why answers were left out."""

    stats: dict[str, WorkerStats] = field(default_factory=dict)
    answers: dict[str, dict[str, BoxAnswer | KeypointAnswer]] = field(default_factory=dict)  # object -> worker
    ignored: dict[str, dict[str, str]] = field(default_factory=dict)  # object -> worker -> reason
    log: list[str] = field(default_factory=list)

    def stat(self, worker: str) -> WorkerStats:
        return self.stats.setdefault(worker, WorkerStats(worker_id=worker))

    def skip(self, obj_id: str, worker: str, reason: str) -> None:
        self.stat(worker).record_ignored(reason)
        self.ignored.setdefault(obj_id, {})[worker] = reason
        self.log.append(f"object {obj_id}: answer of worker {worker} ignored: {reason}")


@dataclass
class ConsolidationResult:
    outputs: list[ConsolidatedObject]
    report: WorkerReport
    log: list[str]


def consolidate_request(objects: Sequence[ResolvedObject], context: JobContext,
                        prior: WorkerReport | None = None) -> ConsolidationResult:
    """Consolidate one request: parse every answer, score workers on gold, drop those under the threshold,
    consolidate what remains. Deterministic: the same objects and context give the same output."""
    ordered = sorted(objects, key=lambda o: _sort_key(o.dataset_object_id))
    read = read_answers(ordered, context)
    exclude_workers(read, context, prior)
    outputs = [consolidate_object(obj, read, context) for obj in ordered]
    labeled = sum(1 for o in outputs if not o.consolidated.info.unlabeled)
    report = WorkerReport(
        job_name=context.job_name, kind=context.kind, gold_agreement_threshold=context.gold_agreement_threshold,
        objects=len(objects), labeled=labeled, unlabeled=len(objects) - labeled,
        workers=[read.stats[k] for k in sorted(read.stats)],
    )
    return ConsolidationResult(outputs=outputs, report=report, log=read.log)


def read_answers(objects: Sequence[ResolvedObject], context: JobContext) -> ReadAnswers:
    """Step 1: parse every answer in the job's form, count it for its worker and score it on gold items."""
    read = ReadAnswers()
    for obj in objects:
        read.answers[obj.dataset_object_id] = {}
        for worker, reason in sorted(obj.fetch_errors.items()):
            read.stat(worker).items += 1
            read.skip(obj.dataset_object_id, worker, reason)
        gold = context.gold_for(obj.dataset_object_id, obj.source)
        for worker, content in sorted(obj.answers):
            stats = read.stat(worker)
            stats.items += 1
            try:
                answer: BoxAnswer | KeypointAnswer
                if context.kind == "head-boxes":
                    answer = parse_box_answer(worker, content)
                else:
                    answer = parse_keypoint_answer(worker, content, context.keypoint_names)
            except WorkerAnswerError as exc:
                read.skip(obj.dataset_object_id, worker, str(exc))
                continue
            stats.record_usable(answer, gold_agreement(answer, gold, context) if gold is not None else None)
            read.answers[obj.dataset_object_id][worker] = answer
    return read


def exclude_workers(read: ReadAnswers, context: JobContext, prior: WorkerReport | None) -> None:
    """Step 2: gold agreement so far in this job (earlier requests included) decides who is left out."""
    for worker, stats in read.stats.items():
        total = stats.merged(prior.stats_of(worker)) if prior is not None else stats
        agreement = total.gold_agreement
        stats.excluded = agreement is not None and agreement < context.gold_agreement_threshold
        if stats.excluded:
            read.log.append(f"worker {worker} excluded: gold agreement {agreement:.3f} "
                            f"< {context.gold_agreement_threshold}")


def consolidate_object(obj: ResolvedObject, read: ReadAnswers, context: JobContext) -> ConsolidatedObject:
    """Step 3: one object's label from the answers of the workers still in, or why it has none."""
    answers = read.answers[obj.dataset_object_id]
    skipped = dict(read.ignored.get(obj.dataset_object_id, {}))
    usable = {w: a for w, a in answers.items() if not read.stats[w].excluded}
    for w in answers:
        if read.stats[w].excluded:
            skipped[w] = EXCLUDED_REASON
    is_gold = context.gold_for(obj.dataset_object_id, obj.source) is not None
    workers_ignored = dict(sorted(skipped.items()))
    if usable:
        label = consolidated_label(list(usable.values()), context)
        consolidated = ConsolidatedLabel(label=label.content.dump(), info=ConsolidationInfo(
            confidence=label.confidence, objects=list(label.objects), workers_used=sorted(usable),
            workers_ignored=workers_ignored, gold=is_gold))
    else:
        reason = "no usable worker answer" if obj.answers or obj.fetch_errors else "no worker answered"
        if workers_ignored:  # say why, so the people who get the item back (and the report) see it
            reason += ": " + "; ".join(sorted(set(workers_ignored.values())))[:300]
        consolidated = ConsolidatedLabel(info=ConsolidationInfo(unlabeled=True, reason=reason,
                                                                workers_ignored=workers_ignored, gold=is_gold))
        read.log.append(f"object {obj.dataset_object_id}: unlabeled ({reason})")
    return ConsolidatedObject(dataset_object_id=obj.dataset_object_id, label_attribute=context.label_attribute,
                              consolidated=consolidated)


def _sort_key(obj_id: str) -> tuple[int, str]:
    return (int(obj_id), obj_id) if obj_id.isdigit() else (1 << 62, obj_id)
