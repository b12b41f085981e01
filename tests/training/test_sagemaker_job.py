"""The SageMaker training backend: the CreateTrainingJob request, the wait loop (moto), the artifacts."""

from __future__ import annotations

import io
import json
import tarfile
import time

import botocore.session
import pytest
from botocore.stub import Stubber

from alp import aws
from alp.resources import ResourceNames
from alp.settings import Settings
from training import sagemaker_job as smj

INPUTS = "3f2a9c1b7d4e" + "0" * 52  # a training inputs digest (sha256 hex)


def _request(settings: Settings, **kw: object) -> dict:
    names = ResourceNames.from_settings(settings, "123456789012")
    return smj.build_training_job_request(
        settings, names, job_name=smj.training_job_name("alp", "v0003", INPUTS),
        source_uri="s3://alp-123456789012-us-east-1-training-artifacts/code/abc/sourcedir.tar.gz",
        prepared_uri="s3://alp-123456789012-us-east-1-data/models/candidates/v0003/yolo",
        entry_args={"epochs": "5", "imgsz": "320", "device": "0"}, **kw,  # type: ignore[arg-type]
    )


def test_the_request_is_valid_for_botocore_and_uses_settings():
    settings = Settings().with_overrides({"compute.training_instance_type": "ml.g5.xlarge",
                                          "training.max_runtime_seconds": 7200})
    req = _request(settings, champion_checkpoints_uri="s3://b-champion/models/x/bundle/checkpoints/")
    # botocore validates the request against the real service model (no AWS involved)
    sm = botocore.session.get_session().create_client("sagemaker", region_name="us-east-1",
                                                      aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(sm) as stub:
        stub.add_response("create_training_job", {"TrainingJobArn": "arn:aws:sagemaker:us-east-1:1:training-job/x"}, req)
        sm.create_training_job(**req)
    assert req["TrainingJobName"] == "alp-train-v0003-3f2a9c1b7d4e"
    assert req["AlgorithmSpecification"]["TrainingImage"] == settings.training.training_image_uri
    assert req["RoleArn"] == "arn:aws:iam::123456789012:role/alp-sagemaker-execution"
    assert req["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    assert req["StoppingCondition"]["MaxRuntimeInSeconds"] == 7200
    assert req["OutputDataConfig"]["S3OutputPath"] == "s3://alp-123456789012-us-east-1-training-artifacts/jobs/"
    assert [c["ChannelName"] for c in req["InputDataConfig"]] == ["training", "champion"]
    assert req["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"].endswith("/yolo/")
    hp = req["HyperParameters"]
    assert json.loads(hp["sagemaker_program"]) == "entry.py"
    assert json.loads(hp["sagemaker_submit_directory"]).endswith("sourcedir.tar.gz")
    assert json.loads(hp["epochs"]) == "5" and all(isinstance(v, str) for v in hp.values())


def test_local_locations_are_refused_for_a_cloud_job():
    settings = Settings()
    names = ResourceNames.from_settings(settings, "123456789012")
    with pytest.raises(ValueError, match="S3 only"):
        smj.build_training_job_request(settings, names, job_name="j", source_uri="s3://b/c.tar.gz",
                                       prepared_uri="/tmp/yolo", entry_args={})


def test_job_names_are_valid_bounded_and_keep_their_digest_and_attempt():
    from alp.sagemaker_jobs import JOB_NAME, MAX_ATTEMPTS

    name = smj.training_job_name("alp-very-long-prefix", "v0003/with weird_chars" * 4, INPUTS, MAX_ATTEMPTS)
    assert len(name) == 63 and JOB_NAME.match(name)
    # the label is cut, never what makes the name unique
    assert name.endswith(f"-3f2a9c1b7d4e-a{MAX_ATTEMPTS}") and name.startswith("alp-very-long-prefix-train-v0003-")
    assert smj.training_job_name("alp", "v0003", INPUTS) == smj.training_job_name("alp", "v0003", INPUTS, 1)
    assert smj.training_job_name("alp", "v0003", INPUTS, 2) == "alp-train-v0003-3f2a9c1b7d4e-a2"
    with pytest.raises(ValueError, match="attempt"):
        smj.training_job_name("alp", "v0003", INPUTS, MAX_ATTEMPTS + 1)
    assert smj.is_gpu_instance("ml.g4dn.xlarge") and not smj.is_gpu_instance("ml.c5.2xlarge")


def test_source_archive_is_reproducible_and_has_the_entry_script_on_top():
    a = smj.source_archive()
    time.sleep(1.1)  # across a second: nothing in the archive may carry the time it was made
    assert smj.source_archive() == a
    with tarfile.open(fileobj=io.BytesIO(a), mode="r:gz") as tar:
        names = set(tar.getnames())
    assert {"entry.py", "requirements.txt", "training/entry.py", "alp/bundle.py", "training/prepare.py"} <= names
    assert not any("__pycache__" in n for n in names)


def _artifacts(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_start_wait_and_fetch_against_moto(aws_mock, tmp_path):
    settings = Settings()
    names = ResourceNames.from_settings(settings, "123456789012")
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=names.training_artifact_bucket)
    source = smj.upload_source(names)
    assert source.startswith(f"s3://{names.training_artifact_bucket}/code/")
    assert smj.upload_source(names) == source  # same code, same object
    assert source.split("/")[-2] == smj.source_sha256()[:16]

    def request_for(name: str) -> dict:
        return smj.build_training_job_request(settings, names, job_name=name, source_uri=source,
                                              prepared_uri=f"s3://{names.data_bucket}/yolo/", entry_args={"epochs": "1"})

    logs: list[str] = []
    desc = smj.ensure_training_job(lambda n: smj.training_job_name("alp", "v0001", INPUTS, n), request_for,
                                   timeout_seconds=60, poll_seconds=0, sleep=lambda s: None, log=logs.append)
    assert desc["TrainingJobStatus"] == "Completed" and "Completed" in logs[-1]
    assert desc["TrainingJobName"] == "alp-train-v0001-3f2a9c1b7d4e" and "started, attempt 1" in logs[0]
    key = desc["ModelArtifacts"]["S3ModelArtifacts"].split("/", 3)[3]
    s3.put_object(Bucket=names.training_artifact_bucket, Key=key,
                  Body=_artifacts({"training.json": b"{}", "checkpoints/head.pt": b"weights"}))
    out = smj.fetch_model_artifacts(desc, tmp_path / "model")
    assert (out / "checkpoints" / "head.pt").read_bytes() == b"weights"


def test_the_wait_loop_polls_until_the_end_and_reports_a_failure(aws_mock):
    sm = aws.client("sagemaker")
    statuses = iter(["InProgress", "InProgress", "Failed"])
    calls = {"create": 0, "describe": 0, "sleep": 0}

    def create(**kw):
        calls["create"] += 1
        return {"TrainingJobArn": "arn"}

    def describe(**kw):
        calls["describe"] += 1
        status = next(statuses)
        return {"TrainingJobStatus": status, "SecondaryStatus": "Training",
                **({"FailureReason": "AlgorithmError: out of memory"} if status == "Failed" else {})}

    sm.create_training_job = create  # type: ignore[method-assign]
    sm.describe_training_job = describe  # type: ignore[method-assign]
    with pytest.raises(smj.TrainingJobFailed, match="out of memory.*next attempt"):
        smj.wait_training_job("j", timeout_seconds=60, poll_seconds=0,
                              sleep=lambda s: calls.__setitem__("sleep", calls["sleep"] + 1), log=lambda m: None)
    assert calls == {"create": 0, "describe": 3, "sleep": 2}


def test_artifacts_with_links_or_escaping_paths_are_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("evil")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(ValueError, match="link"):
        smj.extract_model_artifacts(buf.getvalue(), tmp_path / "a")
    with pytest.raises(Exception, match=r"\.\."):
        smj.extract_model_artifacts(_artifacts({"../escape.txt": b"x"}), tmp_path / "b")
    assert not (tmp_path / "escape.txt").exists()


def test_given_a_duplicate_run_created_the_job_first_then_the_step_takes_that_job_over(aws_mock):
    """Two executions of the Train step for one version both find no job; the second create is refused (names
    are unique) and that run waits for the first one's job instead of failing or starting another."""
    from botocore.exceptions import ClientError

    sm = aws.client("sagemaker")
    answers = iter([ClientError({"Error": {"Code": "ValidationException", "Message": "Requested resource not found."}},
                                "DescribeTrainingJob"),
                    {"TrainingJobStatus": "Completed", "SecondaryStatus": "Completed", "TrainingJobName": "j"}])

    def describe(**kw):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def create(**kw):
        raise ClientError({"Error": {"Code": "ValidationException", "Message": "Job name must be unique within an "
                                     "AWS account and region, and a job with this name already exists (j)"}},
                          "CreateTrainingJob")

    sm.describe_training_job = describe  # type: ignore[method-assign]
    sm.create_training_job = create  # type: ignore[method-assign]
    logs: list[str] = []
    desc = smj.ensure_training_job(lambda n: "j", lambda name: {"TrainingJobName": name}, timeout_seconds=60,
                                   poll_seconds=0, sleep=lambda s: None, log=logs.append)
    assert desc["TrainingJobStatus"] == "Completed" and "another run of this step started it" in logs[0]
