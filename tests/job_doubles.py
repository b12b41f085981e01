"""SageMaker training and Processing jobs on moto that leave an output, and that can be made to run or fail.

Moto records a created job as ``Completed`` at once and runs nothing. The doubles here answer the create call
the way the job would end: :class:`TrainingJobOutput` uploads a ``model.tar.gz`` where SageMaker puts it;
:class:`ProcessingJobShards` runs the job's instances (:func:`inference.runner.run_batch`, one shard each) into
the job's output prefix. :func:`set_job_status` moves a recorded job to another state (``InProgress``,
``Failed``...), which moto's API has no call for, to stand for a job that still runs or one that failed.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from alp import aws

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"


def set_job_status(kind: Literal["training", "processing"], name: str, status: str, reason: str = "") -> None:
    """Put a job moto recorded into ``status`` (the state a describe answers from now on)."""
    from moto.sagemaker.models import sagemaker_backends

    backend = sagemaker_backends[ACCOUNT][REGION]
    if kind == "training":
        job = backend.training_jobs[name]
        job.training_job_status = status
        job.secondary_status = "Training" if status == "InProgress" else status
        if reason:
            job.failure_reason = reason
    else:
        proc = backend.processing_jobs[name]
        proc.processing_job_status = status
        if reason:
            proc.failure_reason = reason


class _CreateHooks:
    """Calls ``then(request)`` after each create call of ``operation`` that SageMaker (moto) accepted."""

    def __init__(self, operation: str, then: Callable[[dict[str, Any]], None]) -> None:
        self.client = aws.client("sagemaker")
        self.operation = operation
        self.then = then
        self.request: dict[str, Any] = {}
        self.client.meta.events.register(f"before-parameter-build.sagemaker.{operation}", self._remember)
        self.client.meta.events.register(f"after-call.sagemaker.{operation}", self._after)

    def _remember(self, params: dict[str, Any], **_: Any) -> None:
        self.request = dict(params)

    def _after(self, http_response: Any, **_: Any) -> None:
        if http_response.status_code == 200:
            self.then(self.request)

    def close(self) -> None:
        self.client.meta.events.unregister(f"before-parameter-build.sagemaker.{self.operation}", self._remember)
        self.client.meta.events.unregister(f"after-call.sagemaker.{self.operation}", self._after)


def model_archive(model_dir: Path) -> bytes:
    """``model.tar.gz`` of a folder, as SageMaker packs ``SM_MODEL_DIR``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(model_dir.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=path.relative_to(model_dir).as_posix())
    return buf.getvalue()


class TrainingJobOutput:
    """Every training job created from now on ends with ``model_dir`` as its ``model.tar.gz``; ``then`` (a
    status) leaves it in that state instead of Completed. ``created`` lists the jobs, in order."""

    def __init__(self, model_dir: Path, then: str | None = None) -> None:
        self.archive = model_archive(model_dir)
        self.then = then
        self.created: list[str] = []
        self._hooks = _CreateHooks("CreateTrainingJob", self._after_create)

    def _after_create(self, params: dict[str, Any]) -> None:
        name = str(params["TrainingJobName"])
        self.created.append(name)
        bucket, _, prefix = str(params["OutputDataConfig"]["S3OutputPath"]).removeprefix("s3://").partition("/")
        aws.client("s3").put_object(Bucket=bucket, Key=f"{prefix}{name}/output/model.tar.gz", Body=self.archive)
        if self.then:
            set_job_status("training", name, self.then)

    def close(self) -> None:
        self._hooks.close()


class ProcessingJobShards:
    """Every Processing job created from now on runs its instances here: each routes its shard of the manifest
    with ``engine`` and ``settings`` into the job's output prefix. ``then`` leaves the job in that state;
    ``instances`` lets only the first few instances upload (a job that died part way)."""

    def __init__(self, settings: Any, engine: Any, then: str | None = None, instances: int | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.then = then
        self.instances = instances
        self.created: list[str] = []
        self._hooks = _CreateHooks("CreateProcessingJob", self._after_create)

    def _after_create(self, params: dict[str, Any]) -> None:
        from inference.runner import run_batch

        name = str(params["ProcessingJobName"])
        self.created.append(name)
        manifest = str(params["ProcessingInputs"][0]["S3Input"]["S3Uri"])
        out = str(params["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"])
        count = int(params["ProcessingResources"]["ClusterConfig"]["InstanceCount"])
        for index in range(count if self.instances is None else self.instances):
            run_batch(manifest, out, self.settings, engine=self.engine, shard_index=index, shard_count=count)
        if self.then:
            set_job_status("processing", name, self.then)

    def close(self) -> None:
        self._hooks.close()


def job_names(kind: Literal["training", "processing"]) -> list[str]:
    """Every job of that kind SageMaker knows, by ListTrainingJobs / ListProcessingJobs."""
    sm = aws.client("sagemaker")
    if kind == "training":
        pages = sm.get_paginator("list_training_jobs").paginate()
        return sorted(j["TrainingJobName"] for page in pages for j in page["TrainingJobSummaries"])
    pages = sm.get_paginator("list_processing_jobs").paginate()
    return sorted(j["ProcessingJobName"] for page in pages for j in page["ProcessingJobSummaries"])
