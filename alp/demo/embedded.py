"""The embedded AWS of the demo: a moto server on 127.0.0.1 holding the stack's resources.

The demo creates, in moto, the resources the CDK stack defines, with the names :class:`ResourceNames`
derives from the same settings: the buckets, the upload queue and its dead-letter queue, the EventBridge
rule that sends the unlabeled bucket's ``Object Created`` events to the queue, the two CodePipelines
(moto accepts and records them; executions are started by the batcher) and the model package group.

moto keeps everything in memory, so a resumed run rebuilds its S3 and registry state from a mirror kept in
the run folder (:func:`snapshot_state` after each completed round, :func:`restore_state` on start). The
unlabeled bucket's objects are restored *before* EventBridge is switched on, so restoring never emits
upload events twice.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alp import aws
from alp.resources import ResourceNames
from alp.settings import Settings

FAKE_ACCOUNT = "123456789012"  # moto's default account
# moto accepts any credentials; these keep boto3 from looking for real ones. Not secrets.
_FAKE_CREDS = {  # nosec B105
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
_MIRROR_INDEX = "index.json"
_REGISTRY_FILE = "registry.json"


def upload_event_pattern(settings: Settings, names: ResourceNames) -> dict[str, Any]:
    """The EventBridge pattern of the upload rule: objects created under the unlabeled prefix."""
    detail: dict[str, Any] = {"bucket": {"name": [names.unlabeled_bucket]}}
    prefix = settings.storage.unlabeled_prefix
    if prefix:
        detail["object"] = {"key": [{"prefix": prefix}]}
    return {"source": ["aws.s3"], "detail-type": ["Object Created"], "detail": detail}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def aws_environment(endpoint: str, region: str) -> Iterator[None]:
    """Point every boto3 client of this process at ``endpoint`` with fake credentials; restore after."""
    values = {
        **_FAKE_CREDS,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }
    saved = {k: os.environ.get(k) for k in (*values, "AWS_PROFILE")}
    os.environ.pop("AWS_PROFILE", None)  # a real profile must never be picked up by the demo
    os.environ.update(values)
    aws.reset_clients()
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
        aws.reset_clients()


@dataclass
class EmbeddedAws:
    """A running moto server; ``endpoint`` is its URL on 127.0.0.1."""

    server: Any
    endpoint: str

    @classmethod
    def start(cls, host: str = "127.0.0.1") -> EmbeddedAws:
        from moto.server import ThreadedMotoServer

        # werkzeug logs every request at INFO even with verbose=False; the demo prints its own progress.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        port = free_port(host)
        server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
        server.start()
        embedded = cls(server=server, endpoint=f"http://{host}:{port}")
        embedded.reset()
        return embedded

    def reset(self) -> None:
        """Empty moto's backends: they are process-global, so a second server would see the first's state."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")  # noqa: S310 (loopback http URL built above)
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310  # nosec B310
            resp.read()

    def stop(self) -> None:
        self.server.stop()


def account_id() -> str:
    account: str = aws.client("sts").get_caller_identity()["Account"]
    return account


# --- resources -------------------------------------------------------------------------------------
def create_buckets(names: ResourceNames) -> list[str]:
    s3 = aws.client("s3")
    buckets = [names.unlabeled_bucket, names.data_bucket, names.labeling_artifact_bucket,
               names.training_artifact_bucket, names.access_log_bucket]
    for bucket in buckets:
        if names.region == "us-east-1":
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": names.region})
    # The stack versions the unlabeled bucket: batch identities carry the version id.
    s3.put_bucket_versioning(Bucket=names.unlabeled_bucket, VersioningConfiguration={"Status": "Enabled"})
    return buckets


def create_upload_trigger(settings: Settings, names: ResourceNames) -> str:
    """Queue + DLQ, EventBridge on the unlabeled bucket, and the rule targeting the queue. Returns the queue URL."""
    sqs = aws.client("sqs")
    dlq_url = sqs.create_queue(QueueName=names.upload_dlq)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    visibility = max(6 * settings.trigger.batcher_timeout_seconds, 30)
    queue_url = sqs.create_queue(
        QueueName=names.upload_queue,
        Attributes={
            "VisibilityTimeout": str(visibility),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(settings.trigger.max_receive_count)}
            ),
        },
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events = aws.client("events")
    rule_arn = events.put_rule(
        Name=names.upload_rule,
        EventPattern=json.dumps(upload_event_pattern(settings, names)),
        State="ENABLED",
        Description="Objects created in the unlabeled bucket -> upload queue",
    )["RuleArn"]
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
        }],
    })})
    events.put_targets(Rule=names.upload_rule, Targets=[{"Id": "upload-queue", "Arn": queue_arn}])
    return str(queue_url)


def enable_bucket_events(names: ResourceNames) -> None:
    aws.client("s3").put_bucket_notification_configuration(
        Bucket=names.unlabeled_bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )


def create_pipelines(names: ResourceNames) -> None:
    """Record both CodePipelines (V2, with their variables) so the batcher's start call finds them."""
    from alp.steps import LABELING_PIPELINE, TRAINING_PIPELINE

    iam = aws.client("iam")
    role_name = f"{names.labeling_pipeline}-pipeline-role"
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "codepipeline.amazonaws.com"}, "Action": "sts:AssumeRole",
    }]}
    role_arn = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    cp = aws.client("codepipeline")
    for pipeline_name, spec in ((names.labeling_pipeline, LABELING_PIPELINE),
                                (names.training_pipeline, TRAINING_PIPELINE)):
        stages: list[dict[str, Any]] = [{
            "name": "Source",
            "actions": [{
                "name": "Settings", "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "S3",
                                                    "version": "1"},
                "configuration": {"S3Bucket": names.data_bucket, "S3ObjectKey": "config/source.zip",
                                  "PollForSourceChanges": "false"},
                "outputArtifacts": [{"name": "Source"}],
            }],
        }]
        for step in spec.steps:
            stages.append({"name": step.name, "actions": [{
                "name": step.name,
                "actionTypeId": {"category": "Build", "owner": "AWS", "provider": "CodeBuild", "version": "1"},
                "configuration": {"ProjectName": f"{pipeline_name}-{step.name.lower()}"},
                "inputArtifacts": [{"name": "Source"}],
            }]})
        cp.create_pipeline(pipeline={
            "name": pipeline_name,
            "roleArn": role_arn,
            "artifactStore": {"type": "S3", "location": names.training_artifact_bucket},
            "stages": stages,
            "pipelineType": "V2",
            "variables": [{"name": v.name, "defaultValue": v.default or "unset", "description": v.description}
                          for v in spec.variables],
        })


def create_batch_ledger(names: ResourceNames) -> None:
    """The batcher's exactly-once ledger: partition key ``pk``, TTL on ``expires_at`` (as the stack)."""
    from alp.batching import LEDGER_KEY

    if not names.batch_ledger_table:
        return
    ddb = aws.client("dynamodb")
    ddb.create_table(
        TableName=names.batch_ledger_table,
        AttributeDefinitions=[{"AttributeName": LEDGER_KEY, "AttributeType": "S"}],
        KeySchema=[{"AttributeName": LEDGER_KEY, "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.update_time_to_live(TableName=names.batch_ledger_table,
                            TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})


def create_stack_resources(settings: Settings, names: ResourceNames, *, mirror: Path | None = None) -> str:
    """Everything the demo needs from the stack; returns the upload queue URL.

    With ``mirror``, the S3 objects and the registry kept there are restored before the upload trigger
    is switched on.
    """
    from alp.registry import ensure_model_package_group

    create_buckets(names)
    if mirror is not None:
        restore_state(settings, names, mirror)
    queue_url = create_upload_trigger(settings, names)
    enable_bucket_events(names)
    create_pipelines(names)
    create_batch_ledger(names)
    ensure_model_package_group(settings)
    return queue_url


# --- mirror of the in-memory state, for resume -------------------------------------------------------
def _buckets(names: ResourceNames) -> list[str]:
    return [names.unlabeled_bucket, names.data_bucket, names.labeling_artifact_bucket,
            names.training_artifact_bucket]


def snapshot_state(settings: Settings, names: ResourceNames, mirror: Path) -> int:
    """Copy new or changed objects of the stack's buckets and the registry to ``mirror``; returns objects copied."""
    from alp.registry import list_bundles

    s3 = aws.client("s3")
    copied = 0
    for bucket in _buckets(names):
        root = mirror / "s3" / bucket
        index_path = root / _MIRROR_INDEX
        index: dict[str, str] = json.loads(index_path.read_text()) if index_path.is_file() else {}
        seen: dict[str, str] = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                key, etag = obj["Key"], obj["ETag"]
                seen[key] = etag
                if index.get(key) == etag:
                    continue
                target = root / "objects" / key
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
                copied += 1
        for gone in set(index) - set(seen):
            (root / "objects" / gone).unlink(missing_ok=True)
        root.mkdir(parents=True, exist_ok=True)
        index_path.write_text(json.dumps(seen, sort_keys=True))
    packages = [b.model_dump(mode="json") for b in sorted(list_bundles(settings), key=lambda b: b.version)]
    (mirror / _REGISTRY_FILE).write_text(json.dumps(packages, indent=1))
    return copied


def mirrored_path(mirror: Path, uri: str) -> Path:
    """Where the mirror keeps the object ``uri`` (valid after the round that wrote it completed)."""
    from alp.storage import parse_s3_uri

    loc = parse_s3_uri(uri)
    return mirror / "s3" / loc.bucket / "objects" / loc.key


def restore_state(settings: Settings, names: ResourceNames, mirror: Path) -> int:
    """Upload the mirrored objects and re-register the mirrored bundles in order; returns objects restored."""
    from alp.registry import register_bundle

    s3 = aws.client("s3")
    restored = 0
    for bucket in _buckets(names):
        root = mirror / "s3" / bucket
        index_path = root / _MIRROR_INDEX
        if not index_path.is_file():
            continue
        for key in sorted(json.loads(index_path.read_text())):
            path = root / "objects" / key
            if path.is_file():
                s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
                restored += 1
    registry_path = mirror / _REGISTRY_FILE
    if registry_path.is_file():
        for pkg in json.loads(registry_path.read_text()):
            register_bundle(settings, pkg["bundle_uri"], approved=pkg["status"] == "Approved",
                            metrics=pkg.get("metrics") or None, report_uri=pkg.get("report_uri"),
                            create_group_if_missing=True)
    return restored


def receive_upload_records(queue_url: str, *, max_messages: int = 10, wait_seconds: int = 0) -> list[dict[str, Any]]:
    """Receive SQS messages and shape them like the records of a Lambda SQS event."""
    sqs = aws.client("sqs")
    resp = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=max_messages, WaitTimeSeconds=wait_seconds,
                               AttributeNames=["All"], MessageAttributeNames=["All"])
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    region = os.environ.get("AWS_REGION", "us-east-1")
    return [{
        "messageId": m["MessageId"],
        "receiptHandle": m["ReceiptHandle"],
        "body": m["Body"],
        "attributes": m.get("Attributes", {}),
        "messageAttributes": m.get("MessageAttributes", {}),
        "md5OfBody": m.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    } for m in resp.get("Messages", [])]


def delete_records(queue_url: str, records: list[dict[str, Any]], failed_ids: set[str]) -> None:
    """Delete handled messages (what Lambda does for records not reported as batch item failures)."""
    sqs = aws.client("sqs")
    entries = [{"Id": str(i), "ReceiptHandle": r["receiptHandle"]}
               for i, r in enumerate(records) if r["messageId"] not in failed_ids]
    for start in range(0, len(entries), 10):
        chunk = entries[start:start + 10]
        if chunk:
            sqs.delete_message_batch(QueueUrl=queue_url, Entries=chunk)
