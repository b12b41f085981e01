"""The embedded AWS of the demo: a moto server on 127.0.0.1 holding the stack's resources.

The demo creates, in moto, the resources of the CDK stack as synthesized for its settings
(:mod:`alp.cloudformation`): the buckets with their versioning, encryption and lifecycle, the upload queue
and its dead-letter queue, the EventBridge rule that sends the unlabeled bucket's ``Object Created`` events
to the queue, the batch ledger, the IAM roles, the two CodePipelines (moto records them; executions are
started by the batcher), the model package group and what the stack deploys into the data bucket.

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alp import aws
from alp.environment import patched_environ
from alp.resources import ResourceNames
from alp.settings import Settings

if TYPE_CHECKING:
    from alp.cloudformation.embedded_stack import EmbeddedStack

FAKE_ACCOUNT = "123456789012"  # moto's default account
# moto accepts any credentials; these keep boto3 from looking for real ones. Not secrets.
_FAKE_CREDS = {  # nosec B105
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
_MIRROR_INDEX = "index.json"
REGISTRY_FILE = "registry.json"


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


def port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


@contextmanager
def aws_environment(endpoint: str, region: str) -> Iterator[None]:
    """Point every boto3 client of this process at ``endpoint`` with fake credentials; restore after."""
    values = {
        **_FAKE_CREDS,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }
    # a real profile must never be picked up by the demo
    with patched_environ({**values, "AWS_PROFILE": None}):
        aws.reset_clients()
        try:
            yield
        finally:
            aws.reset_clients()


@dataclass
class EmbeddedAws:
    """A running moto server; ``endpoint`` is its URL on 127.0.0.1."""

    server: Any
    endpoint: str

    @classmethod
    def start(cls, host: str = "127.0.0.1", port: int | None = None) -> EmbeddedAws:
        """On ``port`` when given and free (a local project keeps its port: Label Studio's image links name it),
        else on any free port."""
        from moto.server import ThreadedMotoServer

        # werkzeug logs every request at INFO even with verbose=False; the demo prints its own progress.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        port = port if port is not None and port_free(host, port) else free_port(host)
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
    return aws.account_id()


# --- resources -------------------------------------------------------------------------------------
def create_stack_from_templates(settings: Settings, names: ResourceNames, *, mirror: Path | None = None,
                                cdk_out: Path | None = None,
                                also_restore: Callable[[], object] | None = None) -> EmbeddedStack:
    """The stack as synthesized for ``settings`` (or read from ``cdk_out``), created in the embedded AWS.

    With ``mirror``, the S3 objects and the registry kept there are restored before the bucket's upload
    events are switched on; so is what ``also_restore`` puts back (a local project's frames)."""
    from alp.cloudformation.embedded_stack import create_stack
    from alp.cloudformation.synth import stack_settings, synthesize_cached
    from alp.cloudformation.template import StackTemplate

    folder = cdk_out or synthesize_cached(stack_settings(settings))
    template = StackTemplate.load(folder, account=names.account, region=names.region)
    def restore() -> None:
        if mirror is not None:
            restore_state(settings, names, mirror)
        if also_restore is not None:
            also_restore()

    return create_stack(template, before_events=restore)


def create_stack_resources(settings: Settings, names: ResourceNames, *, mirror: Path | None = None,
                           also_restore: Callable[[], object] | None = None) -> str:
    """Everything the demo needs from the stack, from its synthesized template; returns the upload queue URL."""
    stack = create_stack_from_templates(settings, names, mirror=mirror, also_restore=also_restore)
    return stack.queue_for(names.batcher_function)


# --- mirror of the in-memory state, for resume -------------------------------------------------------
def mirrored_buckets(names: ResourceNames, *, with_uploads: bool = True) -> list[str]:
    """The stack's buckets a mirror keeps; a local project keeps its frames itself (``with_uploads=False``)."""
    uploads = [names.unlabeled_bucket] if with_uploads else []
    return [*uploads, names.data_bucket, names.labeling_artifact_bucket, names.training_artifact_bucket]


@dataclass(frozen=True)
class _BucketMirror:
    """One bucket in the mirror: its objects under ``objects/<key>`` and an index of key -> ETag."""

    root: Path

    @classmethod
    def of(cls, mirror: Path, bucket: str) -> _BucketMirror:
        return cls(mirror / "s3" / bucket)

    def object_path(self, key: str) -> Path:
        return self.root / "objects" / key

    def read_index(self) -> dict[str, str]:
        path = self.root / _MIRROR_INDEX
        index: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
        return index

    def write_index(self, index: dict[str, str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{_MIRROR_INDEX}.tmp"
        tmp.write_text(json.dumps(index, sort_keys=True))
        os.replace(tmp, self.root / _MIRROR_INDEX)


def snapshot_state(settings: Settings, names: ResourceNames, mirror: Path, *,
                   buckets: list[str] | None = None) -> int:
    """Copy new or changed objects of the stack's buckets (or ``buckets``) and the registry to ``mirror``; returns
    objects copied."""
    from alp.registry import list_bundles

    s3 = aws.client("s3")
    copied = 0
    for bucket in mirrored_buckets(names) if buckets is None else buckets:
        kept = _BucketMirror.of(mirror, bucket)
        index = kept.read_index()
        seen: dict[str, str] = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                key, etag = obj["Key"], obj["ETag"]
                seen[key] = etag
                if index.get(key) == etag:
                    continue
                target = kept.object_path(key)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
                copied += 1
        for gone in set(index) - set(seen):
            kept.object_path(gone).unlink(missing_ok=True)
        kept.write_index(seen)
    packages = [b.model_dump(mode="json") for b in sorted(list_bundles(settings), key=lambda b: b.version)]
    tmp = mirror / f".{REGISTRY_FILE}.tmp"
    tmp.write_text(json.dumps(packages, indent=1))
    os.replace(tmp, mirror / REGISTRY_FILE)  # whole or as it was: a kill mid-copy must not empty the registry
    return copied


def mirrored_path(mirror: Path, uri: str) -> Path:
    """Where the mirror keeps the object ``uri`` (valid after the round that wrote it completed)."""
    from alp.storage import parse_s3_uri

    loc = parse_s3_uri(uri)
    return _BucketMirror.of(mirror, loc.bucket).object_path(loc.key)


def restore_state(settings: Settings, names: ResourceNames, mirror: Path) -> int:
    """Upload the mirrored objects and re-register the mirrored bundles in order; returns objects restored."""
    from alp.registry import RegisteredBundle, register_bundle

    s3 = aws.client("s3")
    restored = 0
    for bucket in mirrored_buckets(names):
        kept = _BucketMirror.of(mirror, bucket)
        for key in sorted(kept.read_index()):
            path = kept.object_path(key)
            if path.is_file():
                s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
                restored += 1
    registry_path = mirror / REGISTRY_FILE
    if registry_path.is_file():
        for pkg in json.loads(registry_path.read_text()):
            bundle = RegisteredBundle.model_validate(pkg)
            register_bundle(settings, bundle.bundle_uri, approved=bundle.status == "Approved",
                            metrics=bundle.metrics or None, report_uri=bundle.report_uri,
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
