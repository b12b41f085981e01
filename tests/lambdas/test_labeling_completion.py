"""The completion trigger: Ground Truth's job event or the scheduled check -> the labeling-completion pipeline,
started for exactly the batches the event concerns (handler on moto; the decision as plain data)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from events import event
from moto_pipelines import create_step_pipeline

import lambdas.labeling_completion as completion_lambda
from alp import aws, storage
from alp.labeling.backend import FINAL_STATES
from alp.labeling.completion import (
    FINAL_JOB_STATES,
    GROUND_TRUTH_EVENT_GRACE_SECONDS,
    CompletionEventError,
    CompletionStartFailed,
    LabelingJobStateChange,
    ScheduledCheck,
    decide,
    executions_in_flight,
    job_name_prefix,
    parse_event,
    waiting_key_prefix,
)
from alp.labeling.waiting import WaitingBatch, waiting_dir
from alp.resources import ResourceNames
from alp.settings import SETTINGS_ENV, Settings, SettingsOnce

ACCOUNT = "123456789012"
SETTINGS = Settings()
NOW = 1_800_000_000.0
HEAD_JOB = "alp-heads-0123456789abcdef"
KP_JOB = "alp-kpts-fedcba9876543210"
FUNCTION_ARN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:alp-labeling-completion-trigger"


class FakeContext:
    invoked_function_arn = FUNCTION_ARN
    function_name = "alp-labeling-completion-trigger"
    aws_request_id = "req-1"


def _entry(batch: str, jobs: list[str], backend: str = "ground-truth", since: float = NOW - 600,
           state: Any = "waiting", root: str = "s3://data/") -> WaitingBatch:
    batch_dir = f"{root}batches/{batch}/"
    return WaitingBatch(state=state, batch_dir=batch_dir, batch_manifest_uri=batch_dir + "manifest.jsonl",
                        backend=backend, jobs=jobs, since=since)


def _job_event(job: str = HEAD_JOB, status: str = "Completed") -> dict[str, Any]:
    return event("gt_labeling_job_state_change.eventbridge", JOB_NAME=job, STATUS=status)


def _check_event() -> dict[str, Any]:
    return event("scheduled_event.eventbridge", RULE="alp-waiting-batches-check")


# --- the decision, as plain data ----------------------------------------------------------------------
def test_given_the_documented_gt_event_then_it_parses_to_the_job_and_its_final_state() -> None:
    parsed = parse_event(_job_event())
    assert isinstance(parsed, LabelingJobStateChange)
    assert (parsed.job_name, parsed.status, parsed.final) == (HEAD_JOB, "Completed", True)
    assert FINAL_JOB_STATES == FINAL_STATES  # the backends' final states, the ones Ground Truth's event names
    assert isinstance(parse_event(_check_event()), ScheduledCheck)
    with pytest.raises(CompletionEventError, match="not a labeling-job state change"):
        parse_event(event("s3_object_created.eventbridge", BUCKET="b", KEY="k"))


def test_given_a_job_that_ended_then_only_the_batches_waiting_on_it_start_whatever_their_state() -> None:
    waiting = [_entry("b1", [HEAD_JOB]), _entry("b2", [KP_JOB]), _entry("b3", [HEAD_JOB.upper()])]
    for status in ("Completed", "Failed", "Stopped"):
        plan = decide(parse_event(_job_event(status=status)), waiting, SETTINGS, now=NOW,
                      in_flight={waiting[0].batch_manifest_uri})  # the event is news: in flight does not matter
        assert [d.batch_dir for d in plan.starts] == [waiting[0].batch_dir, waiting[2].batch_dir]
        assert all(status in d.reason for d in plan.starts)


def test_given_the_same_event_delivered_twice_then_the_request_tokens_are_equal() -> None:
    """EventBridge delivers at least once and SageMaker may send one change twice: the same job, state and
    batch always give the same CodePipeline request token, so a repeat starts no second execution."""
    waiting = [_entry("b1", [HEAD_JOB])]
    first = decide(parse_event(_job_event()), waiting, SETTINGS, now=NOW).starts[0]
    again = {**_job_event(), "id": "another-delivery"}
    second = decide(parse_event(again), waiting, SETTINGS, now=NOW + 5).starts[0]
    assert first.request_token == second.request_token
    assert first.request_token and len(first.request_token) <= 128 and first.request_token.isalnum()
    failed = decide(parse_event(_job_event(status="Failed")), waiting, SETTINGS, now=NOW).starts[0]
    assert failed.request_token != first.request_token


def test_given_a_job_still_running_or_not_ours_then_nothing_starts_and_the_plan_says_why() -> None:
    waiting = [_entry("b1", [HEAD_JOB]), _entry("b2", ["other-heads-0123456789abcdef"])]
    running = decide(parse_event(_job_event(status="InProgress")), waiting, SETTINGS, now=NOW)
    assert running.starts == [] and "not over" in (running.ignored or "")
    foreign = decide(parse_event(_job_event(job="other-heads-0123456789abcdef")), waiting, SETTINGS, now=NOW)
    assert foreign.starts == [] and "not one of this project's" in (foreign.ignored or "")
    nobody = decide(parse_event(_job_event(job="alp-heads-ffffffffffffffff")), waiting, SETTINGS, now=NOW)
    assert nobody.starts == [] and "no batch waits" in (nobody.ignored or "")


def test_given_the_check_then_label_studio_batches_start_and_ground_truth_ones_wait_for_their_event() -> None:
    overdue = SETTINGS.labeling.task_availability_seconds + GROUND_TRUTH_EVENT_GRACE_SECONDS
    studio = _entry("studio", ["alp-heads-1111111111111111"], backend="label-studio")
    busy = _entry("busy", ["alp-heads-2222222222222222"], backend="label-studio")
    fresh_gt = _entry("gt-fresh", [HEAD_JOB], since=NOW - 60)
    lost_gt = _entry("gt-lost", [KP_JOB], since=NOW - overdue - 1)
    plan = decide(parse_event(_check_event()), [studio, busy, fresh_gt, lost_gt], SETTINGS, now=NOW,
                  in_flight={busy.batch_manifest_uri})
    by_batch = {d.batch_dir: d for d in plan.decisions}
    assert [d.batch_dir for d in plan.starts] == [studio.batch_dir, lost_gt.batch_dir]
    assert "already queued or running" in by_batch[busy.batch_dir].reason
    assert "its state-change event starts the batch" in by_batch[fresh_gt.batch_dir].reason
    assert "overdue" in by_batch[lost_gt.batch_dir].reason
    assert decide(parse_event(_check_event()), [], SETTINGS, now=NOW).ignored == "no batch is waiting"


def test_given_the_settings_then_the_prefixes_are_those_the_label_step_and_the_index_use() -> None:
    assert job_name_prefix(SETTINGS) == "alp-"
    assert job_name_prefix(SETTINGS.with_overrides({"storage.resource_prefix": "cab-in"})) == "cab-in-"
    assert waiting_key_prefix(SETTINGS) == "labeling/waiting/"
    assert waiting_dir("s3://data/", SETTINGS) == "s3://data/" + waiting_key_prefix(SETTINGS)


# --- the handler on moto ------------------------------------------------------------------------------
@dataclass
class Env:
    settings: Settings
    names: ResourceNames

    def wait(self, entry: WaitingBatch) -> WaitingBatch:
        entry = entry.model_copy(update={"batch_dir": entry.batch_dir.replace("s3://data/", self.names.data_root),
                                         "batch_manifest_uri": entry.batch_manifest_uri.replace(
                                             "s3://data/", self.names.data_root)})
        uri = waiting_dir(self.names.data_root, self.settings) + storage.basename(entry.batch_dir) + ".json"
        storage.write_text(uri, entry.model_dump_json())
        return entry

    def executions(self) -> list[dict[str, str]]:
        cp = aws.client("codepipeline")
        name = self.names.labeling_completion_pipeline
        out = []
        for s in cp.list_pipeline_executions(pipelineName=name)["pipelineExecutionSummaries"]:
            execution = cp.get_pipeline_execution(pipelineName=name, pipelineExecutionId=s["pipelineExecutionId"])
            out.append({v["name"]: v.get("resolvedValue") or v.get("value") for v in
                        execution["pipelineExecution"].get("variables", [])})
        return out


@pytest.fixture
def env(aws_mock: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    settings = SETTINGS
    names = ResourceNames.for_function(settings, FUNCTION_ARN)
    aws.client("s3").create_bucket(Bucket=names.data_bucket)
    settings_uri = f"{names.data_root}{settings.storage.config_key}"
    storage.write_text(settings_uri, settings.to_json())
    monkeypatch.setenv(SETTINGS_ENV, settings_uri)
    monkeypatch.setattr(completion_lambda, "_settings", SettingsOnce())  # a new execution environment
    create_step_pipeline(names.labeling_completion_pipeline, names.labeling_artifact_bucket, "Label", "completion-pipeline")
    yield Env(settings, names)


def _decisions(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "alp.labeling_completion"]


def test_given_a_completed_job_when_its_event_arrives_then_the_batch_waiting_on_it_starts_once_and_is_logged(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    mine = env.wait(_entry("b1", [HEAD_JOB]))
    env.wait(_entry("b2", [KP_JOB]))
    env.wait(_entry("b0", [HEAD_JOB], state="complete"))  # collected already: never again

    with caplog.at_level(logging.INFO, logger="alp.labeling_completion"):
        out = completion_lambda.handler(_job_event(), FakeContext())

    assert [s["batch"] for s in out["started"]] == [mine.batch_dir]
    assert env.executions() == [{"BatchManifestUri": mine.batch_manifest_uri}]
    [line] = _decisions(caplog)
    assert line["decision"] == "start" and line["batch"] == mine.batch_dir and line["job"] == HEAD_JOB
    assert line["pipeline"] == env.names.labeling_completion_pipeline and line["execution_id"]


def test_given_waiting_batches_when_the_check_runs_then_label_studio_ones_start_and_the_rest_is_logged(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    studio = env.wait(_entry("studio", ["alp-heads-1111111111111111"], backend="label-studio"))
    env.wait(_entry("gt", [HEAD_JOB], since=time.time()))

    with caplog.at_level(logging.INFO, logger="alp.labeling_completion"):
        out = completion_lambda.handler(_check_event(), FakeContext())

    assert [s["batch"] for s in out["started"]] == [studio.batch_dir]
    assert [s["batch"].rsplit("/", 2)[-2] for s in out["skipped"]] == ["gt"]
    assert env.executions() == [{"BatchManifestUri": studio.batch_manifest_uri}]
    assert sorted(line["decision"] for line in _decisions(caplog)) == ["skip", "start"]


def test_given_every_batch_complete_when_the_check_runs_then_nothing_starts(env: Env) -> None:
    env.wait(_entry("done", ["alp-heads-1111111111111111"], backend="label-studio", state="complete"))
    out = completion_lambda.handler(_check_event(), FakeContext())
    assert out["started"] == [] and out["ignored"] == "no batch is waiting"
    assert env.executions() == []


def test_given_one_start_fails_then_the_others_go_through_and_the_invocation_fails_for_a_retry(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    from botocore.exceptions import ClientError

    bad = env.wait(_entry("bad", ["alp-heads-1111111111111111"], backend="label-studio"))
    good = env.wait(_entry("good", ["alp-heads-2222222222222222"], backend="label-studio"))

    def fail_bad(params: dict[str, Any], **_: Any) -> None:
        if any(v["value"] == bad.batch_manifest_uri for v in params.get("variables", [])):
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "injected"}},
                              "StartPipelineExecution")

    def observe(service: str, client: Any) -> None:
        if service == "codepipeline":
            client.meta.events.register("before-parameter-build.codepipeline.StartPipelineExecution", fail_bad)

    aws.reset_clients()
    aws.add_client_observer(observe)
    try:
        with caplog.at_level(logging.INFO, logger="alp.labeling_completion"), \
                pytest.raises(CompletionStartFailed, match="1 of 2"):
            completion_lambda.handler(_check_event(), FakeContext())
    finally:
        aws.remove_client_observer(observe)
        aws.reset_clients()
    assert env.executions() == [{"BatchManifestUri": good.batch_manifest_uri}]
    failed = [line for line in _decisions(caplog) if line["decision"] == "start-failed"]
    assert [line["batch"] for line in failed] == [bad.batch_dir] and "ThrottlingException" in failed[0]["error"]


def test_given_executions_in_flight_then_their_batches_are_found_from_their_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """QUEUED executions waiting for a stage are InProgress; finished ones end the search."""
    from botocore.stub import Stubber

    client = boto3.client("codepipeline", region_name="us-east-1")
    stub = Stubber(client)
    stub.add_response("list_pipeline_executions", {"pipelineExecutionSummaries": [
        {"pipelineExecutionId": "e3", "status": "InProgress"}, {"pipelineExecutionId": "e2", "status": "Succeeded"}],
        "nextToken": "t1"}, {"pipelineName": "p", "maxResults": 100})
    stub.add_response("get_pipeline_execution", {"pipelineExecution": {
        "pipelineExecutionId": "e3", "status": "InProgress",
        "variables": [{"name": "BatchManifestUri", "resolvedValue": "s3://d/batches/b3/manifest.jsonl"}]}},
        {"pipelineName": "p", "pipelineExecutionId": "e3"})
    stub.add_response("list_pipeline_executions", {"pipelineExecutionSummaries": [
        {"pipelineExecutionId": "e1", "status": "Failed"}]}, {"pipelineName": "p", "maxResults": 100, "nextToken": "t1"})
    monkeypatch.setattr(aws, "client", lambda service: client)
    with stub:
        assert executions_in_flight("p") == {"s3://d/batches/b3/manifest.jsonl"}
    stub.assert_no_pending_responses()
