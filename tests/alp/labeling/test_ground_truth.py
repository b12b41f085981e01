"""The ground-truth backend: CreateLabelingJob contract (botocore Stubber), idempotency, job names, output."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from hypothesis import given
from hypothesis import strategies as st

from alp.labeling.backend import TASK_ID_KEY, JobSpec, JobStatus, JobTimeout
from alp.labeling.contracts import CONSOLIDATION_KEY, is_valid_job_name, job_name
from alp.labeling.ground_truth import GroundTruthBackend
from alp.manifest import ManifestLine, write_manifest
from alp.settings import Settings

ACCOUNT = "123456789012"
WORKTEAM = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:workteam/private-crowd/cabin-labelers"
SETTINGS = Settings().with_overrides({"labeling.workteam_arn": WORKTEAM, "labeling.workers_per_object": 3})
NAME = job_name("alp", "head-boxes", '{"source-ref": "s3://u/a.jpg"}')
OUT = "s3://alp-123456789012-us-east-1-data/batches/b1/labeling/jobs/"


def _spec(**kw: Any) -> JobSpec:
    base = dict(name=NAME, kind="head-boxes", label_attribute="head-boxes",
                input_manifest_uri=OUT + NAME + "/input.manifest", output_path=OUT,
                label_category_uri=OUT + NAME + "/categories.json",
                template_uri="s3://alp-123456789012-us-east-1-data/templates/head-boxes.liquid.html",
                title="Box every head", description="Correct the model's head boxes.")
    base.update(kw)
    return JobSpec(**base)


def _client() -> Any:
    return boto3.session.Session().client("sagemaker", region_name="us-east-1", aws_access_key_id="x",
                                          aws_secret_access_key="x")


def _describe(state: str = "InProgress", output: str | None = None, failure: str | None = None) -> dict[str, Any]:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    resp: dict[str, Any] = {
        "LabelingJobStatus": state,
        "LabelCounters": {"TotalLabeled": 2, "HumanLabeled": 2, "MachineLabeled": 0, "FailedNonRetryableError": 1,
                          "Unlabeled": 0},
        "CreationTime": now, "LastModifiedTime": now, "JobReferenceCode": "ref",
        "LabelingJobName": NAME, "LabelingJobArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:labeling-job/{NAME}",
        "LabelAttributeName": "head-boxes",
        "InputConfig": {"DataSource": {"S3DataSource": {"ManifestS3Uri": OUT + "in.manifest"}}},
        "OutputConfig": {"S3OutputPath": OUT},
        "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/alp-sagemaker-execution",
        "HumanTaskConfig": {
            "WorkteamArn": WORKTEAM, "UiConfig": {"UiTemplateS3Uri": "s3://b/t.html"}, "TaskTitle": "t",
            "TaskDescription": "d", "NumberOfHumanWorkersPerDataObject": 3, "TaskTimeLimitInSeconds": 600,
        },
    }
    if output:
        resp["LabelingJobOutput"] = {"OutputDatasetS3Uri": output}
    if failure:
        resp["FailureReason"] = failure
    return resp


EXPECTED_REQUEST = {
    "LabelingJobName": NAME,
    "LabelAttributeName": "head-boxes",
    "InputConfig": {"DataSource": {"S3DataSource": {"ManifestS3Uri": OUT + NAME + "/input.manifest"}}},
    "OutputConfig": {"S3OutputPath": OUT},
    "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/alp-sagemaker-execution",
    "LabelCategoryConfigS3Uri": OUT + NAME + "/categories.json",
    "HumanTaskConfig": {
        "WorkteamArn": WORKTEAM,
        "UiConfig": {"UiTemplateS3Uri": "s3://alp-123456789012-us-east-1-data/templates/head-boxes.liquid.html"},
        "PreHumanTaskLambdaArn": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:alp-gt-pre-annotation",
        "TaskKeywords": ["images", "head", "keypoints"],
        "TaskTitle": "Box every head",
        "TaskDescription": "Correct the model's head boxes.",
        "NumberOfHumanWorkersPerDataObject": 3,
        "TaskTimeLimitInSeconds": 600,
        "TaskAvailabilityLifetimeInSeconds": 864000,
        "MaxConcurrentTaskCount": 500,
        "AnnotationConsolidationConfig": {
            "AnnotationConsolidationLambdaArn": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:alp-gt-post-annotation",
        },
    },
    "Tags": ANY,
}


def test_given_a_new_job_then_create_labeling_job_gets_every_required_parameter() -> None:
    client = _client()
    backend = GroundTruthBackend(SETTINGS, account=ACCOUNT, client=client)
    with Stubber(client) as stub:
        stub.add_client_error("describe_labeling_job", service_error_code="ResourceNotFound", http_status_code=400,
                              expected_params={"LabelingJobName": NAME})
        stub.add_response("create_labeling_job", {"LabelingJobArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:"
                                                                    f"labeling-job/{NAME}"}, EXPECTED_REQUEST)
        stub.add_response("describe_labeling_job", _describe(), {"LabelingJobName": NAME})
        status = backend.create_job(_spec())
        stub.assert_no_pending_responses()
    assert status.state == "InProgress" and status.name == NAME


def test_given_the_job_exists_then_no_second_job_is_created() -> None:
    client = _client()
    backend = GroundTruthBackend(SETTINGS, account=ACCOUNT, client=client)
    with Stubber(client) as stub:
        stub.add_response("describe_labeling_job", _describe("Completed", output=OUT + "o.manifest"),
                          {"LabelingJobName": NAME})
        status = backend.create_job(_spec())
        stub.assert_no_pending_responses()  # no create_labeling_job call was made
    assert status.done and status.output_manifest_uri == OUT + "o.manifest" and status.labeled == 2


def test_given_a_concurrent_create_then_the_existing_job_is_used() -> None:
    client = _client()
    backend = GroundTruthBackend(SETTINGS, account=ACCOUNT, client=client)
    with Stubber(client) as stub:
        stub.add_client_error("describe_labeling_job", service_error_code="ResourceNotFound", http_status_code=400)
        stub.add_client_error("create_labeling_job", service_error_code="ResourceInUse", http_status_code=400)
        stub.add_response("describe_labeling_job", _describe())
        assert backend.create_job(_spec()).state == "InProgress"


def test_the_request_passes_botocore_validation_of_the_real_service_model() -> None:
    """Stubber validates the actual call against the SageMaker model: a missing required key would raise."""
    client = _client()
    backend = GroundTruthBackend(SETTINGS, account=ACCOUNT, client=client)
    request = backend.create_request(_spec())
    with Stubber(client) as stub:
        stub.add_response("create_labeling_job", {"LabelingJobArn": "arn:aws:sagemaker:us-east-1:1:labeling-job/x"})
        client.create_labeling_job(**request)


def test_without_a_workteam_the_backend_says_which_setting_is_missing() -> None:
    backend = GroundTruthBackend(Settings(), account=ACCOUNT, client=_client())
    with pytest.raises(ValueError, match="workteam_arn"):
        backend.create_request(_spec())


def test_the_template_uri_points_at_the_stack_uploaded_templates() -> None:
    backend = GroundTruthBackend(SETTINGS, account=ACCOUNT, client=_client())
    assert backend.template_uri("keypoints") == \
        "s3://alp-123456789012-us-east-1-data/templates/keypoints.liquid.html"


def test_waiting_polls_until_a_final_state_and_times_out_clearly() -> None:
    client = _client()
    backend = GroundTruthBackend(SETTINGS, account=ACCOUNT, client=client)
    seen: list[str] = []
    with Stubber(client) as stub:
        for state in ("InProgress", "InProgress", "Completed"):
            stub.add_response("describe_labeling_job", _describe(state))
        status = backend.wait(NAME, poll_seconds=1, on_poll=lambda s: seen.append(s.state), sleep=lambda s: None)
    assert status.state == "Completed" and seen == ["InProgress", "InProgress", "Completed"]
    with Stubber(client) as stub:
        for _ in range(3):
            stub.add_response("describe_labeling_job", _describe("InProgress"))
        with pytest.raises(JobTimeout, match="re-run"):
            backend.wait(NAME, poll_seconds=5, timeout_seconds=10, sleep=lambda s: None)


@given(st.text(min_size=0, max_size=80), st.sampled_from(["head-boxes", "keypoints"]), st.text(max_size=200))
def test_job_names_are_always_valid_for_the_api(prefix: str, kind: str, content: str) -> None:
    name = job_name(prefix, kind, content)  # type: ignore[arg-type]
    assert is_valid_job_name(name) and len(name) <= 63


def test_job_names_depend_on_the_work_and_the_kind_only() -> None:
    assert job_name("alp", "head-boxes", "a") == job_name("alp", "head-boxes", "a")
    assert job_name("alp", "head-boxes", "a") != job_name("alp", "keypoints", "a")
    assert job_name("alp", "head-boxes", "a") != job_name("alp", "head-boxes", "b")


def test_output_of_a_partial_job_lists_what_was_left_unlabeled(tmp_path: Path) -> None:
    """Given a Ground Truth output manifest with a labeled object, a failed object and a missing one,
    then each input line is either labeled or has a reason."""
    folder = str(tmp_path) + "/jobs/"
    spec = _spec(input_manifest_uri=folder + "in.manifest", output_path=folder)
    lines = [ManifestLine({"source-ref": f"s3://u/{i}.jpg", TASK_ID_KEY: f"s3://u/{i}.jpg"}) for i in range(4)]
    write_manifest(spec.input_manifest_uri, lines)
    label = {"image_size": [{"width": 10, "height": 10}], "annotations": [],
             CONSOLIDATION_KEY: {"confidence": 1.0, "workers_used": ["a"]}}
    out = [
        lines[0].with_fields(**{"head-boxes": label, "head-boxes-metadata": {"type": "groundtruth/custom"}}),
        lines[1].with_fields(**{"head-boxes-metadata": {"failure-reason": "ClientError: timed out"}}),
        lines[2].with_fields(**{"head-boxes": {CONSOLIDATION_KEY: {"unlabeled": True, "reason": "no usable worker answer"}},
                                "head-boxes-metadata": {}}),
    ]
    write_manifest(spec.folder + "manifests/output/output.manifest", out)
    outcomes = GroundTruthBackend(SETTINGS, account=ACCOUNT, client=_client()).read_output(
        spec, JobStatus(name=NAME, state="Stopped", failure_reason="stopped by the operator"))
    assert outcomes[0].label is not None and CONSOLIDATION_KEY not in outcomes[0].label
    assert "timed out" in (outcomes[1].unlabeled_reason or "")
    assert outcomes[2].unlabeled_reason == "no usable worker answer"
    assert outcomes[3].unlabeled_reason == "job stopped: stopped by the operator"
    json.dumps([o.model_dump() for o in outcomes])
