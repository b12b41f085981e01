"""Scale-out: the same ``alp infer-batch`` as a SageMaker Processing job over manifest shards.

A batch above ``inference.processing_threshold_images`` images runs as a Processing job with
``compute.processing_instance_count`` instances instead of inside the CodeBuild container. Every instance
runs the identical command; each takes its share of the manifest by a stable hash of the image key (its
index comes from SageMaker's ``/opt/ml/config/resourceconfig.json``), writes its outputs under
``shard-IIIII-of-NNNNN/``, and SageMaker uploads them to ``<out>shards/<job name>/`` (:func:`job_output_uri`).
The step then merges that job's shards into the top-level files in the manifest's order, with one summary and
the invariant checked across shards.

The job is named by a digest of what it computes (the manifest's content, the bundle id, the effective
settings, where its shards go: :func:`processing_job_name`), so a retried Infer step finds the job it started: it waits for one
that runs, merges the shards of one that completed, and starts the next attempt (``-a2``...) only after one
that failed or was stopped (:mod:`alp.sagemaker_jobs`). Each job's shards stay under its own name, so a merge
never mixes the shards of two attempts.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from alp import aws, sagemaker_jobs, storage
from alp.manifest import ROUTES, ManifestLine
from alp.settings import PROCESSING_MAX_RUNTIME_LIMIT_SECONDS, Settings
from inference.runner import (
    OUTPUT_FILES,
    SUMMARY_FILE,
    BatchSummary,
    SpooledOutputs,
    line_key,
    parse_batch_lines,
)
from inference.sharding import shard_dir, shard_of

PROCESSING_INPUT_DIR = "/opt/ml/processing/input/manifest"
PROCESSING_OUTPUT_DIR = "/opt/ml/processing/output"
RESOURCE_CONFIG = "/opt/ml/config/resourceconfig.json"
# The image the stack builds from docker/processing.Dockerfile reaches the Infer step as this environment
# variable of its CodeBuild project (stacks/pipeline_stack.py); inference.processing_image_uri overrides it.
PROCESSING_IMAGE_ENV = "ALP_PROCESSING_IMAGE_URI"
# How long the Infer step waits beyond the job's own MaxRuntimeInSeconds: SageMaker stops the job at that
# limit, so this covers only instance start-up and the output upload. It stays inside the margin the stack
# adds to the Infer build's timeout (alp.settings.PROCESSING_WAIT_MARGIN_MINUTES), so the wait gives up with
# a message before CodeBuild ends the build.
PROCESSING_START_UP_SECONDS = 30 * 60
Executor = Literal["codebuild", "processing"]


class ProcessingJobFailed(RuntimeError):
    """The Processing job ended Failed or Stopped, or did not finish in time."""


def shard_from_resource_config(path: str | Path = RESOURCE_CONFIG) -> tuple[int, int]:
    """(index, count) of this Processing instance from SageMaker's resource config."""
    config = json.loads(Path(path).read_text())
    hosts = sorted(config["hosts"])
    return hosts.index(config["current_host"]), len(hosts)


def processing_image_uri(settings: Settings) -> str | None:
    """The Processing container image: ``inference.processing_image_uri`` when set, else the image the stack
    built (``$ALP_PROCESSING_IMAGE_URI`` on the Infer build), else None."""
    return settings.inference.processing_image_uri or os.environ.get(PROCESSING_IMAGE_ENV) or None


def processing_wait_seconds(settings: Settings) -> float:
    """How long to wait for a Processing job of these settings before giving up on it."""
    return float(settings.inference.processing_max_runtime_seconds + PROCESSING_START_UP_SECONDS)


def choose_executor(image_count: int, settings: Settings) -> Executor:
    """CodeBuild for batches up to the threshold, SageMaker Processing above it.

    Processing needs a container image with this package (:func:`processing_image_uri`); without one,
    large batches stay on CodeBuild (slower, but nothing fails for want of an image)."""
    if image_count > settings.inference.processing_threshold_images and processing_image_uri(settings):
        return "processing"
    return "codebuild"


def count_manifest_lines(manifest_uri: str) -> int:
    return sum(1 for _ in storage.iter_lines(manifest_uri))


def processing_job_name(settings: Settings, batch_id: str, inputs_sha256: str, attempt: int = 1) -> str:
    """``<prefix>-infer-<batch id>-<inputs digest>[-a<attempt>]`` (63 characters at most; the batch id is cut
    first). ``inputs_sha256`` covers what the job computes: the manifest's content, the bundle id, the effective
    settings (judgement included) and the output location."""
    return sagemaker_jobs.job_name(settings.storage.resource_prefix, "infer", batch_id, inputs_sha256, attempt)


def job_output_uri(out_uri: str, job_name: str) -> str:
    """Where a job's instances upload their shards: under the job's own name, beside the merged outputs."""
    return storage.join(out_uri, "shards", job_name) + "/"


def build_processing_request(settings: Settings, *, job_name: str, manifest_uri: str, out_uri: str,
                             bundle_uri: str | None, role_arn: str, settings_uri: str | None = None,
                             image_uri: str | None = None, instance_count: int | None = None,
                             judgement: str | None = None) -> dict[str, Any]:
    """The ``CreateProcessingJob`` request for one batch (``bundle_uri`` None = cold start)."""
    if not storage.is_s3(manifest_uri) or not storage.is_s3(out_uri):
        raise ValueError("a Processing job reads and writes S3: --manifest and --out must be s3:// URIs")
    image = image_uri or processing_image_uri(settings)
    if not image:
        raise ValueError(f"settings.inference.processing_image_uri is not set and ${PROCESSING_IMAGE_ENV} is "
                         "empty: the Processing job needs a container image with the alp package installed")
    count = instance_count or settings.compute.processing_instance_count
    local_manifest = f"{PROCESSING_INPUT_DIR}/{storage.basename(manifest_uri)}"
    args = ["--manifest", local_manifest, "--out", PROCESSING_OUTPUT_DIR, "--shard-index", "auto",
            "--shard-count", str(count), "--executor", "local"]
    args += ["--bundle", bundle_uri] if bundle_uri else ["--no-model"]
    if judgement:
        args += ["--judgement", judgement]  # the batch's audit seed and learned thresholds (JSON)
    if bundle_uri and settings.inference.head_detector_backend == "rekognition-custom-labels":
        args.append("--head-model-held")  # the submitting Infer step starts and stops the model around the job
    request: dict[str, Any] = {
        "ProcessingJobName": job_name,
        "RoleArn": role_arn,
        "AppSpecification": {
            "ImageUri": image,
            "ContainerEntrypoint": ["alp", "infer-batch"],
            "ContainerArguments": args,
        },
        "ProcessingInputs": [{
            "InputName": "manifest",
            "S3Input": {
                "S3Uri": manifest_uri, "LocalPath": PROCESSING_INPUT_DIR, "S3DataType": "S3Prefix",
                "S3InputMode": "File", "S3DataDistributionType": "FullyReplicated",
            },
        }],
        "ProcessingOutputConfig": {"Outputs": [{
            "OutputName": "inference",
            "S3Output": {"S3Uri": out_uri.rstrip("/"), "LocalPath": PROCESSING_OUTPUT_DIR,
                         "S3UploadMode": "EndOfJob"},
        }]},
        "ProcessingResources": {"ClusterConfig": {
            "InstanceCount": count,
            "InstanceType": settings.compute.processing_instance_type,
            "VolumeSizeInGB": settings.inference.processing_volume_gb,
        }},
        "StoppingCondition": {"MaxRuntimeInSeconds": settings.inference.processing_max_runtime_seconds},
        "Tags": [{"Key": "alp:step", "Value": "infer-batch"}],
    }
    # The container's boto3 clients (alp.aws) take their Region from the environment; the jobs run in the
    # stack's Region, and the Rekognition head backend must call the Region its model lives in.
    request["Environment"] = {"AWS_DEFAULT_REGION": settings.region}
    if settings_uri:
        request["Environment"]["ALP_SETTINGS_URI"] = settings_uri
    return request


def submit_processing_job(request: dict[str, Any]) -> str:
    response = aws.client("sagemaker").create_processing_job(**request)
    return str(response["ProcessingJobArn"])


def processing_job_status(name: str) -> str | None:
    """The job's ``ProcessingJobStatus``; None when no job has that name."""
    sm = aws.client("sagemaker")
    job = sagemaker_jobs.describe_or_none(lambda: sm.describe_processing_job(ProcessingJobName=name))
    return None if job is None else str(job["ProcessingJobStatus"])


def find_processing_job(name_of: Callable[[int], str]) -> sagemaker_jobs.AttemptPlan:
    """Which attempt of this batch's job the step works with (start it, wait for it, or merge its shards)."""
    return sagemaker_jobs.plan_attempt(name_of, processing_job_status)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def start_or_wait(plan: sagemaker_jobs.AttemptPlan, request_for: Callable[[str], dict[str, Any]], *,
                  timeout_seconds: float, poll_seconds: float = 30.0, sleep: Callable[[float], None] = time.sleep,
                  log: Callable[[str], None] = _stderr) -> dict[str, Any]:
    """Carry out ``plan``: create the job when it has to start, then wait until it completed; returns the final
    DescribeProcessingJob answer. ``request_for(name)`` is built only when a job starts."""
    if plan.action == "start":
        try:
            arn = submit_processing_job(request_for(plan.name))
            earlier = f" (after {'; '.join(plan.earlier_failures)})" if plan.earlier_failures else ""
            log(f"infer-batch: started processing job {arn}, attempt {plan.attempt}{earlier}")
        except Exception as exc:
            if not sagemaker_jobs.name_taken(exc):
                raise
            log(f"infer-batch: processing job {plan.name} was started a moment ago by another run of this step; "
                "waiting for it")
    elif plan.action == "wait":
        log(f"infer-batch: processing job {plan.name} was started by an earlier run of this step and still runs; "
            "waiting for it (no new job)")
    else:
        log(f"infer-batch: processing job {plan.name} completed already; merging its shards (no new job)")
    return wait_processing_job(plan.name, poll_seconds=poll_seconds, timeout_seconds=timeout_seconds, sleep=sleep)


def wait_processing_job(job_name: str, *, poll_seconds: float = 30.0,
                        timeout_seconds: float = PROCESSING_MAX_RUNTIME_LIMIT_SECONDS + PROCESSING_START_UP_SECONDS,
                        sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Poll until the job ends; raise :class:`ProcessingJobFailed` unless it completed.

    The default timeout covers the longest job the settings allow; pass :func:`processing_wait_seconds` to
    give up as soon as this job's own limit (plus start-up) has passed."""
    sm = aws.client("sagemaker")
    deadline = time.monotonic() + timeout_seconds
    while True:
        job: dict[str, Any] = sm.describe_processing_job(ProcessingJobName=job_name)
        status = job.get("ProcessingJobStatus")
        if status == "Completed":
            return job
        if status in ("Failed", "Stopped"):
            raise ProcessingJobFailed(f"processing job {job_name} {status}: {job.get('FailureReason', '')}; "
                                      "running the step again starts the next attempt")
        if time.monotonic() > deadline:
            raise ProcessingJobFailed(f"processing job {job_name} still {status} after {timeout_seconds:.0f} s; "
                                      "running the step again waits for it")
        sleep(poll_seconds)


class _ShardReader:
    """The output files of one shard, read line by line."""

    def __init__(self, shards_uri: str, shard_index: int, shard_count: int):
        # one instance routes the whole manifest and writes at the top of its output, not in a shard folder
        base = shard_dir(shards_uri, shard_index, shard_count) if shard_count > 1 else shards_uri
        self.iters: dict[str, Iterator[str]] = {}
        self.heads: dict[str, ManifestLine | None] = {}
        for kind, name in OUTPUT_FILES.items():
            uri = storage.join(base, name)
            self.iters[kind] = storage.iter_lines(uri) if storage.exists(uri) else iter(())
            self.heads[kind] = self._next(kind)
        self.summary = BatchSummary.model_validate_json(storage.read_text(storage.join(base, SUMMARY_FILE)))

    def _next(self, kind: str) -> ManifestLine | None:
        text = next(self.iters[kind], None)
        return None if text is None else ManifestLine.parse(text)

    def take(self, kind: str) -> ManifestLine:
        line = self.heads[kind]
        if line is None:
            raise ValueError(f"shard output {kind} ended early")
        self.heads[kind] = self._next(kind)
        return line

    def take_for(self, key: str) -> tuple[str, ManifestLine]:
        for kind in ("auto", "human", "quarantine"):
            head = self.heads[kind]
            if head is not None and line_key(head) == key:
                return kind, self.take(kind)
        raise ValueError(f"no shard output line for {key[:120]!r}: the shard outputs do not match the manifest")


def merge_shards(manifest_uri: str, out_uri: str, shard_count: int, shards_uri: str | None = None) -> BatchSummary:
    """Merge the ``shard-*`` outputs under ``shards_uri`` (default ``out_uri``; a job's: :func:`job_output_uri`)
    into the top-level files of ``out_uri`` in manifest order; checks the invariant."""
    readers = [_ShardReader(shards_uri or out_uri, i, shard_count) for i in range(shard_count)]
    bundle_ids = {r.summary.bundle_id for r in readers}
    if len(bundle_ids) > 1:
        raise ValueError(f"shards ran different bundles: {sorted(map(str, bundle_ids))}")
    outputs = SpooledOutputs(out_uri)
    counts: Counter[str] = Counter()
    inputs = 0
    try:
        for line, _ in parse_batch_lines(storage.iter_lines(manifest_uri)):
            key = line_key(line)
            reader = readers[shard_of(key, shard_count)]
            kind, out = reader.take_for(key)
            outputs.write(kind, out)
            route = out.route()
            counts[route.route if route else kind] += 1
            if route is not None and route.route == "audit" and reader.heads["audit_model"] is not None \
                    and line_key(reader.heads["audit_model"]) == key:
                outputs.write("audit_model", reader.take("audit_model"))
            inputs += 1
        leftovers = [(i, k) for i, r in enumerate(readers) for k, h in r.heads.items() if h is not None]
        if leftovers:
            raise ValueError(f"shard outputs hold lines the manifest does not: {leftovers[:5]}")
    except BaseException:
        outputs.discard()
        raise

    def total(field: str) -> dict[str, int]:
        merged: Counter[str] = Counter()
        for r in readers:
            merged.update(getattr(r.summary, field))
        return dict(sorted(merged.items()))

    first = readers[0].summary
    summary = BatchSummary(
        manifest=manifest_uri, bundle_id=first.bundle_id, cold_start=first.cold_start, zero_shot=first.zero_shot,
        head_backend=first.head_backend, shard_index=0, shard_count=shard_count, inputs=inputs,
        routes={r: counts.get(r, 0) for r in ROUTES}, human_reasons=total("human_reasons"),
        parts=total("parts"), judgement=first.judgement, quarantine_reasons=total("quarantine_reasons"), invariant="", files=dict(OUTPUT_FILES),
        timings={"shard_total_s_max": max(r.summary.timings.get("total_s", 0.0) for r in readers),
                 "shard_total_s_sum": round(sum(r.summary.timings.get("total_s", 0.0) for r in readers), 3)},
    )
    shard_inputs = sum(r.summary.inputs for r in readers)
    try:
        summary.check_invariant()
        if shard_inputs != inputs:
            raise ValueError(f"shards report {shard_inputs} inputs, the manifest has {inputs}")
    except BaseException:
        outputs.discard()
        raise
    summary.invariant = f"inputs {inputs} = " + " + ".join(f"{r} {counts.get(r, 0)}" for r in ROUTES)
    outputs.commit()
    storage.write_text(storage.join(out_uri, SUMMARY_FILE), summary.to_json(), content_type="application/json")
    return summary
