"""Exactly once: every upload lands in exactly one batch and one dataset record; re-running a step adds nothing.

Duplicates are made the way AWS makes them: EventBridge and SQS deliver at least once, so the same event
arrives again as another message, in the same Lambda window or a later one, in any order; and Lambda may
retry a whole window. The pipeline under test is the real one on moto: S3 -> EventBridge -> SQS ->
batcher (with its DynamoDB ledger) -> the labeling pipeline's declared steps (Infer, Label, Merge) run
through :func:`alp.steps.run_step`, with the local workforce as the labeling backend.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from bundle_factory import scripted_bundle
from faults import MiniPipeline
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alp import aws, storage
from alp.datasets import image_key, list_versions, read_version
from alp.manifest import read_manifest
from alp.settings import SETTINGS_ENV

OUTPUTS = ("auto.jsonl", "human.jsonl", "audit_model.jsonl", "quarantine.jsonl")


def _executions(p: MiniPipeline, pipeline: str) -> list[dict[str, Any]]:
    cp = aws.client("codepipeline")
    return cp.list_pipeline_executions(pipelineName=pipeline)["pipelineExecutionSummaries"]


def _unlabeled_versions(p: MiniPipeline) -> list[tuple[str, str]]:
    pages = aws.client("s3").get_paginator("list_object_versions").paginate(Bucket=p.names.unlabeled_bucket)
    return sorted((v["Key"], v["VersionId"]) for page in pages for v in page.get("Versions", []))


def _snapshot(p: MiniPipeline) -> dict[str, bytes]:
    """Every object of the data bucket except files that legitimately differ per run (timings)."""
    out = {}
    for uri in p.keys_under(""):
        if uri.endswith("inference/summary.json"):
            summary = json.loads(storage.read_text(uri))
            summary.pop("timings", None)
            out[uri] = json.dumps(summary, sort_keys=True).encode()
        else:
            out[uri] = storage.read_bytes(uri)
    return out


@settings(max_examples=4, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    deliveries=st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=5),
    window_sizes=st.lists(st.integers(min_value=2, max_value=10), min_size=1, max_size=4),
    retried_windows=st.sets(st.integers(min_value=0, max_value=7), max_size=3),
    shuffle_seed=st.integers(min_value=0, max_value=2**16),
)
def test_given_duplicated_shuffled_deliveries_then_exactly_n_entries_and_n_records(
        deliveries: list[int], window_sizes: list[int], retried_windows: set[int], shuffle_seed: int,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Given N uploads, each delivered 1 + (1..5) extra times, shuffled and cut into Lambda windows (some
    windows retried whole), when the batcher and the labeling steps run, then the batches hold exactly N
    entries, each upload once, and the latest dataset version holds exactly N records."""
    from moto import mock_aws

    with mock_aws():
        aws.reset_clients()
        p = MiniPipeline(tmp_path)
        monkeypatch.setenv(SETTINGS_ENV, str(p.settings_file))
        monkeypatch.setenv("ALP_METRICS_LOG", str(tmp_path / "metrics.jsonl"))
        keys = [p.upload(f"cam{i % 2}-frame{i:03d}.jpg", seed=i, persons=1 + i % 2) for i in range(len(deliveries))]
        original = p.receive_all()
        assert len(original) == len(keys)  # S3 -> EventBridge -> SQS delivered each upload once
        messages = list(original)
        for record, extra in zip(original, deliveries, strict=True):
            messages += p.redelivered(record, extra)
        random.Random(shuffle_seed).shuffle(messages)

        windows: list[list[dict[str, Any]]] = []
        start = 0
        for i in range(len(messages)):
            size = window_sizes[i % len(window_sizes)]
            if start >= len(messages):
                break
            windows.append(messages[start:start + size])
            start += size
        results = []
        for i, window in enumerate(windows):
            results.append(p.batch(window))
            if i in retried_windows:  # Lambda retries the whole window (e.g. after a timeout)
                results.append(p.batch(window))
        assert all(r.failed_message_ids == [] for r in results)

        # Exactly N entries across the batches, each upload once.
        manifests = sorted({r.manifest_uri for r in results if r.manifest_uri})
        entries = [line for uri in manifests for line in read_manifest(uri)]
        assert len(entries) == len(keys)
        assert sorted(line.object_identity().key for line in entries) == sorted(keys)  # type: ignore[union-attr]
        assert sum(len(r.batched) for r in results) == len(keys)
        assert len(_executions(p, p.names.labeling_pipeline)) == len(manifests)

        for uri in manifests:
            p.run_labeling(uri)
        versions = list_versions(p.names.data_root, p.settings)
        assert len(versions) == len(manifests)
        records = read_version(versions[-1])
        assert len(records) == len(keys)
        assert Counter(image_key(r) for r in records) == Counter(keys)
        assert len(_executions(p, p.names.training_pipeline)) == len(versions)

        # Re-running every step of every batch creates nothing new and changes nothing.
        before = _snapshot(p)
        for uri in manifests:
            p.run_labeling(uri)
        assert _snapshot(p) == before
        assert len(list_versions(p.names.data_root, p.settings)) == len(versions)
        assert len(_executions(p, p.names.training_pipeline)) == len(versions)
        assert len(_executions(p, p.names.labeling_pipeline)) == len(manifests)
    aws.reset_clients()


def test_given_each_step_rerun_after_success_then_nothing_is_created_twice(
        aws_mock: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Given a batch through Infer, Label, Merge and Requeue, when each step runs again on its own, then each
    finds its earlier work: byte-identical inference outputs, the same labeling jobs (no new job folder),
    no new dataset version, the same requeue summary."""
    p = MiniPipeline(tmp_path)
    monkeypatch.setenv(SETTINGS_ENV, str(p.settings_file))
    monkeypatch.setenv("ALP_METRICS_LOG", str(tmp_path / "metrics.jsonl"))
    for i in range(4):
        p.upload(f"rerun-{i}.jpg", seed=100 + i, persons=2)
    result = p.batch(p.receive_all())
    manifest = result.manifest_uri
    assert manifest is not None
    batch_dir = storage.parent(manifest)
    # one image the batch defers (a spent human budget), so the Requeue step has an image to send back
    storage.write_text(storage.join(batch_dir, "inference", "deferred.jsonl"),
                       storage.read_text(manifest).splitlines()[0] + "\n")
    p.run_labeling(manifest)
    assert len(p.receive_all()) == 1  # the deferred image, back in the queue once
    first = _snapshot(p)
    versions = _unlabeled_versions(p)
    jobs = {u.split("/jobs/")[1].split("/")[0] for u in first if "/jobs/" in u}
    assert len(jobs) == 2  # one head-box job and one keypoint job
    assert json.loads(storage.read_text(storage.join(batch_dir, "requeue", "summary.json")))["requeued"]

    for step in ("Infer", "Label", "Merge", "Requeue"):
        assert p.run_step(step, manifest) == 0
        assert _snapshot(p) == first, f"re-running {step} changed the data bucket"
        assert _unlabeled_versions(p) == versions, f"re-running {step} wrote to the unlabeled bucket"
        assert p.receive_all() == [], f"re-running {step} sent an upload event"
    assert {u.split("/jobs/")[1].split("/")[0] for u in _snapshot(p) if "/jobs/" in u} == jobs
    for name in OUTPUTS:
        assert storage.exists(storage.join(batch_dir, "inference", name))
    assert len(list_versions(p.names.data_root, p.settings)) == 1


def test_given_a_bundle_registered_twice_then_one_model_package(aws_mock: None, tmp_path: Path) -> None:
    """Given the Register step retried (same bundle, same decision), then the group holds one package;
    a different bundle.json under the same bundle id is refused rather than registered again."""
    from alp.registry import RegistryError, list_bundles, register_bundle
    from alp.settings import Settings

    settings = Settings()
    aws.client("s3").create_bucket(Bucket="alp-models")
    local = scripted_bundle(tmp_path / "bundle", bundle_id="exactly-once-v1")
    uri = "s3://alp-models/models/exactly-once-v1/"
    for f in sorted(local.iterdir()):
        storage.write_bytes(uri + f.name, f.read_bytes())
    first = register_bundle(settings, uri, approved=True, create_group_if_missing=True)
    again = register_bundle(settings, uri, approved=True)
    assert again.arn == first.arn
    assert [b.arn for b in list_bundles(settings)] == [first.arn]

    desc = json.loads(storage.read_text(uri + "bundle.json"))
    desc["metrics"] = {"box_map50": 0.99}  # a different descriptor, same id
    storage.write_text(uri + "bundle.json", json.dumps(desc))
    with pytest.raises(RegistryError, match="different"):
        register_bundle(settings, uri, approved=True)
    assert len(list_bundles(settings)) == 1


def test_given_ground_truth_job_creation_retried_then_create_labeling_job_is_called_once() -> None:
    """Given the Label step re-run (or two runs racing), then CreateLabelingJob is sent once: the second run
    finds the job by its content-derived name, and a racing create that gets ResourceInUse adopts the job."""
    import boto3
    from botocore.stub import Stubber

    from alp.labeling.backend import JobSpec
    from alp.labeling.ground_truth import GroundTruthBackend
    from alp.settings import Settings

    settings = Settings().with_overrides(
        {"labeling.workteam_arn": "arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/heads"})
    client = boto3.session.Session().client("sagemaker", region_name="us-east-1")
    backend = GroundTruthBackend(settings, account="123456789012", region="us-east-1", client=client)
    spec = JobSpec(name="alp-heads-0123456789abcdef", kind="head-boxes", label_attribute="head-boxes",
                   input_manifest_uri="s3://b/jobs/alp-heads-0123456789abcdef/input.manifest",
                   output_path="s3://b/jobs/", label_category_uri="s3://b/jobs/x/categories.json",
                   template_uri="s3://b/templates/heads.liquid", title="t", description="d", objects=3)
    described = {
        "LabelingJobName": spec.name, "LabelingJobStatus": "InProgress", "LabelAttributeName": "head-boxes",
        "LabelCounters": {"TotalLabeled": 0, "Unlabeled": 3}, "CreationTime": "2026-11-21T08:00:00Z",
        "LastModifiedTime": "2026-11-21T08:00:00Z", "JobReferenceCode": "x",
        "LabelingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:labeling-job/{spec.name}",
        "InputConfig": {"DataSource": {"S3DataSource": {"ManifestS3Uri": spec.input_manifest_uri}}},
        "OutputConfig": {"S3OutputPath": spec.output_path}, "RoleArn": "arn:aws:iam::123456789012:role/r",
        "HumanTaskConfig": {"WorkteamArn": settings.labeling.workteam_arn,
                            "UiConfig": {"UiTemplateS3Uri": spec.template_uri}, "TaskTitle": "t",
                            "TaskDescription": "d", "NumberOfHumanWorkersPerDataObject": 1,
                            "TaskTimeLimitInSeconds": 600},
    }
    with Stubber(client) as stub:
        # First run: not found -> create -> describe.
        stub.add_client_error("describe_labeling_job", "ResourceNotFound", expected_params={"LabelingJobName": spec.name})
        stub.add_response("create_labeling_job", {"LabelingJobArn": described["LabelingJobArn"]})
        stub.add_response("describe_labeling_job", described, {"LabelingJobName": spec.name})
        # Re-run: found -> no create.
        stub.add_response("describe_labeling_job", described, {"LabelingJobName": spec.name})
        # A racing run: not found, create says ResourceInUse -> it adopts the existing job.
        stub.add_client_error("describe_labeling_job", "ResourceNotFound", expected_params={"LabelingJobName": spec.name})
        stub.add_client_error("create_labeling_job", "ResourceInUse")
        stub.add_response("describe_labeling_job", described, {"LabelingJobName": spec.name})
        statuses = [backend.create_job(spec) for _ in range(3)]
        stub.assert_no_pending_responses()
    assert {s.name for s in statuses} == {spec.name} and all(s.state == "InProgress" for s in statuses)
