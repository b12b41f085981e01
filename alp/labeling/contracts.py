"""Ground Truth task contracts shared by the two Lambdas, the templates and the label step.

Two custom tasks make up the human labeling of one image:

* ``head-boxes``: one task per image; ``crowd-bounding-box`` prefilled with the model's head boxes. Workers
  fix them and add the heads the model missed.
* ``keypoints``: one task per person (per consolidated head box), so that 2-3 occupants of one frame never
  share a task. The person is highlighted on a reference view; ``crowd-keypoint`` carries the 17 points
  (prefilled from the model's person matched to that head) and one radio row per point says visible,
  occluded or outside.

The models mirror the documented Lambda contracts (events in, responses out) and the files the label step and
the post-annotation Lambda share (the job context, the worker reports' folder); stdlib and pydantic only.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from alp.manifest import BoxAnnotation, ImageSize, PersonKeypoints

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


# --- Lambda responses ------------------------------------------------------------------------------------

class PreAnnotationResponse(_Model):
    """What the pre-annotation Lambda returns: the template's ``task.input`` and the human-task flag."""

    task_input: dict[str, Any] = Field(alias="taskInput")
    is_human_annotation_required: bool = Field(True, alias="isHumanAnnotationRequired")


class ConsolidatedLabel(_Model):
    """The value under ``<label attribute>`` of a consolidated object, as Ground Truth writes it to the output
    manifest: the label content (head boxes or keypoints; empty when unlabeled) plus ``alp-consolidation``."""

    label: dict[str, Any] = Field(default_factory=dict, description="the label without alp-consolidation")
    info: ConsolidationInfo

    @classmethod
    def parse(cls, value: Mapping[str, Any]) -> ConsolidatedLabel:
        return cls(label={k: v for k, v in value.items() if k != CONSOLIDATION_KEY},
                   info=ConsolidationInfo.model_validate(value.get(CONSOLIDATION_KEY) or {}))

    def to_json(self) -> dict[str, Any]:
        return {**self.label, CONSOLIDATION_KEY: self.info.dump()}


class ConsolidatedObject(_Model):
    """One element of the post-annotation Lambda's response:
    ``{"datasetObjectId": ..., "consolidatedAnnotation": {"content": {<label attribute>: <label>}}}``."""

    dataset_object_id: str
    label_attribute: str
    consolidated: ConsolidatedLabel

    @classmethod
    def parse(cls, item: Mapping[str, Any], label_attribute: str) -> ConsolidatedObject:
        return cls(dataset_object_id=str(item["datasetObjectId"]), label_attribute=label_attribute,
                   consolidated=ConsolidatedLabel.parse(item["consolidatedAnnotation"]["content"][label_attribute]))

    @classmethod
    def unlabeled(cls, dataset_object_id: str, label_attribute: str, info: ConsolidationInfo) -> ConsolidatedObject:
        return cls(dataset_object_id=dataset_object_id, label_attribute=label_attribute,
                   consolidated=ConsolidatedLabel(info=info))

    def to_json(self) -> dict[str, Any]:
        return {"datasetObjectId": self.dataset_object_id,
                "consolidatedAnnotation": {"content": {self.label_attribute: self.consolidated.to_json()}}}
