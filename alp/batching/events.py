"""The batcher's typed edge: SQS records and the S3 events they carry -> one ``UploadEvent`` per object.

Two event shapes reach the queue: an EventBridge ``Object Created`` event (the upload rule) and a direct S3
event notification (several records per message). Both name a bucket and an object; each object is
classified once (to batch, to quarantine, to ignore), and a message that cannot be read yields one
``malformed`` event rather than failing the window.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote_plus

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from alp import storage
from alp.manifest import ObjectIdentity

log = logging.getLogger(__name__)

EventKind = Literal["object", "quarantine", "ignored", "malformed"]


class SqsRecord(BaseModel):
    """An SQS message as a Lambda event record (``messageId``) or from ``ReceiveMessage`` (``MessageId``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    message_id: str = Field(validation_alias=AliasChoices("messageId", "MessageId"))
    body: str = Field(validation_alias=AliasChoices("body", "Body"))
    attributes: dict[str, str] = Field(default_factory=dict, validation_alias=AliasChoices("attributes", "Attributes"))

    @property
    def sent_time(self) -> str | None:
        sent = self.attributes.get("SentTimestamp")
        if sent and sent.isdigit():
            return datetime.fromtimestamp(int(sent) / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return None


class _S3Object(BaseModel):
    """The object of either event shape; EventBridge spells ``etag``/``version-id`` (moto writes ``eTag``),
    S3 notifications ``eTag``/``versionId``."""

    model_config = ConfigDict(extra="ignore")

    key: str
    size: int | None = None
    etag: str | None = Field(None, validation_alias=AliasChoices("etag", "eTag"))
    version_id: str | None = Field(None, validation_alias=AliasChoices("version-id", "versionId"))


class _S3Bucket(BaseModel):
    name: str


class _BucketObject(BaseModel):
    """An EventBridge event's ``detail`` and an S3 notification record's ``s3``: the same two fields."""

    model_config = ConfigDict(extra="ignore")

    bucket: _S3Bucket
    object: _S3Object


class _S3Record(BaseModel):
    model_config = ConfigDict(extra="ignore")

    event_name: str = Field(validation_alias=AliasChoices("eventName", "event_name"))
    event_time: str | None = Field(None, validation_alias=AliasChoices("eventTime", "event_time"))
    s3: _BucketObject


@dataclass(frozen=True)
class UploadEvent:
    """One parsed event of one SQS message."""

    message_id: str
    kind: EventKind
    reason: str = ""
    obj: ObjectIdentity | None = None

    @property
    def identity(self) -> str | None:
        return self.obj.identity if self.obj else None


def _classify_object(message_id: str, created: _BucketObject, event_time: str | None, *, unlabeled_bucket: str,
                     unlabeled_prefix: str) -> UploadEvent:
    bucket, raw = created.bucket.name, created.object
    # S3 URL-encodes keys in event notifications ("red flower.jpg" -> "red+flower.jpg").
    key = unquote_plus(raw.key)
    obj = ObjectIdentity(bucket=bucket, key=key, version_id=raw.version_id or None,
                         etag=(raw.etag or "").strip('"') or None, size=raw.size, event_time=event_time)
    if bucket != unlabeled_bucket:
        return UploadEvent(message_id, "ignored", f"object of bucket {bucket!r}, not the unlabeled bucket", obj)
    try:
        storage.validate_key(key)
    except storage.StorageError as exc:
        return UploadEvent(message_id, "quarantine", f"unsafe object key: {exc}", obj)
    if not key.startswith(unlabeled_prefix):
        return UploadEvent(message_id, "ignored", f"key outside the upload prefix {unlabeled_prefix!r}", obj)
    if key.endswith("/"):
        return UploadEvent(message_id, "ignored", "folder placeholder object, not an image", obj)
    return UploadEvent(message_id, "object", "", obj)


def parse_record(record: SqsRecord, *, unlabeled_bucket: str, unlabeled_prefix: str) -> list[UploadEvent]:
    """Every event carried by one SQS message; an unparseable message yields one ``malformed`` event."""
    mid = record.message_id
    try:
        body = json.loads(record.body)
    except json.JSONDecodeError as exc:
        return [UploadEvent(mid, "malformed", f"message body is not JSON: {exc}")]
    except RecursionError:  # a hostile, absurdly nested body must fail alone, not the whole window
        return [UploadEvent(mid, "malformed", "message body is nested too deeply")]
    if not isinstance(body, dict):
        return [UploadEvent(mid, "malformed", f"message body is a JSON {type(body).__name__}, not an object")]
    where = {"unlabeled_bucket": unlabeled_bucket, "unlabeled_prefix": unlabeled_prefix}
    try:
        if "detail-type" in body:  # EventBridge envelope
            if body.get("source") != "aws.s3" or body.get("detail-type") != "Object Created":
                return [UploadEvent(mid, "ignored", f"event {body.get('source')}/{body.get('detail-type')}")]
            detail = _BucketObject.model_validate(body.get("detail"))
            return [_classify_object(mid, detail, body.get("time") or record.sent_time, **where)]
        if body.get("Event") == "s3:TestEvent":  # sent once when a direct S3 notification is configured
            return [UploadEvent(mid, "ignored", "S3 test event")]
        if "Records" in body:  # a direct S3 event notification (several records per message)
            events = []
            for raw in body["Records"]:
                rec = _S3Record.model_validate(raw)
                if not rec.event_name.startswith("ObjectCreated:"):
                    events.append(UploadEvent(mid, "ignored", f"S3 event {rec.event_name}"))
                    continue
                events.append(_classify_object(mid, rec.s3, rec.event_time or record.sent_time, **where))
            return events
    except ValidationError as exc:
        first = exc.errors()[0]
        return [UploadEvent(mid, "malformed", f"S3 event field {'.'.join(map(str, first['loc']))}: {first['msg']}")]
    return [UploadEvent(mid, "malformed", "message is neither an EventBridge nor an S3 notification event")]


def parse_records(records: Iterable[Mapping[str, Any] | SqsRecord], *, unlabeled_bucket: str,
                  unlabeled_prefix: str) -> list[UploadEvent]:
    """The events of a whole window; a record without a body is ``malformed`` (one without an id is logged:
    there is nothing to report back to SQS)."""
    events: list[UploadEvent] = []
    for raw in records:
        try:
            record = raw if isinstance(raw, SqsRecord) else SqsRecord.model_validate(raw)
        except ValidationError:
            mid = str(raw.get("messageId") or raw.get("MessageId") or "") if isinstance(raw, Mapping) else ""
            log.error("SQS record without messageId/body: %.200r", raw)
            if mid:
                events.append(UploadEvent(mid, "malformed", "record without a body"))
            continue
        events.extend(parse_record(record, unlabeled_bucket=unlabeled_bucket, unlabeled_prefix=unlabeled_prefix))
    return events
