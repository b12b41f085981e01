"""The label step: human and audit items of a batch -> labeling jobs -> consolidated labels.

Two jobs per batch, one after the other: ``head-boxes`` (one task per image) and then ``keypoints`` (one
task per consolidated head box, so each task is one person). Job names derive from the items, so a re-run
finds the jobs it created instead of making new ones. Gold items (known labels) are mixed into both jobs to
score workers. Every item ends in ``labeled.jsonl`` or, with a reason, in ``unlabeled.jsonl`` (back to the
queue): failed, stopped or partial jobs and objects without a usable answer.

Outputs under ``<batch_dir>labeling/``: ``labeled.jsonl``, ``unlabeled.jsonl``, ``worker-reports.json``,
``labeling.json`` and one folder per job under ``jobs/`` (input manifest, label categories, job context,
and what Ground Truth or the local workforce wrote).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from alp import storage
from alp.geometry import Box, match_boxes
from alp.labeling.backend import TASK_ID_KEY, ItemOutcome, JobSpec, JobStatus, LabelingBackend
from alp.labeling.contracts import (
    AUDIT_MODEL_KEY,
    GOLD_MARK_KEY,
    HEAD_LABEL,
    JOB_CONTEXT_NAME,
    PERSON_KEY,
    WORKER_REPORTS_DIR,
    GoldItem,
    JobContext,
    JobKind,
    PersonTask,
    job_name,
)
from alp.labeling.worker_reports import WorkerReport, merge_reports
from alp.manifest import (
    PREANNOTATION_KEY,
    BoundingBoxLabel,
    BoxAnnotation,
    BoxMetadata,
    ImageSize,
    KeypointLabel,
    KeypointMetadata,
    ManifestError,
    ManifestLine,
    ObjectConfidence,
    PersonKeypoints,
    PreAnnotation,
    read_manifest,
    utc_now_iso,
    write_manifest,
)
from alp.pixels import image_name
from alp.settings import Settings

log = logging.getLogger(__name__)

UNLABELED_KEY = "alp-unlabeled"
LABELING_KEY = "alp-labeling"
AUDIT_MODEL_FILE = "audit_model.jsonl"
SUMMARY_FILE = "labeling.json"

_TITLES: dict[str, tuple[str, str]] = {
    "head-boxes": ("Box every head in a car-cabin image",
                   "Correct the model's head boxes, delete wrong ones and add the heads it missed."),
    "keypoints": ("Mark the body points of one person, with visibility",
                  "Place the 17 body points of the outlined person and mark each visible, occluded or outside."),
}


class JobRecord(BaseModel):
    name: str
    kind: str
    state: str
    failure_reason: str | None = None
    items: int = 0
    gold: int = 0
    labeled: int = 0
    unlabeled: int = 0
    folder: str


class LabelingPending(Exception):
    """A job is still with people and the step does not wait for it."""

    def __init__(self, record: JobRecord) -> None:
        super().__init__(f"labeling job {record.name} is {record.state}: {record.labeled}/{record.items} labeled")
        self.record = record


class LabelingSummary(BaseModel):
    """``labeling.json``: what the label step did for one batch. ``state`` is ``waiting`` while people are
    still at work on ``waiting_on`` (the step ended without waiting; a completion event runs it again)."""

    batch_dir: str
    backend: str
    state: Literal["complete", "waiting"] = "complete"
    waiting_on: list[JobRecord] = Field(default_factory=list)
    items: int = 0
    audit_items: int = 0
    labeled: int = 0
    unlabeled: int = 0
    unlabeled_reasons: dict[str, int] = Field(default_factory=dict)
    jobs: list[JobRecord] = Field(default_factory=list)
    excluded_workers: list[str] = Field(default_factory=list)
    outputs: dict[str, str] = Field(default_factory=dict)


@dataclass
class _Item:
    task_id: str
    original: dict[str, Any]
    job_line: dict[str, Any]
    is_audit: bool
    unlabeled: tuple[str, str, str] | None = None  # (stage, job, reason)
    head: ItemOutcome | None = None
    persons: dict[int, ItemOutcome] = field(default_factory=dict)
    # which parts kept the model's labels: the head boxes, and persons by consolidated head index
    model_heads: bool = False
    model_persons: set[int] = field(default_factory=set)

    @functools.cached_property
    def proposal(self) -> PreAnnotation | None:
        try:
            return ManifestLine(self.original).preannotation()
        except ManifestError:
            return None


def folder_uri(base: str, *parts: str) -> str:
    """``base`` joined with ``parts``, as a folder (trailing slash) for S3 and local paths alike."""
    return storage.join(base, *parts).rstrip("/") + "/" if parts else base.rstrip("/") + "/"


def labeling_dir(batch_dir: str) -> str:
    return folder_uri(batch_dir, "labeling")


def _route_of(line: ManifestLine) -> str:
    try:
        pre = line.preannotation()
        if pre is not None:
            return pre.route
        route = line.route()
        return route.route if route is not None else "human"
    except ManifestError:
        return "human"


def _hash_order(task_id: str) -> str:
    return hashlib.sha256(task_id.encode()).hexdigest()


def prepare_items(lines: list[ManifestLine], audit_model: dict[str, dict[str, Any]], settings: Settings
                  ) -> tuple[list[_Item], list[tuple[dict[str, Any], str]]]:
    """Job input lines for the batch's human and audit items.

    The model's would-be labels of audit items move from the label attributes (or ``audit_model.jsonl``)
    to ``alp-audit-model``: the job writes the people's labels under those attributes.
    """
    head_attr, kp_attr = settings.labeling.head_label_attribute, settings.labeling.keypoint_label_attribute
    label_keys = (head_attr, f"{head_attr}-metadata", kp_attr, f"{kp_attr}-metadata")
    items: list[_Item] = []
    rejected: list[tuple[dict[str, Any], str]] = []
    seen: set[str] = set()
    for line in lines:
        ref = line.data.get("source-ref")
        if not isinstance(ref, str):
            rejected.append((line.data, "inline 'source' lines cannot be labeled as images"))
            continue
        if ref in seen:
            log.warning("label: %s listed twice in human.jsonl; labeling it once", ref)
            continue
        seen.add(ref)
        is_audit = _route_of(line) == "audit"
        job_line = {k: v for k, v in line.data.items() if k not in label_keys}
        job_line[TASK_ID_KEY] = ref
        if is_audit:
            model = {k: line.data[k] for k in label_keys if k in line.data} or audit_model.get(ref, {})
            if model:
                job_line[AUDIT_MODEL_KEY] = model
        items.append(_Item(task_id=ref, original=line.data, job_line=job_line, is_audit=is_audit))
    return items, rejected


def read_audit_model(inference_dir: str, settings: Settings) -> dict[str, dict[str, Any]]:
    """The model's would-be labels of audit items from ``audit_model.jsonl``, when inference wrote one."""
    uri = inference_dir + AUDIT_MODEL_FILE
    if not storage.exists(uri):
        return {}
    head_attr, kp_attr = settings.labeling.head_label_attribute, settings.labeling.keypoint_label_attribute
    out = {}
    for line in read_manifest(uri):
        ref = line.data.get("source-ref")
        if isinstance(ref, str):
            out[ref] = {k: v for k, v in line.data.items()
                        if k in (head_attr, f"{head_attr}-metadata", kp_attr, f"{kp_attr}-metadata")}
    return out


# --- gold ------------------------------------------------------------------------------------------------

Gold = list[tuple[ManifestLine, BoundingBoxLabel, KeypointLabel | None]]  # gold images with known labels


def select_gold(candidates: list[ManifestLine], exclude: set[str], count: int, salt: str,
                settings: Settings) -> Gold:
    """``count`` gold images with known head boxes, chosen by a hash (deterministic for a batch)."""
    if count <= 0:
        return []
    head_attr, kp_attr = settings.labeling.head_label_attribute, settings.labeling.keypoint_label_attribute
    ranked = []
    for line in candidates:
        ref = line.data.get("source-ref")
        # a dataset line names its pinned copy (a hash): the upload it came from is what the batch may hold
        if not isinstance(ref, str) or {storage.basename(ref), storage.basename(image_name(line))} & exclude:
            continue
        try:
            boxes = line.boxes(head_attr)
            kps = line.keypoints(kp_attr)
        except ManifestError:
            continue
        if boxes is None:
            continue
        ranked.append((hashlib.sha256(f"{salt}|{ref}".encode()).hexdigest(), line, boxes[0],
                       kps[0] if kps is not None else None))
    ranked.sort(key=lambda r: r[0])
    return [(line, boxes, kps) for _, line, boxes, kps in ranked[:count]]


# --- jobs ------------------------------------------------------------------------------------------------

Waiter = Callable[[LabelingBackend, str], JobStatus]  # waits for a job (may return it still unfinished)

@dataclass
class _JobRun:
    spec: JobSpec
    status: JobStatus
    outcomes: list[ItemOutcome]
    gold: int


def _run_job(kind: JobKind, item_lines: list[dict[str, Any]], gold_lines: list[dict[str, Any]],
             gold_items: list[GoldItem], batch_dir: str, settings: Settings, backend: LabelingBackend,
             wait: Waiter) -> _JobRun:
    attr = (settings.labeling.head_label_attribute if kind == "head-boxes"
            else settings.labeling.keypoint_label_attribute)
    item_text = "\n".join(json.dumps(d, sort_keys=True) for d in sorted(item_lines, key=lambda d: d[TASK_ID_KEY]))
    name = job_name(settings.storage.resource_prefix, kind, item_text)
    jobs_dir = folder_uri(labeling_dir(batch_dir), "jobs")
    folder = jobs_dir + name + "/"
    input_uri = folder + "input.manifest"
    categories_uri = folder + "categories.json"
    schema = settings.schema_
    if not storage.exists(input_uri):
        # Gold items are spread through the job by a hash, so they sit among the real work.
        lines = sorted(item_lines + gold_lines, key=lambda d: _hash_order(d[TASK_ID_KEY]))
        index = {d[TASK_ID_KEY]: i for i, d in enumerate(lines)}
        gold = [g.model_copy(update={"dataset_object_id": str(index[g.dataset_object_id])}) for g in gold_items]
        context = JobContext(
            job_name=name, kind=kind, label_attribute=attr, keypoint_schema=schema.name,
            keypoint_names=list(schema.names), sigmas=list(schema.sigmas),
            gold_agreement_threshold=settings.labeling.gold_agreement_threshold, gold=gold,
        )
        labels = [HEAD_LABEL] if kind == "head-boxes" else list(schema.names)
        storage.write_text(categories_uri, json.dumps(
            {"document-version": "2018-11-28", "labels": [{"label": label} for label in labels]}, indent=2),
            content_type="application/json")
        storage.write_text(folder + JOB_CONTEXT_NAME, context.model_dump_json(indent=2),
                           content_type="application/json")
        write_manifest(input_uri, [ManifestLine(d) for d in lines])  # last: its presence means "job files ready"
    title, description = _TITLES[kind]
    spec = JobSpec(
        name=name, kind=kind, label_attribute=attr, input_manifest_uri=input_uri, output_path=jobs_dir,
        label_category_uri=categories_uri, template_uri=backend.template_uri(kind), title=title,
        description=description, objects=len(item_lines) + len(gold_lines),
    )
    status = backend.create_job(spec)
    log.info("label: %s job %s is %s", kind, name, status.state)
    if not status.done:
        status = wait(backend, name)
    if not status.done:
        raise LabelingPending(JobRecord(name=name, kind=kind, state=status.state, items=status.total or 0,
                                        labeled=status.labeled or 0, folder=spec.folder))
    outcomes = backend.read_output(spec, status)
    return _JobRun(spec=spec, status=status, outcomes=outcomes, gold=len(gold_lines))


def _gold_head_lines(gold: Gold) -> tuple[list[dict[str, Any]], list[GoldItem]]:
    lines, items = [], []
    for line, boxes, _ in gold:
        task_id = f"gold:{line.source_ref}"
        lines.append({"source-ref": line.source_ref, TASK_ID_KEY: task_id, GOLD_MARK_KEY: True})
        items.append(GoldItem(dataset_object_id=task_id, source_ref=line.source_ref, image_size=boxes.size,
                              boxes=boxes.annotations))
    return lines, items


def _gold_person_lines(gold: Gold, limit: int, schema_name: str) -> tuple[list[dict[str, Any]], list[GoldItem]]:
    lines: list[dict[str, Any]] = []
    items: list[GoldItem] = []
    for line, boxes, kps in gold:
        if kps is None:
            continue
        for person in kps.persons:
            idx = person.head_box_index
            if idx is None or idx >= len(boxes.annotations) or len(lines) >= limit:
                continue
            a = boxes.annotations[idx]
            task = PersonTask(image_key=line.source_ref, head_index=idx, head_box=[a.left, a.top, a.width, a.height],
                              image_size=boxes.size, persons_in_image=len(boxes.annotations),
                              keypoint_schema=schema_name)
            task_id = f"gold:{line.source_ref}#{idx}"
            lines.append({"source-ref": line.source_ref, TASK_ID_KEY: task_id, GOLD_MARK_KEY: True,
                          PERSON_KEY: task.dump()})
            items.append(GoldItem(dataset_object_id=task_id, source_ref=line.source_ref, image_size=boxes.size,
                                  person=person))
    return lines, items


def _model_person_for(item: _Item, head_boxes: list[Box]) -> dict[int, tuple[int, PersonKeypoints]]:
    """The model's person (its index among the proposal's persons, and the person) for each consolidated head
    box, matched through the model's own head boxes."""
    pre = item.proposal
    if pre is None or not pre.persons or not pre.boxes:
        return {}
    model_boxes = [Box(b.left, b.top, b.width, b.height) for b in pre.boxes]
    by_model_box = {p.head_box_index: (k, p) for k, p in enumerate(pre.persons) if p.head_box_index is not None}
    out = {}
    for i, j, _ in match_boxes(head_boxes, model_boxes, 0.5):
        if j in by_model_box:
            out[i] = by_model_box[j]
    return out


def _model_heads_outcome(item: _Item, pre: PreAnnotation) -> ItemOutcome:
    """The model's head boxes as the item's head-box outcome: the part the judgement accepted."""
    assert pre.image_size is not None
    label = BoundingBoxLabel(image_size=[pre.image_size], annotations=[
        BoxAnnotation(left=b.left, top=b.top, width=b.width, height=b.height) for b in pre.boxes])
    return ItemOutcome(task_id=item.task_id, line=item.job_line, label=label.dump(),
                       metadata={"confidences": [b.score for b in pre.boxes]})


def _model_person_outcome(item: _Item, size: ImageSize, person: PersonKeypoints) -> ItemOutcome:
    label = KeypointLabel(image_size=[size], persons=[person])
    return ItemOutcome(task_id=item.task_id, line=item.job_line, label=label.dump())


def _needs_head_task(item: _Item) -> bool:
    pre = item.proposal
    return pre is None or pre.image_size is None or pre.part_route(None) != "auto"


def _person_lines(items: list[_Item], settings: Settings) -> list[dict[str, Any]]:
    """One keypoint task per consolidated head box, except the persons whose part the judgement accepted: those
    keep the model's keypoints (the person is found through its head box, which people may have corrected)."""
    lines = []
    schema_name = settings.schema_.name
    for item in items:
        if item.unlabeled is not None or item.head is None or item.head.label is None:
            continue
        label = BoundingBoxLabel.model_validate(item.head.label)
        boxes = [Box(a.left, a.top, a.width, a.height) for a in label.annotations]
        model = _model_person_for(item, boxes)
        pre = item.proposal
        for idx, a in enumerate(label.annotations):
            proposed = model.get(idx)
            if pre is not None and proposed is not None and pre.part_route(proposed[0]) == "auto":
                item.persons[idx] = _model_person_outcome(item, label.size, proposed[1])
                item.model_persons.add(idx)
                continue
            blind = pre is not None and proposed is not None and pre.blind(proposed[0])
            task = PersonTask(image_key=item.task_id, head_index=idx, head_box=[a.left, a.top, a.width, a.height],
                              image_size=label.size, persons_in_image=len(boxes), keypoint_schema=schema_name,
                              prefill=proposed[1] if proposed is not None and not blind else None)
            line = {k: v for k, v in item.job_line.items() if k != PREANNOTATION_KEY}
            line[PERSON_KEY] = task.dump()
            line[TASK_ID_KEY] = f"{item.task_id}#{idx}"
            lines.append(line)
    return lines


# --- assembly --------------------------------------------------------------------------------------------

def _person_bbox(points: list[tuple[float, float, int]], head: Box) -> list[float]:
    xs = [p[0] for p in points if p[2] > 0] + [head.left, head.right]
    ys = [p[1] for p in points if p[2] > 0] + [head.top, head.bottom]
    return [round(min(xs), 2), round(min(ys), 2), round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2)]


def assemble_label(item: _Item, head_job: str | None, kp_job: str | None, settings: Settings) -> ManifestLine:
    """The labeled line of one image: its batch line, the head boxes and keypoints from people, or from the model
    for the parts the judgement accepted (``alp-labeling.parts`` says which). Each label attribute says
    ``human-annotated: "yes"`` only when all of it is people's."""
    assert item.head is not None and item.head.label is not None
    head_attr, kp_attr = settings.labeling.head_label_attribute, settings.labeling.keypoint_label_attribute
    boxes = BoundingBoxLabel.model_validate(item.head.label)
    info = item.head.consolidation
    pre = item.proposal
    created = str(item.head.metadata.get("creation-date") or utc_now_iso())
    model_job = f"auto-{pre.bundle_id}" if pre is not None and pre.bundle_id else "auto"
    if item.model_heads:
        model_conf = [ObjectConfidence(confidence=c) for c in item.head.metadata.get("confidences", [])]
        box_meta = BoxMetadata(objects=model_conf, human_annotated="no", job_name=model_job, creation_date=created)
    else:
        box_meta = BoxMetadata(
            objects=[ObjectConfidence(confidence=c) for c in (info.objects if info else [])] or
            [ObjectConfidence(confidence=1.0) for _ in boxes.annotations],
            confidence=info.confidence if info else None, job_name=f"labeling-job/{head_job}", creation_date=created,
        )
    persons = []
    confidences = []
    for idx, a in enumerate(boxes.annotations):
        outcome = item.persons[idx]
        assert outcome.label is not None
        kp = KeypointLabel.model_validate(outcome.label)
        person = kp.persons[0]
        points = [(k.x, k.y, k.v) for k in person.keypoints]
        persons.append(person.model_copy(update={
            "head_box_index": idx, "bbox": _person_bbox(points, Box(a.left, a.top, a.width, a.height))}))
        if outcome.consolidation and outcome.consolidation.confidence is not None:
            confidences.append(outcome.consolidation.confidence)
    kp_label = KeypointLabel(image_size=boxes.image_size, keypoint_schema=settings.schema_.name, persons=persons)
    people_persons = [idx for idx in range(len(persons)) if idx not in item.model_persons]
    kp_meta = KeypointMetadata(confidence=min(confidences) if confidences else None,
                               human_annotated="no" if item.model_persons else "yes",
                               job_name=f"labeling-job/{kp_job}" if kp_job and people_persons else model_job,
                               creation_date=created)
    keep = {k: v for k, v in item.original.items()
            if k not in (head_attr, f"{head_attr}-metadata", kp_attr, f"{kp_attr}-metadata", PREANNOTATION_KEY)}
    if AUDIT_MODEL_KEY in item.job_line:
        keep[AUDIT_MODEL_KEY] = item.job_line[AUDIT_MODEL_KEY]
    keep[LABELING_KEY] = {"head_job": head_job if not item.model_heads else None,
                          "keypoint_job": kp_job if people_persons else None, "audit": item.is_audit,
                          "parts": {"heads": "model" if item.model_heads else "people",
                                    "persons": ["model" if idx in item.model_persons else "people"
                                                for idx in range(len(persons))]}}
    return ManifestLine(keep).with_boxes(head_attr, boxes, box_meta).with_keypoints(kp_attr, kp_label, kp_meta)


# --- the step --------------------------------------------------------------------------------------------


def run_label_step(batch_dir: str, settings: Settings, backend: LabelingBackend, *,
                   gold_candidates: Callable[[], list[ManifestLine]] | None = None,
                   wait: Waiter | None = None) -> LabelingSummary:
    """Label the human and audit items of ``batch_dir`` and write the results under ``labeling/``.

    ``gold_candidates`` supplies lines with known labels for gold items (default: the backend's own);
    it is only called when there is work to label. ``wait`` decides how long to wait for a job people are
    still working on (default: not at all); a job still unfinished after it leaves the batch ``waiting``:
    ``labeling.json`` says on which job, and running the step again goes on from there (job names derive from
    the items, so it finds the jobs it made). A batch whose labeling is complete is never labeled again.
    """
    batch_dir = batch_dir.rstrip("/") + "/"
    done = read_summary(batch_dir)
    if done is not None and done.state == "complete":
        return done
    inference_dir = folder_uri(batch_dir, "inference")
    human = read_manifest(inference_dir + "human.jsonl")
    items, rejected = prepare_items(human, read_audit_model(inference_dir, settings), settings)
    runs: list[_JobRun] = []
    if items:
        candidates = gold_candidates() if gold_candidates is not None else backend.gold_candidates()
        exclude = {storage.basename(i.task_id) for i in items}
        gold = select_gold(candidates, exclude, settings.labeling.gold_items_per_job, batch_dir, settings)
        try:
            runs = _label_items(items, gold, batch_dir, settings, backend, wait or _no_wait)
        except LabelingPending as pending:
            summary = LabelingSummary(batch_dir=batch_dir, backend=backend.name, items=len(items),
                                      audit_items=sum(1 for i in items if i.is_audit), state="waiting",
                                      waiting_on=[pending.record])
            storage.write_text(labeling_dir(batch_dir) + SUMMARY_FILE, summary.model_dump_json(indent=2),
                               content_type="application/json")
            return summary
    summary = LabelingSummary(batch_dir=batch_dir, backend=backend.name, items=len(items),
                              audit_items=sum(1 for i in items if i.is_audit))
    _write_results(summary, items, rejected, runs, settings)
    return summary


def _no_wait(backend: LabelingBackend, name: str) -> JobStatus:
    return backend.describe_job(name)


def read_summary(batch_dir: str) -> LabelingSummary | None:
    """The batch's ``labeling.json``, or ``None`` before the label step ran."""
    uri = labeling_dir(batch_dir.rstrip("/") + "/") + SUMMARY_FILE
    if not storage.exists(uri):
        return None
    return LabelingSummary.model_validate_json(storage.read_text(uri))


def labeling_waiting(batch_dir: str) -> LabelingSummary | None:
    """The summary while the batch's labeling is with people; ``None`` otherwise."""
    summary = read_summary(batch_dir)
    return summary if summary is not None and summary.state == "waiting" else None


def labeling_complete(batch_dir: str) -> LabelingSummary | None:
    """The summary when the batch's labeling is complete; ``None`` while it is waiting or has not run. Merge and
    Requeue run only then, so a completion event that arrives early, twice or late changes nothing."""
    summary = read_summary(batch_dir)
    return summary if summary is not None and summary.state == "complete" else None


def _label_items(items: list[_Item], gold: Gold, batch_dir: str, settings: Settings, backend: LabelingBackend,
                 wait: Waiter) -> list[_JobRun]:
    """The head-box job over every item, then the keypoint job over every person found; each item keeps its
    outcomes or the first reason it has none."""
    runs = []
    head_items = [i for i in items if _needs_head_task(i)]
    with_head_task = {i.task_id for i in head_items}
    for item in items:
        pre = item.proposal
        if item.task_id not in with_head_task and pre is not None:  # the judgement accepted the model's heads
            item.head, item.model_heads = _model_heads_outcome(item, pre), True
    if head_items:
        gold_lines, gold_items = _gold_head_lines(gold)
        head_run = _run_job("head-boxes", [i.job_line for i in head_items], gold_lines, gold_items, batch_dir,
                            settings, backend, wait)
        _take_head_outcomes(head_items, head_run)
        runs.append(head_run)
    person_lines = _person_lines(items, settings)
    if not person_lines:
        return runs
    gold_p_lines, gold_p_items = _gold_person_lines(gold, settings.labeling.gold_items_per_job,
                                                    settings.schema_.name)
    kp_run = _run_job("keypoints", person_lines, gold_p_lines, gold_p_items, batch_dir, settings, backend, wait)
    _take_person_outcomes(items, kp_run)
    return [*runs, kp_run]


def _take_head_outcomes(items: list[_Item], run: _JobRun) -> None:
    by_id = {o.task_id: o for o in run.outcomes}
    for item in items:
        outcome = by_id.get(item.task_id)
        if outcome is None or outcome.label is None:
            reason = outcome.unlabeled_reason if outcome else "missing from the job's input"
            item.unlabeled = ("head-boxes", run.spec.name, reason or "no label")
        else:
            item.head = outcome


def _take_person_outcomes(items: list[_Item], run: _JobRun) -> None:
    by_id = {o.task_id: o for o in run.outcomes}
    for item in items:
        if item.unlabeled is not None or item.head is None:
            continue
        n = len(BoundingBoxLabel.model_validate(item.head.label).annotations)
        for idx in range(n):
            if idx in item.model_persons:
                continue
            outcome = by_id.get(f"{item.task_id}#{idx}")
            if outcome is None or outcome.label is None:
                reason = outcome.unlabeled_reason if outcome else "missing from the job's input"
                item.unlabeled = ("keypoints", run.spec.name, f"person {idx + 1}: {reason}")
                break
            item.persons[idx] = outcome


def _write_results(summary: LabelingSummary, items: list[_Item], rejected: list[tuple[dict[str, Any], str]],
                   runs: list[_JobRun], settings: Settings) -> None:
    """``labeled.jsonl``, ``unlabeled.jsonl``, ``worker-reports.json`` and ``labeling.json``; fills ``summary``."""
    out_dir = labeling_dir(summary.batch_dir)
    labeled_lines, unlabeled_lines, reasons = _sort_items(items, rejected, runs, settings)
    outputs = {
        "labeled": write_manifest(out_dir + "labeled.jsonl", labeled_lines),
        "unlabeled": write_manifest(out_dir + "unlabeled.jsonl", unlabeled_lines),
    }
    reports, excluded = _worker_reports(runs)
    outputs["worker_reports"] = storage.write_text(out_dir + "worker-reports.json",
                                                   json.dumps(reports, indent=2, sort_keys=True),
                                                   content_type="application/json")
    summary.labeled, summary.unlabeled = len(labeled_lines), len(unlabeled_lines)
    summary.unlabeled_reasons = dict(sorted(reasons.items()))
    summary.excluded_workers = sorted(excluded)
    summary.jobs = [_job_record(r) for r in runs]
    summary.outputs = {**outputs, "summary": out_dir + SUMMARY_FILE}
    storage.write_text(out_dir + SUMMARY_FILE, summary.model_dump_json(indent=2), content_type="application/json")


def _sort_items(items: list[_Item], rejected: list[tuple[dict[str, Any], str]], runs: list[_JobRun],
                settings: Settings) -> tuple[list[ManifestLine], list[ManifestLine], dict[str, int]]:
    """Labeled lines, unlabeled lines (with stage, job and reason) and the count of each unlabeled reason."""
    labeled_lines = []
    unlabeled_lines = [ManifestLine({**data, UNLABELED_KEY: {"stage": "input", "reason": reason}})
                       for data, reason in rejected if "source-ref" in data or "source" in data]
    reasons: dict[str, int] = {}
    names = {run.spec.kind: run.spec.name for run in runs}
    for item in items:
        if item.unlabeled is None:
            labeled_lines.append(assemble_label(item, names.get("head-boxes"), names.get("keypoints"), settings))
            continue
        stage, job, reason = item.unlabeled
        unlabeled_lines.append(ManifestLine({**item.original, UNLABELED_KEY: {"stage": stage, "job": job,
                                                                               "reason": reason}}))
        key = f"{stage}: {reason.split(':')[0]}"
        reasons[key] = reasons.get(key, 0) + 1
    return labeled_lines, unlabeled_lines, reasons


def _worker_reports(runs: list[_JobRun]) -> tuple[dict[str, Any], set[str]]:
    reports = {}
    excluded: set[str] = set()
    for run in runs:
        report = _job_worker_report(run.spec)
        if report is not None:
            reports[run.spec.name] = report.summary()
            excluded.update(report.excluded)
    return reports, excluded


def _job_record(run: _JobRun) -> JobRecord:
    return JobRecord(
        name=run.spec.name, kind=run.spec.kind, state=run.status.state, failure_reason=run.status.failure_reason,
        items=run.spec.objects - run.gold, gold=run.gold,
        labeled=sum(1 for o in run.outcomes if o.label is not None and GOLD_MARK_KEY not in o.line),
        unlabeled=sum(1 for o in run.outcomes if o.label is None and GOLD_MARK_KEY not in o.line),
        folder=run.spec.folder,
    )


def _job_worker_report(spec: JobSpec) -> WorkerReport | None:
    reports = []
    for uri in storage.list_uris(spec.folder + WORKER_REPORTS_DIR + "/"):
        try:
            reports.append(WorkerReport.model_validate_json(storage.read_text(uri)))
        except ValueError as exc:
            log.warning("label: unreadable worker report %s: %s", uri, exc)
    return merge_reports(reports)
