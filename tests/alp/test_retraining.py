"""Retraining waits for enough new labels from people (training.retrain_min_new_labels)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from hypothesis import given
from hypothesis import strategies as st
from labeling_builders import auto_line, human_line, truth_line

from alp import aws, storage
from alp.cli import main
from alp.datasets import DatasetVersion, SplitRule
from alp.labeling.workflow import LABELING_KEY
from alp.manifest import write_manifest
from alp.observability import METRICS_LOG_ENV
from alp.retraining import decide_retrain, last_trained_version
from alp.settings import SETTINGS_ENV, Settings


def _version(name: str, human: int, auto: int = 10) -> DatasetVersion:
    return DatasetVersion(version=name, inputs_sha256="x", settings_sha256="y",
                          counts_by_source={"human": human, "auto": auto},
                          split=SplitRule(seed="s", test_fraction=0.2, val_fraction=0.1))


def test_the_first_version_always_trains_and_a_trained_one_never_again() -> None:
    assert decide_retrain(_version("v0001", 0), None, 50).start
    assert not decide_retrain(_version("v0003", 90), _version("v0003", 90), 0).start


@given(trained=st.integers(0, 500), new=st.integers(0, 500), threshold=st.integers(0, 500))
def test_training_starts_exactly_when_people_added_enough_labels(trained: int, new: int, threshold: int) -> None:
    decision = decide_retrain(_version("v0009", trained + new), _version("v0004", trained), threshold)
    assert decision.start == (new >= threshold)
    assert decision.new_people_labels == new and decision.since_version == "v0004"
    assert ("training waits" in decision.reason) != decision.start


def _batch(root: str, name: str, n: int, people: bool) -> str:
    settings = Settings()
    batch = f"{root}/batches/{name}/"
    # the uploads, beside the batches (Merge copies their bytes into the version)
    lines = [truth_line(storage.write_bytes(f"{root}/incoming/{name}-{i}.jpg", f"{name} {i}".encode()), settings,
                        seed=i) for i in range(n)]
    if people:
        labeled = [human_line(t.source_ref, t, settings, seed=i).with_fields(**{
            **{k: t.data[k] for k in settings.labeling.label_keys}, LABELING_KEY: {"head_job": "j", "audit": False}})
            for i, t in enumerate(lines)]
        write_manifest(batch + "labeling/labeled.jsonl", labeled)
    else:
        write_manifest(batch + "inference/auto.jsonl", [auto_line(t.source_ref, t, settings, seed=i)
                                                        for i, t in enumerate(lines)])
    return batch


def test_merge_on_s3_starts_training_only_after_enough_new_labels_from_people(
        aws_mock: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Given retrain_min_new_labels 5, when the first version (auto labels) is merged it trains; a batch of 3
    people's labels does not start training; the next batch of 3 (6 since the last training) does."""
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(Settings().with_overrides({"training.retrain_min_new_labels": 5}).to_json())
    monkeypatch.setenv(SETTINGS_ENV, str(settings_file))
    monkeypatch.setenv(METRICS_LOG_ENV, str(tmp_path / "metrics.jsonl"))
    aws.client("s3").create_bucket(Bucket="alp-data")
    pipeline = boto3.session.Session().client("codepipeline", region_name="us-east-1")
    real_client = aws.client

    def client(service: str) -> Any:
        return pipeline if service == "codepipeline" else real_client(service)

    monkeypatch.setattr(aws, "client", client)
    with Stubber(pipeline) as stub:
        for version in ("v0001", "v0003"):
            stub.add_response("start_pipeline_execution", {"pipelineExecutionId": f"{version}-0000-0000-0000-000000"},
                              {"name": "alp-training", "variables": [
                                  {"name": "DatasetUri", "value": f"s3://alp-data/datasets/{version}/"}]})
        assert main(["merge", "--batch", _batch("s3://alp-data", "b1", 4, people=False)]) == 0
        assert last_trained_version("s3://alp-data/", Settings()) == "v0001"
        assert main(["merge", "--batch", _batch("s3://alp-data", "b2", 3, people=True)]) == 0
        assert "training waits for 5" in capsys.readouterr().err
        assert last_trained_version("s3://alp-data/", Settings()) == "v0001"
        assert main(["merge", "--batch", _batch("s3://alp-data", "b3", 3, people=True)]) == 0
        stub.assert_no_pending_responses()
    assert "6 new labels from people since v0001" in capsys.readouterr().err
    record = json.loads(storage.read_text("s3://alp-data/labeling/training-starts/v0003.json"))
    assert record["execution_id"].startswith("v0003")
