"""Scale-out: executor choice, stable sharding, shard merge, and the Processing job request on moto."""

from __future__ import annotations

import hashlib
import inspect
import io
import json
from collections import Counter

import boto3
import pytest
from bundle_factory import bright_image, scripted_bundle
from PIL import Image

from alp.settings import PROCESSING_MAX_RUNTIME_LIMIT_SECONDS, PROCESSING_WAIT_MARGIN_MINUTES, Settings
from inference.engine import InferenceEngine
from inference.processing import (
    PROCESSING_IMAGE_ENV,
    build_processing_request,
    choose_executor,
    merge_shards,
    processing_image_uri,
    processing_wait_seconds,
    shard_from_resource_config,
    submit_processing_job,
    wait_processing_job,
)
from inference.runner import run_batch
from inference.sharding import shard_of


@pytest.fixture(autouse=True)
def _no_stack_image(monkeypatch):
    """Tests start without the image URI the stack gives the Infer build."""
    monkeypatch.delenv(PROCESSING_IMAGE_ENV, raising=False)


def test_executor_by_batch_size():
    s = Settings().with_overrides({"inference.processing_threshold_images": 100,
                                   "inference.processing_image_uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/alp:1"})
    assert choose_executor(100, s) == "codebuild"
    assert choose_executor(101, s) == "processing"
    # Without a Processing image, a large batch stays on CodeBuild rather than failing.
    no_image = s.with_overrides({"inference.processing_image_uri": None})
    assert choose_executor(101, no_image) == "codebuild"


def test_sharding_is_stable_complete_and_balanced():
    keys = [f"s3://b/incoming/{i}.jpg" for i in range(3000)]
    shards = [shard_of(k, 4) for k in keys]
    assert shards == [shard_of(k, 4) for k in keys]
    # Pinned to sha256 (not Python's per-process salted hash): every instance computes the same split.
    digest = hashlib.sha256(b"s3://b/incoming/0.jpg").digest()
    assert shard_of("s3://b/incoming/0.jpg", 4) == int.from_bytes(digest[:8], "big") % 4 == 2
    counts = Counter(shards)
    assert set(counts) == {0, 1, 2, 3} and min(counts.values()) > 650
    assert all(shard_of(k, 1) == 0 for k in keys[:10])


def test_shard_index_from_sagemaker_resource_config(tmp_path):
    cfg = tmp_path / "resourceconfig.json"
    cfg.write_text(json.dumps({"current_host": "algo-2", "hosts": ["algo-1", "algo-2", "algo-3"]}))
    assert shard_from_resource_config(cfg) == (1, 3)


def test_processing_request_is_accepted_by_sagemaker_on_moto(aws_mock):
    settings = Settings().with_overrides({
        "inference.processing_image_uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/alp:1",
        "compute.processing_instance_count": 3,
    })
    request = build_processing_request(
        settings, job_name="alp-infer-abc", manifest_uri="s3://data/batches/b1/manifest.jsonl",
        out_uri="s3://data/batches/b1/inference/", bundle_uri="s3://data/models/v3/bundle/",
        role_arn="arn:aws:iam::123456789012:role/alp-sagemaker-execution",
        settings_uri="s3://data/config/settings.json",
    )
    args = request["AppSpecification"]["ContainerArguments"]
    assert args[args.index("--shard-count") + 1] == "3" and args[args.index("--shard-index") + 1] == "auto"
    assert args[args.index("--manifest") + 1] == "/opt/ml/processing/input/manifest/manifest.jsonl"
    assert request["ProcessingResources"]["ClusterConfig"] == {
        "InstanceCount": 3, "InstanceType": "ml.c5.2xlarge", "VolumeSizeInGB": 30}
    assert request["Environment"] == {"ALP_SETTINGS_URI": "s3://data/config/settings.json",
                                      "AWS_DEFAULT_REGION": "us-east-1"}
    arn = submit_processing_job(request)
    assert arn.endswith("processing-job/alp-infer-abc")
    job = wait_processing_job("alp-infer-abc", sleep=lambda s: None)
    assert job["ProcessingJobStatus"] == "Completed"
    assert job["AppSpecification"]["ContainerArguments"] == args
    assert job["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] == "s3://data/batches/b1/inference"


def test_processing_request_needs_an_image_and_s3(aws_mock):
    with pytest.raises(ValueError, match="processing_image_uri"):
        build_processing_request(Settings(), job_name="j", manifest_uri="s3://d/m.jsonl", out_uri="s3://d/o/",
                                 bundle_uri=None, role_arn="arn:aws:iam::123456789012:role/r")
    with pytest.raises(ValueError, match="s3://"):
        build_processing_request(Settings(), job_name="j", manifest_uri="/tmp/m.jsonl", out_uri="s3://d/o/",
                                 bundle_uri=None, role_arn="arn:aws:iam::123456789012:role/r")
    cold = build_processing_request(
        Settings().with_overrides({"inference.processing_image_uri": "img"}), job_name="j",
        manifest_uri="s3://d/m.jsonl", out_uri="s3://d/o/", bundle_uri=None, role_arn="r")
    assert "--no-model" in cold["AppSpecification"]["ContainerArguments"]


def test_shards_merge_into_the_single_run_outputs(tmp_path, aws_mock):
    bundle = scripted_bundle(tmp_path / "bundle")
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="alp-shards")
    lines = []
    for i in range(12):
        buf = io.BytesIO()
        Image.fromarray(bright_image(240 if i % 3 else 80)).save(buf, format="PNG")
        body = buf.getvalue() if i != 5 else b""
        s3.put_object(Bucket="alp-shards", Key=f"in/{i}.png", Body=body)
        lines.append(json.dumps({"source-ref": f"s3://alp-shards/in/{i}.png"}))
    s3.put_object(Bucket="alp-shards", Key="m.jsonl", Body="\n".join(lines).encode())
    settings = Settings().with_overrides({"judgement.audit_fraction": 0.3})
    engine = InferenceEngine.from_bundle(str(bundle), settings, tmp_path / "cache")
    single = run_batch("s3://alp-shards/m.jsonl", "s3://alp-shards/single/", settings, engine=engine)
    for i in range(3):
        run_batch("s3://alp-shards/m.jsonl", "s3://alp-shards/sharded/", settings, engine=engine,
                  shard_index=i, shard_count=3)
    merged = merge_shards("s3://alp-shards/m.jsonl", "s3://alp-shards/sharded/", 3)
    assert merged.inputs == single.inputs == 12
    assert merged.routes == single.routes
    for name in ("auto.jsonl", "human.jsonl", "audit_model.jsonl", "quarantine.jsonl"):
        a = s3.get_object(Bucket="alp-shards", Key=f"single/{name}")["Body"].read()
        b = s3.get_object(Bucket="alp-shards", Key=f"sharded/{name}")["Body"].read()
        assert a == b, name


STACK_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/cdk-hnb659fds-container-assets-123456789012-us-east-1:abc"
OWN_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/alp:7"


def test_a_full_batch_goes_to_processing_with_the_stack_built_image(monkeypatch):
    """With the default settings (no image named) and the image URI the stack sets on the Infer build, the
    largest batch the trigger forms takes the Processing path, and its request names that image."""
    settings = Settings()
    assert choose_executor(settings.trigger.max_batch_records, settings) == "codebuild"  # no image yet
    monkeypatch.setenv(PROCESSING_IMAGE_ENV, STACK_IMAGE)
    assert processing_image_uri(settings) == STACK_IMAGE
    assert choose_executor(settings.trigger.max_batch_records, settings) == "processing"
    assert choose_executor(settings.inference.processing_threshold_images, settings) == "codebuild"
    request = build_processing_request(settings, job_name="alp-infer-x", manifest_uri="s3://d/b/m.jsonl",
                                       out_uri="s3://d/b/inference/", bundle_uri=None, role_arn="r")
    assert request["AppSpecification"]["ImageUri"] == STACK_IMAGE
    assert request["AppSpecification"]["ContainerEntrypoint"] == ["alp", "infer-batch"]


def test_the_settings_image_wins_over_the_stack_built_one(monkeypatch):
    monkeypatch.setenv(PROCESSING_IMAGE_ENV, STACK_IMAGE)
    own = Settings().with_overrides({"inference.processing_image_uri": OWN_IMAGE})
    assert processing_image_uri(own) == OWN_IMAGE
    request = build_processing_request(own, job_name="j", manifest_uri="s3://d/m.jsonl", out_uri="s3://d/o/",
                                       bundle_uri=None, role_arn="r")
    assert request["AppSpecification"]["ImageUri"] == OWN_IMAGE
    monkeypatch.setenv(PROCESSING_IMAGE_ENV, "")
    assert processing_image_uri(Settings()) is None


def test_the_wait_outlasts_the_job_and_stays_inside_the_infer_build():
    """The Infer step waits for the job's own limit plus start-up, within the margin the stack adds to the
    build's timeout; the default wait covers the longest job the settings allow."""
    settings = Settings()
    wait = processing_wait_seconds(settings)
    assert wait > settings.inference.processing_max_runtime_seconds
    assert wait < settings.inference.processing_max_runtime_seconds + PROCESSING_WAIT_MARGIN_MINUTES * 60
    default = inspect.signature(wait_processing_job).parameters["timeout_seconds"].default
    assert default >= PROCESSING_MAX_RUNTIME_LIMIT_SECONDS
