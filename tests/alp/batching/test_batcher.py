"""The upload batcher on moto: real S3 uploads -> EventBridge rule -> SQS -> batcher -> manifest + execution.

Duplicates are made the way AWS makes them: EventBridge and SQS deliver at least once, so the same event
body arrives in a second message (in the same window or a later one), and a failed invocation's messages
come back whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from events import event
from moto_pipelines import create_step_pipeline

from alp import aws
from alp.batching.events import SqsRecord, parse_record
from alp.batching.ledger import BatchLedger
from alp.batching.plan import batch_id_for
from alp.batching.window import process_sqs_records
from alp.manifest import OBJECT_KEY, QUARANTINE_KEY, ManifestLine
from alp.resources import ResourceNames
from alp.settings import Settings, SettingsOnce

ACCOUNT = "123456789012"  # moto's default account


@dataclass
class Env:
    settings: Settings
    names: ResourceNames
    queue_url: str

    def upload(self, key: str, body: bytes = b"\xff\xd8jpeg") -> None:
        aws.client("s3").put_object(Bucket=self.names.unlabeled_bucket, Key=key, Body=body)

    def receive_all(self) -> list[dict[str, Any]]:
        sqs = aws.client("sqs")
        out: list[dict[str, Any]] = []
        while True:
            got = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"],
                                      VisibilityTimeout=0).get("Messages", [])
            if not got:
                return out
            for m in got:
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
            out.extend(got)

    def redeliver(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The same event bodies delivered again, as new SQS messages (EventBridge at-least-once)."""
        sqs = aws.client("sqs")
        for m in messages:
            sqs.send_message(QueueUrl=self.queue_url, MessageBody=m["Body"])
        return self.receive_all()

    def executions(self) -> list[dict[str, Any]]:
        cp = aws.client("codepipeline")
        summaries = cp.list_pipeline_executions(pipelineName=self.names.labeling_pipeline)["pipelineExecutionSummaries"]
        return [cp.get_pipeline_execution(pipelineName=self.names.labeling_pipeline,
                                          pipelineExecutionId=s["pipelineExecutionId"])["pipelineExecution"]
                for s in summaries]

    def read_lines(self, uri: str) -> list[ManifestLine]:
        from alp.manifest import read_manifest

        return read_manifest(uri)


@pytest.fixture
def env(aws_mock: None) -> Iterator[Env]:
    settings = Settings()
    names = ResourceNames.from_settings(settings, account=ACCOUNT, region="us-east-1")
    s3 = aws.client("s3")
    for bucket in (names.unlabeled_bucket, names.data_bucket):
        s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=names.unlabeled_bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_notification_configuration(Bucket=names.unlabeled_bucket,
                                             NotificationConfiguration={"EventBridgeConfiguration": {}})
    sqs = aws.client("sqs")
    queue_url = sqs.create_queue(QueueName=names.upload_queue)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events = aws.client("events")
    events.put_rule(Name=names.upload_rule, EventPattern=json.dumps({
        "source": ["aws.s3"], "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": [names.unlabeled_bucket]},
                   "object": {"key": [{"prefix": settings.storage.unlabeled_prefix}]}}}))
    events.put_targets(Rule=names.upload_rule, Targets=[{"Id": "queue", "Arn": queue_arn}])
    aws.client("dynamodb").create_table(
        TableName=names.batch_ledger_table, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    create_step_pipeline(names.labeling_pipeline, names.labeling_artifact_bucket, "Infer", "labeling-pipeline")
    yield Env(settings, names, queue_url)


def _fail_calls(operation: str, when: Any) -> Any:
    """Make one AWS operation fail (as throttling or an outage would) for the calls ``when`` selects."""
    from botocore.exceptions import ClientError

    def hook(params: dict[str, Any], **_: Any) -> None:
        if when(params):
            raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "injected"}}, operation)

    return hook


# --- the happy path and duplicates ------------------------------------------------------------------
def test_given_uploads_some_delivered_twice_then_one_entry_per_version_and_one_execution(env: Env) -> None:
    keys = [f"incoming/cam{i // 3}/frame-{i:03d}.jpg" for i in range(7)]
    for key in keys:
        env.upload(key)
    first = env.receive_all()
    assert len(first) == 7
    # EventBridge delivers at least once: three of the events arrive a second time in the same window.
    window = first + env.redeliver(first[:3])
    assert len(window) == 10

    result = process_sqs_records(window, env.settings, env.names)

    assert result.failed_message_ids == []
    assert result.manifest_uri == (f"s3://{env.names.data_bucket}/{env.settings.storage.batches_prefix}"
                                   f"{result.batch_id}/manifest.jsonl")
    lines = env.read_lines(result.manifest_uri)
    assert [line.source_ref for line in lines] == [f"s3://{env.names.unlabeled_bucket}/{k}" for k in sorted(keys)]
    for line in lines:
        obj = line.object_identity()
        assert obj is not None and obj.version_id and obj.etag and obj.size == 6 and obj.event_time
    executions = env.executions()
    assert len(executions) == 1
    assert executions[0]["pipelineExecutionId"] == result.execution_id
    assert executions[0]["variables"] == [{"name": "BatchManifestUri", "resolvedValue": result.manifest_uri}]

    # A later window carrying only redelivered events adds nothing and starts nothing.
    later = process_sqs_records(env.redeliver(first[2:5]), env.settings, env.names)
    assert later.batch_id is None and later.failed_message_ids == []
    assert len(later.duplicates) == 3
    assert len(env.executions()) == 1


def test_given_a_new_version_of_a_key_then_it_is_batched_again(env: Env) -> None:
    env.upload("incoming/a.jpg", b"one")
    first = process_sqs_records(env.receive_all(), env.settings, env.names)
    env.upload("incoming/a.jpg", b"two")  # versioned bucket: a new version is new work
    second = process_sqs_records(env.receive_all(), env.settings, env.names)
    assert first.batch_id != second.batch_id
    assert len(first.batched) == len(second.batched) == 1
    assert first.batched != second.batched
    assert len(env.executions()) == 2


def test_given_the_same_window_retried_then_the_same_batch_and_no_second_execution(env: Env) -> None:
    for i in range(3):
        env.upload(f"incoming/x{i}.jpg")
    window = env.receive_all()
    first = process_sqs_records(window, env.settings, env.names)
    again = process_sqs_records(window, env.settings, env.names)
    assert again.failed_message_ids == [] and again.batch_id is None and len(again.duplicates) == 3
    assert batch_id_for(sorted(first.batched), None).split("-", 1)[1] == first.batch_id.split("-", 1)[1]
    assert len(env.executions()) == 1


# --- events that are not uploads, unsafe keys --------------------------------------------------------
def test_given_the_s3_test_event_and_other_events_then_they_are_acknowledged_not_batched(env: Env) -> None:
    sqs = aws.client("sqs")
    sqs.send_message(QueueUrl=env.queue_url, MessageBody=json.dumps(
        event("s3_test_event", BUCKET=env.names.unlabeled_bucket)))
    sqs.send_message(QueueUrl=env.queue_url, MessageBody=json.dumps(
        event("s3_object_deleted.eventbridge", BUCKET=env.names.unlabeled_bucket)))
    result = process_sqs_records(env.receive_all(), env.settings, env.names)
    assert result.failed_message_ids == [] and len(result.ignored) == 2
    assert result.batch_id is None and env.executions() == []


def _eventbridge_body(bucket: str, key: str, version: str = "v1", etag: str = "e1") -> str:
    body = event("s3_object_created.eventbridge", BUCKET=bucket, KEY=key)
    body["account"] = ACCOUNT
    body["detail"]["object"].update({"etag": etag, "version-id": version})
    return json.dumps(body)


def test_given_unsafe_keys_then_they_are_quarantined_with_a_reason_and_acknowledged(env: Env) -> None:
    env.upload("incoming/good.jpg")
    sqs = aws.client("sqs")
    bucket = env.names.unlabeled_bucket
    for key in ("incoming/%2E%2E/%2E%2E/etc/passwd", "incoming/line%0Abreak.jpg", "incoming/back%5Cslash.jpg"):
        sqs.send_message(QueueUrl=env.queue_url, MessageBody=_eventbridge_body(bucket, key))
    result = process_sqs_records(env.receive_all(), env.settings, env.names)

    assert result.failed_message_ids == []
    assert len(result.batched) == 1 and len(result.quarantined) == 3
    manifest = env.read_lines(result.manifest_uri)
    assert [line.source_ref for line in manifest] == [f"s3://{bucket}/incoming/good.jpg"]
    assert result.quarantine_uri == result.manifest_uri.replace("manifest.jsonl", "quarantine.jsonl")
    quarantined = env.read_lines(result.quarantine_uri)
    keys = sorted(line.data[OBJECT_KEY]["key"] for line in quarantined)
    assert keys == ["incoming/../../etc/passwd", "incoming/back\\slash.jpg", "incoming/line\nbreak.jpg"]
    for line in quarantined:
        info = line.quarantine()
        assert info is not None and info.reason == "unsafe-key" and info.stage == "batch"
        assert info.detail and "unsafe object key" in info.detail
        assert QUARANTINE_KEY in line.data
    assert len(env.executions()) == 1


def test_given_only_unsafe_keys_then_a_quarantine_file_and_no_execution(env: Env) -> None:
    aws.client("sqs").send_message(QueueUrl=env.queue_url,
                                   MessageBody=_eventbridge_body(env.names.unlabeled_bucket, "incoming/%2E%2E/x.jpg"))
    result = process_sqs_records(env.receive_all(), env.settings, env.names)
    assert result.failed_message_ids == [] and result.manifest_uri is None
    assert result.quarantine_uri is not None and len(env.read_lines(result.quarantine_uri)) == 1
    assert env.executions() == []


# --- failures: only the failed records go back ------------------------------------------------------
def test_given_a_failure_in_the_middle_then_only_the_failed_records_are_reported(env: Env) -> None:
    for i in range(5):
        env.upload(f"incoming/m{i}.jpg")
    messages = env.receive_all()
    by_key = {json.loads(m["Body"])["detail"]["object"]["key"]: m["MessageId"] for m in messages}
    aws.client("sqs").send_message(QueueUrl=env.queue_url, MessageBody="{not json")
    messages += env.receive_all()
    malformed = messages[-1]["MessageId"]

    ddb = aws.client("dynamodb")
    hook = _fail_calls("PutItem", lambda p: "incoming/m2.jpg" in p["Item"]["pk"]["S"])
    ddb.meta.events.register("before-parameter-build.dynamodb.PutItem", hook)
    try:
        result = process_sqs_records(messages, env.settings, env.names)
    finally:
        ddb.meta.events.unregister("before-parameter-build.dynamodb.PutItem", hook)

    assert sorted(result.failed_message_ids) == sorted([by_key["incoming/m2.jpg"], malformed])
    assert "ledger" in result.failure_reasons[by_key["incoming/m2.jpg"]]
    assert "not JSON" in result.failure_reasons[malformed]
    assert len(result.batched) == 4
    assert len(env.executions()) == 1

    # SQS redelivers only the failed two: m2 gets its own batch, the malformed one fails again (-> DLQ).
    retry = [m for m in messages if m["MessageId"] in result.failed_message_ids]
    second = process_sqs_records(retry, env.settings, env.names)
    assert second.failed_message_ids == [malformed]
    assert [json.loads(line.to_json())["source-ref"] for line in env.read_lines(second.manifest_uri)] == [
        f"s3://{env.names.unlabeled_bucket}/incoming/m2.jpg"]
    assert len(env.executions()) == 2


def test_given_the_pipeline_start_fails_then_the_batch_is_resumed_once_after_the_lease(env: Env) -> None:
    for i in range(2):
        env.upload(f"incoming/r{i}.jpg")
    window = env.receive_all()
    cp = aws.client("codepipeline")
    hook = _fail_calls("StartPipelineExecution", lambda p: True)
    cp.meta.events.register("before-parameter-build.codepipeline.StartPipelineExecution", hook)
    try:
        failed = process_sqs_records(window, env.settings, env.names, clock=lambda: 1_000.0)
    finally:
        cp.meta.events.unregister("before-parameter-build.codepipeline.StartPipelineExecution", hook)
    assert sorted(failed.failed_message_ids) == sorted(m["MessageId"] for m in window)
    ledger = BatchLedger(env.names.batch_ledger_table, lease_seconds=90)
    record = ledger.batch(batch_id_for(
        [f"{env.names.unlabeled_bucket}/{json.loads(m['Body'])['detail']['object']['key']}"
         f"#{json.loads(m['Body'])['detail']['object']['version-id']}" for m in window],
        json.loads(window[0]["Body"])["time"]))
    assert record is not None and record.status == "starting"

    # A duplicate delivery while the first invocation might still run: retried later, not batched twice.
    busy = process_sqs_records(window[:1], env.settings, env.names, clock=lambda: 1_010.0)
    assert busy.failed_message_ids == [window[0]["MessageId"]] and env.executions() == []

    # After the lease (the first invocation is surely dead) a redelivery finishes the same batch.
    lease = env.settings.trigger.batcher_timeout_seconds + 60
    resumed = process_sqs_records(window, env.settings, env.names, clock=lambda: 1_000.0 + lease)
    assert resumed.failed_message_ids == [] and resumed.resumed_batches == [record.batch_id]
    executions = env.executions()
    assert len(executions) == 1
    assert executions[0]["variables"][0]["resolvedValue"] == record.manifest_uri
    assert process_sqs_records(window, env.settings, env.names, clock=lambda: 5_000.0).resumed_batches == []
    assert len(env.executions()) == 1


def test_given_claims_of_a_dead_invocation_without_manifest_then_a_later_window_takes_them_over(env: Env) -> None:
    env.upload("incoming/t0.jpg")
    window = env.receive_all()
    body = json.loads(window[0]["Body"])["detail"]["object"]
    identity = f"{env.names.unlabeled_bucket}/incoming/t0.jpg#{body['version-id']}"
    # A dead invocation claimed the object for its batch and crashed before writing anything.
    BatchLedger(env.names.batch_ledger_table, lease_seconds=90, clock=lambda: 1_000.0).claim(identity, "dead-batch")
    env.upload("incoming/t1.jpg")
    window += env.receive_all()
    result = process_sqs_records(window, env.settings, env.names, clock=lambda: 2_000.0)
    assert result.failed_message_ids == []
    assert sorted(line.data[OBJECT_KEY]["key"] for line in env.read_lines(result.manifest_uri)) == [
        "incoming/t0.jpg", "incoming/t1.jpg"]


# --- parsing and the handler ------------------------------------------------------------------------
def test_given_a_direct_s3_notification_then_url_encoded_keys_are_decoded() -> None:
    body = {"Records": [
        {"eventName": "ObjectCreated:Put", "eventTime": "2026-11-21T08:00:00.000Z",
         "s3": {"bucket": {"name": "alp-123456789012-us-east-1-unlabeled"},
                "object": {"key": "incoming/red+flower%281%29.jpg", "size": 5, "eTag": "abc", "versionId": "v"}}},
        {"eventName": "ObjectRemoved:Delete", "s3": {"bucket": {"name": "b"}, "object": {"key": "incoming/x"}}},
    ]}
    events = parse_record(SqsRecord(messageId="m1", body=json.dumps(body)),
                          unlabeled_bucket="alp-123456789012-us-east-1-unlabeled", unlabeled_prefix="incoming/")
    assert [e.kind for e in events] == ["object", "ignored"]
    assert events[0].obj is not None and events[0].obj.key == "incoming/red flower(1).jpg"


def test_given_batch_ids_then_they_are_deterministic_and_time_sortable() -> None:
    ids = ["b/k2#v", "b/k1#v"]
    assert batch_id_for(ids, "2026-11-21T08:00:00Z") == batch_id_for(list(reversed(ids)), "2026-11-21T08:00:00Z")
    assert batch_id_for(ids, "2026-11-21T08:00:00Z").startswith("20261121T080000Z-")
    assert batch_id_for(ids, "2026-11-21T08:00:00Z") < batch_id_for(ids, "2026-11-21T09:00:00Z")
    assert batch_id_for(ids, None) != batch_id_for(ids[:1], None)


def test_given_the_lambda_handler_then_it_returns_batch_item_failures(env: Env, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import lambdas.batcher as batcher

    settings_file = tmp_path / "settings.json"
    settings_file.write_text(env.settings.to_json())
    monkeypatch.setenv("ALP_SETTINGS_URI", str(settings_file))
    monkeypatch.setattr(batcher, "_settings", SettingsOnce())
    env.upload("incoming/h.jpg")
    messages = env.receive_all()
    records = [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                "attributes": m["Attributes"], "eventSource": "aws:sqs"} for m in messages]
    records.append({"messageId": "broken", "body": "[]", "attributes": {}, "eventSource": "aws:sqs"})

    class Context:
        invoked_function_arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{env.names.batcher_function}"

    response = batcher.handler({"Records": records}, Context())
    assert response == {"batchItemFailures": [{"itemIdentifier": "broken"}]}
    assert len(env.executions()) == 1
