"""Training in the cloud: one SageMaker training job running ``training/entry.py`` in AWS's PyTorch image.

The training pipeline's CodeBuild step packages the source (``alp/``, ``training/``, the entry script at
the top and a pinned ``requirements.txt``), uploads it to the training-artifact bucket, starts the job
with boto3 ``CreateTrainingJob`` (the script mode of the PyTorch container: ``sagemaker_program`` and
``sagemaker_submit_directory`` hyperparameters), waits, and fetches ``model.tar.gz``. The request is
built by a pure function so its shape is tested without AWS.

The job is named by a digest of its inputs (:func:`training_job_name`, :mod:`alp.sagemaker_jobs`): a retried
Train step describes that name first and waits for the job it finds running, fetches the artifacts of one that
completed, and starts the next attempt (``-a2``...) only after one that failed or was stopped.

The PyTorch image installs ``requirements.txt`` from the source folder at start-up. For jobs without
internet access (network isolation, private subnets) use an image with ultralytics already installed
(``settings.training.training_image_uri``); the pinned requirements are then already satisfied.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alp import aws, sagemaker_jobs, storage
from alp.bundle import sha256_bytes
from alp.resources import ResourceNames
from alp.settings import Settings

ENTRY_PROGRAM = "entry.py"
TERMINAL = {"Completed", "Failed", "Stopped"}
# The job's own requirements (the image brings torch); pinned like the project's `train` extra.
JOB_REQUIREMENTS = "ultralytics==8.4.190\nyolo-poser==0.1.18\nonnx>=1.16\nonnxslim>=0.1.40\npydantic>=2.7,<3\npyyaml>=6\n"


class TrainingJobFailed(RuntimeError):
    """The SageMaker training job ended Failed or Stopped, or did not end in time."""


def training_job_name(prefix: str, dataset_version: str, inputs_sha256: str, attempt: int = 1) -> str:
    """``<prefix>-train-<version>-<inputs digest>[-a<attempt>]``, valid for SageMaker (63 characters at most).

    ``inputs_sha256`` is the digest the bundle id carries too (:func:`training.train.training_inputs`): one
    dataset version trained with one set of inputs is one job, whichever run of the step asks for it."""
    return sagemaker_jobs.job_name(prefix, "train", dataset_version, inputs_sha256, attempt)


def is_gpu_instance(instance_type: str) -> bool:
    return bool(re.match(r"^ml\.(g\d|p\d)", instance_type))


def source_archive() -> bytes:
    """A reproducible ``sourcedir.tar.gz``: the entry script at the top, the ``alp`` and ``training`` packages."""
    import alp

    training_dir = Path(__file__).resolve().parent
    files: dict[str, bytes] = {}
    for root in (Path(alp.__file__).resolve().parent, training_dir):
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".yaml", ".json"):
                files[f"{root.name}/{path.relative_to(root).as_posix()}"] = path.read_bytes()
    files[ENTRY_PROGRAM] = (training_dir / "entry.py").read_bytes()
    files["requirements.txt"] = JOB_REQUIREMENTS.encode()
    buf = io.BytesIO()
    # same source -> same bytes -> same object key: every member's mtime and the gzip header's are 0
    # (tarfile's "w:gz" would stamp the gzip header with the current second)
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mtime = 0
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    return buf.getvalue()


def source_sha256() -> str:
    """sha256 of :func:`source_archive`: the code that trains and exports, an input of every bundle."""
    return sha256_bytes(source_archive())


def upload_source(names: ResourceNames) -> str:
    data = source_archive()
    uri = f"s3://{names.training_artifact_bucket}/code/{sha256_bytes(data)[:16]}/sourcedir.tar.gz"
    if not storage.exists(uri):
        storage.write_bytes(uri, data, content_type="application/gzip")
    return uri


def _channel(name: str, s3_uri: str) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": s3_uri.rstrip("/") + "/",
                                        "S3DataDistributionType": "FullyReplicated"}},
        "InputMode": "File",
    }


def build_training_job_request(
    settings: Settings,
    names: ResourceNames,
    *,
    job_name: str,
    source_uri: str,
    prepared_uri: str,
    entry_args: dict[str, str],
    champion_checkpoints_uri: str | None = None,
) -> dict[str, Any]:
    """The CreateTrainingJob request (pure). ``entry_args`` become the entry script's ``--key value`` flags."""
    for uri in (source_uri, prepared_uri, *([champion_checkpoints_uri] if champion_checkpoints_uri else [])):
        if not storage.is_s3(uri):
            raise ValueError(f"a SageMaker job reads from S3 only, got {uri!r}")
    compute = settings.compute
    # Script mode reads every hyperparameter as JSON; the SDK encodes them the same way.
    hyper = {k: json.dumps(v) for k, v in entry_args.items()}
    hyper.update({
        "sagemaker_program": json.dumps(ENTRY_PROGRAM),
        "sagemaker_submit_directory": json.dumps(source_uri),
        "sagemaker_region": json.dumps(names.region),
        "sagemaker_container_log_level": json.dumps(20),
    })
    channels = [_channel("training", prepared_uri)]
    if champion_checkpoints_uri:
        channels.append(_channel("champion", champion_checkpoints_uri))
    return {
        "TrainingJobName": job_name,
        "HyperParameters": hyper,
        "AlgorithmSpecification": {"TrainingImage": settings.training.training_image_uri, "TrainingInputMode": "File"},
        "RoleArn": f"arn:aws:iam::{names.account}:role/{names.sagemaker_role}",
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": f"s3://{names.training_artifact_bucket}/jobs/"},
        "ResourceConfig": {"InstanceType": compute.training_instance_type,
                           "InstanceCount": compute.training_instance_count, "VolumeSizeInGB": 50},
        "StoppingCondition": {"MaxRuntimeInSeconds": settings.training.max_runtime_seconds},
        "EnableManagedSpotTraining": False,
        "Environment": {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"},
        "Tags": [{"Key": "alp:component", "Value": "training"}],
    }


def training_job_status(name: str) -> str | None:
    """The job's ``TrainingJobStatus``; None when no job has that name."""
    sm = aws.client("sagemaker")
    desc = sagemaker_jobs.describe_or_none(lambda: sm.describe_training_job(TrainingJobName=name))
    return None if desc is None else str(desc["TrainingJobStatus"])


def ensure_training_job(
    name_of: Callable[[int], str],
    request_for: Callable[[str], dict[str, Any]],
    *,
    timeout_seconds: float,
    poll_seconds: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The completed job of this step: found by name (waited for while it runs) or started; returns its final
    DescribeTrainingJob answer. ``name_of(attempt)`` names each attempt; ``request_for(name)`` is the
    CreateTrainingJob request, built only when an attempt has to start.

    Raises :class:`TrainingJobFailed` when the job ends Failed or Stopped (a retry then starts the next attempt)
    or outlasts ``timeout_seconds``; :class:`alp.sagemaker_jobs.JobAttemptsExhausted` when no attempt is left.
    """
    plan = sagemaker_jobs.plan_attempt(name_of, training_job_status)
    earlier = f" (after {'; '.join(plan.earlier_failures)})" if plan.earlier_failures else ""
    if plan.action == "start":
        try:
            aws.client("sagemaker").create_training_job(**request_for(plan.name))
            log(f"training job {plan.name}: started, attempt {plan.attempt}{earlier}")
        except Exception as exc:
            if not sagemaker_jobs.name_taken(exc):
                raise
            log(f"training job {plan.name}: another run of this step started it a moment ago; waiting for it")
    elif plan.action == "wait":
        log(f"training job {plan.name}: an earlier run of this step started it and it still runs; waiting for it "
            "(no new job)")
    else:
        log(f"training job {plan.name}: completed already; fetching its artifacts (no new job)")
    return wait_training_job(plan.name, timeout_seconds=timeout_seconds, poll_seconds=poll_seconds, sleep=sleep,
                             log=log)


def wait_training_job(
    name: str,
    *,
    timeout_seconds: float,
    poll_seconds: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Poll the job until it ends; returns the final DescribeTrainingJob answer of a Completed job."""
    sm = aws.client("sagemaker")
    deadline = time.monotonic() + timeout_seconds
    last = ""
    while True:
        desc: dict[str, Any] = sm.describe_training_job(TrainingJobName=name)
        status = desc["TrainingJobStatus"]
        secondary = desc.get("SecondaryStatus", "")
        if f"{status}/{secondary}" != last:
            log(f"training job {name}: {status} ({secondary})")
            last = f"{status}/{secondary}"
        if status in TERMINAL:
            if status != "Completed":
                raise TrainingJobFailed(f"training job {name} ended {status}: {desc.get('FailureReason', 'no reason given')}"
                                        "; running the step again starts the next attempt")
            return desc
        if time.monotonic() > deadline:
            raise TrainingJobFailed(f"training job {name} still {status} after the wait limit; running the step "
                                    "again waits for it")
        sleep(poll_seconds)


def extract_model_artifacts(archive: bytes, dest: Path) -> Path:
    """Unpack ``model.tar.gz`` into ``dest`` refusing links and paths that leave it."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar.getmembers():
            if not (member.isfile() or member.isdir()):
                raise ValueError(f"model.tar.gz holds a link or device {member.name!r}; refusing it")
            storage.validate_key(member.name.removeprefix("./") or ".", allow_empty=False) if member.isfile() else None
        tar.extractall(dest, filter="data")
    return dest


def fetch_model_artifacts(desc: dict[str, Any], dest: Path) -> Path:
    uri = desc["ModelArtifacts"]["S3ModelArtifacts"]
    return extract_model_artifacts(storage.read_bytes(uri), dest)
