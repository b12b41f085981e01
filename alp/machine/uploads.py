"""A round's uploads into the embedded AWS, and the batcher run over the events they raised.

Uploads go under the trigger's prefix of the unlabeled bucket, as a camera fleet's would; S3 -> EventBridge
-> SQS delivers their events, and :func:`batch_uploads` hands them to the batcher (the Lambda's own
function) as one window, as Lambda's SQS source would.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from alp import aws
from alp.machine import embedded
from alp.machine.console import say, upload_bar
from alp.machine.pipelines import StepFailed
from alp.resources import ResourceNames
from alp.settings import Settings

QUEUE_WAIT_SECONDS = 60


def upload_images(bucket: str, prefix: str, images: Mapping[str, Path], *, desc: str,
                  show_progress: bool) -> list[str]:
    """Put each local image under ``prefix`` with its name as the key; returns the S3 URIs."""
    s3 = aws.client("s3")
    uris = []
    with upload_bar(len(images), desc, enabled=show_progress) as bar:
        for name, local in images.items():
            key = f"{prefix}{name}"
            s3.put_object(Bucket=bucket, Key=key, Body=local.read_bytes(), ContentType="image/jpeg")
            uris.append(f"s3://{bucket}/{key}")
            bar.update(1)
    return uris


def upload_broken(bucket: str, prefix: str, sources: Sequence[Path], rnd: int) -> list[str]:
    """Uploads that are not usable images (a truncated JPEG, a text file), one per source: real buckets get
    them too, and the pipeline must quarantine them with a reason rather than lose or crash on them.
    Returns the keys."""
    keys = []
    for i, source in enumerate(sources):
        data = source.read_bytes()
        body = data[: len(data) // 3] if i % 2 == 0 else b"not an image, uploaded by mistake\n"
        key = f"{prefix}broken-r{rnd}-{i}.jpg"
        aws.client("s3").put_object(Bucket=bucket, Key=key, Body=body)
        keys.append(key)
    return keys


def batch_uploads(queue_url: str, expected: int, settings: Settings, names: ResourceNames) -> str:
    """Collect ``expected`` upload events from SQS and hand them to the batcher as one Lambda window;
    returns the batch manifest's URI."""
    from alp.batching.window import process_sqs_records

    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + QUEUE_WAIT_SECONDS
    while len(records) < expected and time.monotonic() < deadline:
        records.extend(embedded.receive_upload_records(queue_url, wait_seconds=1))
    if len(records) < expected:
        raise StepFailed(f"only {len(records)} of {expected} upload events reached the queue in "
                         f"{QUEUE_WAIT_SECONDS}s")
    result = process_sqs_records(records, settings, names)
    embedded.delete_records(queue_url, records, set(result.failed_message_ids))
    if result.failed_message_ids or not result.manifest_uri:
        raise StepFailed(f"the batcher failed: {result.failure_reasons or result.summary()}")
    say(f"  batcher: {len(result.batched)} objects -> batch {result.batch_id}, labeling execution "
        f"{result.execution_id}")
    return result.manifest_uri
