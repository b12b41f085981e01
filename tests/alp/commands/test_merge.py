"""`alp merge`: prints the version URI; on S3 it starts the training pipeline with DatasetUri."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from labeling_builders import auto_line, truth_line

from alp import aws, storage
from alp.cli import main
from alp.manifest import write_manifest
from alp.observability import METRICS_LOG_ENV
from alp.settings import Settings

SETTINGS = Settings()


def _auto_batch(root: str, n: int = 4) -> str:
    """A batch of auto lines whose uploads are under ``<root>/incoming/`` (Merge copies their bytes)."""
    batch = root.rstrip("/") + "/batches/b0009/"
    uploads = [storage.write_bytes(storage.join(root, "incoming", f"img_{i:04d}.jpg"), f"image {i}".encode())
               for i in range(n)]
    lines = [auto_line(uploads[i], truth_line(f"/p/img_{i:04d}.jpg", SETTINGS, seed=i), SETTINGS, seed=i)
             for i in range(n)]
    write_manifest(batch + "inference/auto.jsonl", lines)
    return batch


def test_merge_on_a_local_folder_prints_the_version_and_starts_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def no_aws(service: str) -> Any:
        raise AssertionError(f"no AWS call expected, got {service}")

    monkeypatch.setattr(aws, "client", no_aws)
    monkeypatch.setenv(METRICS_LOG_ENV, str(tmp_path / "metrics.jsonl"))
    batch = _auto_batch(str(tmp_path))
    assert main(["merge", "--batch", batch]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path) + "/datasets/v0001/"
    assert main(["merge", "--batch", batch]) == 0  # a re-run: same version, nothing new
    out = capsys.readouterr()
    assert out.out.strip() == str(tmp_path) + "/datasets/v0001/" and "no new version" in out.err
    assert not (tmp_path / "datasets" / "v0002").exists()
    assert '"records": 4.0' in (tmp_path / "metrics.jsonl").read_text()


def test_merge_on_s3_starts_the_training_pipeline_once(aws_mock: None, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(METRICS_LOG_ENV, str(tmp_path / "metrics.jsonl"))
    aws.client("s3").create_bucket(Bucket="alp-data")
    batch = _auto_batch("s3://alp-data")
    pipeline = boto3.session.Session().client("codepipeline", region_name="us-east-1")
    real_client = aws.client

    def client(service: str) -> Any:
        return pipeline if service == "codepipeline" else real_client(service)

    monkeypatch.setattr(aws, "client", client)
    account = real_client("sts").get_caller_identity()["Account"]
    with Stubber(pipeline) as stub:
        stub.add_response(
            "start_pipeline_execution", {"pipelineExecutionId": "11111111-2222-3333-4444-555555555555"},
            {"name": "alp-training", "variables": [{"name": "DatasetUri", "value": "s3://alp-data/datasets/v0001/"}]})
        assert main(["merge", "--batch", batch]) == 0
        stub.assert_no_pending_responses()
        assert main(["merge", "--batch", batch]) == 0  # no second execution for the same batch
    assert account
    assert capsys.readouterr().out.split() == ["s3://alp-data/datasets/v0001/"] * 2
