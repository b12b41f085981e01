"""Ground Truth task contracts shared by the two Lambdas, the templates and the label step (stdlib + pydantic).

Two custom tasks make up the human labeling of one image:

* ``head-boxes``: one task per image; ``crowd-bounding-box`` prefilled with the model's head boxes. Workers
  fix them and add the heads the model missed.
* ``keypoints``: one task per person (per consolidated head box), so that 2-3 occupants of one frame never
  share a task. The person is highlighted on a reference view; ``crowd-keypoint`` carries the 17 points
  (prefilled from the model's person matched to that head) and one radio row per point says visible,
  occluded or outside.

The event models mirror the documented Lambda contracts; the pre-annotation logic that turns a manifest line
into ``taskInput`` is pure and lives here so the tests, the local workforce and the Lambda share it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from alp.manifest import (
    PREANNOTATION_KEY,
    BoxAnnotation,
    ImageSize,
    ManifestError,
    ManifestLine,
    PersonKeypoints,
)
from alp.schema import VISIBILITY_NAMES, get_schema

log = logging.getLogger(__name__)

JobKind = Literal["head-boxes", "keypoints"]
JOB_KINDS: tuple[JobKind, ...] = ("head-boxes", "keypoints")
HEAD_LABEL = "head"
TEMPLATE_FILES: dict[str, str] = {"head-boxes": "head-boxes.liquid.html", "keypoints": "keypoints.liquid.html"}

# Form field names: the templates name their elements with these, the consolidation reads them back.
HEAD_ELEMENT = "heads"
KEYPOINT_ELEMENT = "keypoints"
VISIBILITY_PREFIX = "visibility-"
ELAPSED_FIELD = "elapsed-seconds"
VISIBILITY_CHOICES: tuple[str, ...] = ("visible", "occluded", "outside")

# Keys the label step adds to job input lines (Ground Truth passes them through to the output manifest).
PERSON_KEY = "alp-person"            # keypoint tasks: which person of the image, and the prefill
AUDIT_MODEL_KEY = "alp-audit-model"  # audit items: the labels the model would have written
GOLD_MARK_KEY = "alp-gold"           # gold items mixed into a job (their labels live in the job context only)
CONSOLIDATION_KEY = "alp-consolidation"

JOB_CONTEXT_NAME = "alp-job.json"
WORKER_REPORTS_DIR = "alp-worker-reports"
_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_KIND_SHORT = {"head-boxes": "heads", "keypoints": "kpts"}

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
    "model_error": "The model could not process this image.",
}


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --- job naming ------------------------------------------------------------------------------------------

def job_name(prefix: str, kind: JobKind, manifest_text: str) -> str:
    """A labeling-job name derived from the job's input: the same work always gets the same name.

    Ground Truth names are unique per account and Region (case-insensitive), at most 63 characters and must
    match ``^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$``; botocore does not check the pattern, so it is checked here.
    """
    digest = hashlib.sha256(f"{kind}\n{manifest_text}".encode()).hexdigest()[:16]
    clean_prefix = re.sub(r"[^a-zA-Z0-9]+", "-", prefix).strip("-")[:30] or "alp"
    name = f"{clean_prefix}-{_KIND_SHORT[kind]}-{digest}"
    if not _JOB_NAME.match(name):
        raise ValueError(f"derived job name {name!r} is not a valid labeling-job name")
    return name


def is_valid_job_name(name: str) -> bool:
    return bool(_JOB_NAME.match(name))


def job_folder(output_path: str, name: str) -> str:
    """Where Ground Truth writes a job's output: ``<S3OutputPath>/<job name>/``."""
    return output_path.rstrip("/") + f"/{name}/"


def job_folder_from_payload(payload_uri: str, name: str) -> str | None:
    """The job's output folder, recovered from the consolidation payload's documented location
    ``<S3OutputPath>/<job>/annotations/consolidated-annotation/consolidation-request/...``."""
    marker = f"/{name}/annotations/"
    if marker not in payload_uri:
        return None
    return payload_uri.split(marker, 1)[0] + f"/{name}/"


def job_name_from_arn(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


# --- job context: written by the label step, read by the post-annotation Lambda --------------------------

class GoldItem(_Model):
    """A gold item mixed into a job: its known label, never shown to workers."""

    dataset_object_id: str
    source_ref: str
    image_size: ImageSize | None = None
    boxes: list[BoxAnnotation] | None = None
    person: PersonKeypoints | None = None


class JobContext(_Model):
    """``<job folder>/alp-job.json``: what the consolidation needs beyond Ground Truth's event."""

    format_version: Literal[1] = 1
    job_name: str
    kind: JobKind
    label_attribute: str
    keypoint_schema: str = "incabin17"
    keypoint_names: list[str] = Field(default_factory=list)
    sigmas: list[float] = Field(default_factory=list)
    gold_agreement_threshold: float = Field(0.6, ge=0.0, le=1.0)
    box_iou_threshold: float = Field(0.5, gt=0.0, le=1.0)
    gold: list[GoldItem] = Field(default_factory=list)

    def gold_for(self, dataset_object_id: str, source_ref: str | None) -> GoldItem | None:
        """The gold item of an object; the source must match too, so a renumbered object never borrows
        another object's gold label."""
        for item in self.gold:
            if item.dataset_object_id == dataset_object_id and item.source_ref == source_ref:
                return item
        return None


# --- Lambda events ---------------------------------------------------------------------------------------

class PreAnnotationEvent(_Model):
    version: str = "2018-10-16"
    labeling_job_arn: str = Field("", alias="labelingJobArn")
    data_object: dict[str, Any] = Field(alias="dataObject")


class PayloadRef(_Model):
    s3_uri: str = Field(alias="s3Uri")


class PostAnnotationEvent(_Model):
    version: str = "2018-10-16"
    labeling_job_arn: str = Field(alias="labelingJobArn")
    label_categories: list[str] | None = Field(None, alias="labelCategories")
    label_attribute_name: str = Field(alias="labelAttributeName")
    role_arn: str | None = Field(None, alias="roleArn")
    payload: PayloadRef
    output_config: str | None = Field(None, alias="outputConfig")


class AnnotationData(_Model):
    content: str | None = None
    s3_uri: str | None = Field(None, alias="s3Uri")


class WorkerAnnotation(_Model):
    worker_id: str = Field(alias="workerId")
    annotation_data: AnnotationData = Field(alias="annotationData")


class DataObjectRef(_Model):
    s3_uri: str | None = Field(None, alias="s3Uri")
    content: str | None = None


class PayloadObject(_Model):
    """One element of the consolidation payload (a JSON array at ``payload.s3Uri``)."""

    dataset_object_id: str = Field(alias="datasetObjectId")
    data_object: DataObjectRef = Field(default_factory=lambda: DataObjectRef(), alias="dataObject")
    annotations: list[WorkerAnnotation] = Field(default_factory=list)

    @field_validator("dataset_object_id", mode="before")
    @classmethod
    def _as_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v

    @property
    def source(self) -> str | None:
        return self.data_object.s3_uri or self.data_object.content


# --- keypoint tasks: one person of one image -------------------------------------------------------------

class PersonTask(_Model):
    """``alp-person`` on a keypoint-job line: the person (by head box) this task is about."""

    image_key: str
    head_index: int = Field(ge=0)
    head_box: list[float] = Field(min_length=4, max_length=4, description="l, t, w, h in pixels")
    image_size: ImageSize
    persons_in_image: int = Field(1, ge=1)
    keypoint_schema: str = "incabin17"
    prefill: PersonKeypoints | None = None


class ConsolidationInfo(_Model):
    """``alp-consolidation`` inside a consolidated label: how it was reached, or why there is none."""

    unlabeled: bool = False
    reason: str | None = None
    confidence: float | None = Field(None, ge=0.0, le=1.0)
    objects: list[float] = Field(default_factory=list, description="per box or per keypoint confidence")
    workers_used: list[str] = Field(default_factory=list)
    workers_ignored: dict[str, str] = Field(default_factory=dict)
    gold: bool = False


# --- pre-annotation: manifest line -> taskInput ----------------------------------------------------------

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
    if pre is not None and route == "audit":
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
            for k in prefill.keypoints:
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
