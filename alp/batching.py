"""Upload batching: S3 Object Created events (via EventBridge and SQS) -> one batch manifest per window.

The batcher Lambda receives up to ``settings.trigger.max_batch_records`` SQS messages collected during
``settings.trigger.batching_window_seconds``; one invocation is one *window*. For a window it

1. parses each message into typed events (EventBridge ``Object Created`` or a direct S3 notification;
   the S3 test event and other event types are acknowledged and logged),
2. deduplicates the objects by identity (bucket, key and version id, else ETag),
3. claims every identity in a DynamoDB ledger with a conditional write, so an object that S3,
   EventBridge or SQS delivers twice - in the same window or a later one - lands in exactly one batch,
4. writes ``s3://<data bucket>/<batches_prefix><batch_id>/manifest.jsonl`` (and ``quarantine.jsonl`` for
   objects whose key is unsafe), and
5. starts one labeling-pipeline execution with the manifest URI as its ``BatchManifestUri`` variable.

The ``batch_id`` is derived from the window's content (time of its earliest event + a hash of its
identities), so a retried invocation of the same window writes the same batch, and the pipeline is
started with the batch id as CodePipeline's idempotency token. A message is acknowledged only once its
object belongs to a batch whose execution has started (or is recorded in a quarantine file); anything
else is reported back to SQS as a batch item failure, retried, and finally parked in the dead-letter queue
(which raises an alarm). Nothing is dropped silently.

Layout: pure parsing and planning functions first, then one adapter per AWS service (DynamoDB ledger,
CodePipeline), then :func:`process_sqs_records`, the entry point of the Lambda handler and the demo.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote_plus

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from alp import aws, storage
from alp.manifest import OBJECT_KEY, QUARANTINE_KEY, ManifestLine, ObjectIdentity, QuarantineInfo, dumps_lines
from alp.observability import emit_metrics
from alp.resources import ResourceNames
from alp.settings import Settings
from alp.steps import LABELING_PIPELINE

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
QUARANTINE_NAME = "quarantine.jsonl"
BATCH_METRICS_STEP = "Batch"
LEDGER_KEY = "pk"
# The ledger only has to outlive every redelivery of an event: SQS keeps a message at most 14 days.
LEDGER_TTL_SECONDS = 30 * 24 * 3600
_LEASE_MARGIN_SECONDS = 30

EventKind = Literal["object", "quarantine", "ignored", "malformed"]


class BatchingError(RuntimeError):
    """A batch could not be written or its pipeline execution could not be started."""


# --------------------------------------------------------------------------------------------------
# Typed edges: the SQS record and the two S3 event shapes
# --------------------------------------------------------------------------------------------------
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


class _EbObject(BaseModel):
    model_config = ConfigDict(extra="ignore")

    key: str
    size: int | None = None
    # Real EventBridge events spell it "etag"; moto writes "eTag".
    etag: str | None = Field(None, validation_alias=AliasChoices("etag", "eTag"))
    version_id: str | None = Field(None, validation_alias=AliasChoices("version-id", "versionId"))


class _EbBucket(BaseModel):
    name: str


class _EbDetail(BaseModel):
    model_config = ConfigDict(extra="ignore")

    bucket: _EbBucket
    object: _EbObject


class _S3Object(BaseModel):
    model_config = ConfigDict(extra="ignore")

    key: str
    size: int | None = None
    etag: str | None = Field(None, validation_alias=AliasChoices("eTag", "etag"))
    version_id: str | None = Field(None, validation_alias=AliasChoices("versionId", "version-id"))


class _S3Entity(BaseModel):
    model_config = ConfigDict(extra="ignore")

    bucket: _EbBucket
    object: _S3Object


class _S3Record(BaseModel):
    model_config = ConfigDict(extra="ignore")

    event_name: str = Field(validation_alias=AliasChoices("eventName", "event_name"))
    event_time: str | None = Field(None, validation_alias=AliasChoices("eventTime", "event_time"))
    s3: _S3Entity


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


# --------------------------------------------------------------------------------------------------
# Pure functions: parse, classify, plan
# --------------------------------------------------------------------------------------------------
def _classify_object(message_id: str, bucket: str, raw_key: str, *, size: int | None, etag: str | None,
                     version_id: str | None, event_time: str | None, unlabeled_bucket: str,
                     unlabeled_prefix: str) -> UploadEvent:
    # S3 URL-encodes keys in event notifications ("red flower.jpg" -> "red+flower.jpg").
    key = unquote_plus(raw_key)
    obj = ObjectIdentity(bucket=bucket, key=key, version_id=version_id or None,
                         etag=(etag or "").strip('"') or None, size=size, event_time=event_time)
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
    common = {"unlabeled_bucket": unlabeled_bucket, "unlabeled_prefix": unlabeled_prefix}
    try:
        if "detail-type" in body:  # EventBridge envelope
            if body.get("source") != "aws.s3" or body.get("detail-type") != "Object Created":
                return [UploadEvent(mid, "ignored", f"event {body.get('source')}/{body.get('detail-type')}")]
            detail = _EbDetail.model_validate(body.get("detail"))
            return [_classify_object(mid, detail.bucket.name, detail.object.key, size=detail.object.size,
                                     etag=detail.object.etag, version_id=detail.object.version_id,
                                     event_time=body.get("time") or record.sent_time, **common)]
        if body.get("Event") == "s3:TestEvent":  # sent once when a direct S3 notification is configured
            return [UploadEvent(mid, "ignored", "S3 test event")]
        if "Records" in body:  # a direct S3 event notification (several records per message)
            events = []
            for raw in body["Records"]:
                rec = _S3Record.model_validate(raw)
                if not rec.event_name.startswith("ObjectCreated:"):
                    events.append(UploadEvent(mid, "ignored", f"S3 event {rec.event_name}"))
                    continue
                events.append(_classify_object(mid, rec.s3.bucket.name, rec.s3.object.key, size=rec.s3.object.size,
                                               etag=rec.s3.object.etag, version_id=rec.s3.object.version_id,
                                               event_time=rec.event_time or record.sent_time, **common))
            return events
    except ValidationError as exc:
        first = exc.errors()[0]
        return [UploadEvent(mid, "malformed", f"S3 event field {'.'.join(map(str, first['loc']))}: {first['msg']}")]
    return [UploadEvent(mid, "malformed", "message is neither an EventBridge nor an S3 notification event")]


@dataclass
class WindowPlan:
    """The events of one window, deduplicated by object identity."""

    objects: dict[str, ObjectIdentity] = field(default_factory=dict)
    quarantined: dict[str, tuple[ObjectIdentity, str]] = field(default_factory=dict)
    messages_of: dict[str, set[str]] = field(default_factory=dict)
    ignored: list[UploadEvent] = field(default_factory=list)
    malformed: list[UploadEvent] = field(default_factory=list)
    earliest_time: str | None = None

    @property
    def identities(self) -> list[str]:
        return sorted({*self.objects, *self.quarantined})


def plan_window(events: Iterable[UploadEvent]) -> WindowPlan:
    """Group the window's events: each object identity once, with every message that carried it."""
    plan = WindowPlan()
    for ev in events:
        if ev.kind == "ignored":
            plan.ignored.append(ev)
            continue
        if ev.kind == "malformed" or ev.obj is None:
            plan.malformed.append(ev)
            continue
        ident = ev.obj.identity
        plan.messages_of.setdefault(ident, set()).add(ev.message_id)
        if ev.kind == "object":
            plan.objects.setdefault(ident, ev.obj)
        else:
            plan.quarantined.setdefault(ident, (ev.obj, ev.reason))
        t = ev.obj.event_time
        if t and (plan.earliest_time is None or t < plan.earliest_time):
            plan.earliest_time = t
    return plan


def batch_id_for(identities: Sequence[str], earliest_time: str | None) -> str:
    """Deterministic, time-sortable batch id: ``YYYYMMDDTHHMMSSZ-<16 hex of the identities' hash>``."""
    digest = hashlib.sha256("\n".join(sorted(identities)).encode("utf-8")).hexdigest()[:16]
    stamp = "00000000T000000Z"
    if earliest_time:
        try:
            parsed = datetime.fromisoformat(earliest_time.replace("Z", "+00:00"))
            stamp = parsed.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        except ValueError:
            pass  # an unparsable time only loses the sort prefix, never the determinism
    return f"{stamp}-{digest}"


def manifest_lines(objects: Iterable[ObjectIdentity]) -> list[ManifestLine]:
    """Batch-manifest lines, sorted by key so the same batch always serializes to the same bytes."""
    return [
        ManifestLine.for_image(f"s3://{o.bucket}/{o.key}", **{OBJECT_KEY: o.dump()})
        for o in sorted(objects, key=lambda o: (o.key, o.identity))
    ]


def quarantine_lines(items: Iterable[tuple[ObjectIdentity, str]]) -> list[ManifestLine]:
    out = []
    for obj, reason in sorted(items, key=lambda item: (item[0].key, item[0].identity)):
        info = QuarantineInfo(reason="unsafe-key", stage="batch", detail=reason)
        out.append(ManifestLine.for_image(f"s3://{obj.bucket}/{obj.key}",
                                          **{OBJECT_KEY: obj.dump(), QUARANTINE_KEY: info.dump()}))
    return out


def batch_dir_uri(data_bucket: str, batches_prefix: str, batch_id: str) -> str:
    return f"s3://{data_bucket}/{batches_prefix}{batch_id}/"


# --------------------------------------------------------------------------------------------------
# Adapters: the DynamoDB ledger and CodePipeline
# --------------------------------------------------------------------------------------------------
ClaimStatus = Literal["claimed", "duplicate", "busy", "resume"]


@dataclass(frozen=True)
class Claim:
    status: ClaimStatus
    owner_batch: str


@dataclass(frozen=True)
class BatchRecord:
    batch_id: str
    status: Literal["starting", "started", "recorded"]
    manifest_uri: str = ""
    execution_id: str = ""


class BatchLedger:
    """Exactly-once bookkeeping in one DynamoDB table (partition key ``pk``, TTL attribute ``expires_at``).

    ``object#<identity>`` items say which batch owns an object; ``batch#<id>`` items say how far a batch
    got. A claim whose batch never reached ``starting`` and whose owner's lease ran out (the invocation
    died: SQS redelivers only after the visibility timeout) is taken over by the next window.
    """

    def __init__(self, table: str, *, lease_seconds: int, clock: Callable[[], float] = time.time):
        if not table:
            raise BatchingError("no ledger table name (ResourceNames.batch_ledger_table is empty)")
        self.table = table
        self.lease_seconds = lease_seconds
        self.clock = clock
        self._ddb = aws.client("dynamodb")

    def _expires(self, now: float) -> dict[str, str]:
        return {"N": str(int(now) + LEDGER_TTL_SECONDS)}

    def claim(self, identity: str, batch_id: str) -> Claim:
        """Claim ``identity`` for ``batch_id``; says who owns it when someone else does."""
        now = self.clock()
        key = {LEDGER_KEY: {"S": f"object#{identity}"}}
        try:
            self._ddb.put_item(
                TableName=self.table,
                Item={**key, "batch_id": {"S": batch_id}, "claimed_at": {"N": f"{now:.3f}"},
                      "expires_at": self._expires(now)},
                ConditionExpression="attribute_not_exists(#pk) OR batch_id = :b",
                ExpressionAttributeNames={"#pk": LEDGER_KEY},
                ExpressionAttributeValues={":b": {"S": batch_id}},
            )
            return Claim("claimed", batch_id)
        except self._ddb.exceptions.ConditionalCheckFailedException:
            pass
        item = self._ddb.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item")
        if item is None:  # its claim expired between the two calls: try once more
            return self.claim(identity, batch_id)
        owner = item["batch_id"]["S"]
        claimed_at = item["claimed_at"]["N"]
        record = self.batch(owner)
        if record is not None and record.status in ("started", "recorded"):
            return Claim("duplicate", owner)
        lease_over = float(claimed_at) + self.lease_seconds < now
        if not lease_over:
            return Claim("busy", owner)
        if record is not None:  # "starting": the dead owner wrote the manifest; finish its start
            return Claim("resume", owner)
        try:
            self._ddb.update_item(
                TableName=self.table, Key=key,
                UpdateExpression="SET batch_id = :b, claimed_at = :now, expires_at = :exp",
                ConditionExpression="batch_id = :old AND claimed_at = :old_at",
                ExpressionAttributeValues={":b": {"S": batch_id}, ":now": {"N": f"{now:.3f}"},
                                           ":exp": self._expires(now), ":old": {"S": owner},
                                           ":old_at": {"N": claimed_at}},
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            return Claim("busy", owner)
        log.warning("took over %s from abandoned batch %s", identity, owner)
        return Claim("claimed", batch_id)

    def batch(self, batch_id: str) -> BatchRecord | None:
        item = self._ddb.get_item(TableName=self.table, Key={LEDGER_KEY: {"S": f"batch#{batch_id}"}},
                                  ConsistentRead=True).get("Item")
        if item is None:
            return None
        return BatchRecord(batch_id, item["status"]["S"], item.get("manifest_uri", {}).get("S", ""),
                           item.get("execution_id", {}).get("S", ""))

    def record_batch(self, record: BatchRecord, *, objects: int = 0, quarantined: int = 0) -> None:
        now = self.clock()
        self._ddb.put_item(TableName=self.table, Item={
            LEDGER_KEY: {"S": f"batch#{record.batch_id}"}, "status": {"S": record.status},
            "manifest_uri": {"S": record.manifest_uri}, "execution_id": {"S": record.execution_id},
            "objects": {"N": str(objects)}, "quarantined": {"N": str(quarantined)},
            "updated_at": {"N": f"{now:.3f}"}, "expires_at": self._expires(now),
        })


def start_labeling_execution(pipeline: str, manifest_uri: str, batch_id: str) -> str:
    """Start the labeling pipeline for one batch; the batch id is the idempotency token."""
    variable = LABELING_PIPELINE.variables[0]
    response = aws.client("codepipeline").start_pipeline_execution(
        name=pipeline,
        variables=[{"name": variable.name, "value": manifest_uri}],
        clientRequestToken=batch_id,
    )
    return str(response["pipelineExecutionId"])


# --------------------------------------------------------------------------------------------------
# The window: plan -> claim -> write -> start
# --------------------------------------------------------------------------------------------------
@dataclass
class BatchResult:
    """What one window produced; ``failed_message_ids`` go back to SQS for another try."""

    batch_id: str | None = None
    manifest_uri: str | None = None
    quarantine_uri: str | None = None
    execution_id: str | None = None
    batched: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    resumed_batches: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    failed_message_ids: list[str] = field(default_factory=list)
    failure_reasons: dict[str, str] = field(default_factory=dict)

    def lambda_response(self) -> dict[str, list[dict[str, str]]]:
        """The ``ReportBatchItemFailures`` response of an SQS-triggered Lambda."""
        return {"batchItemFailures": [{"itemIdentifier": m} for m in self.failed_message_ids]}

    def summary(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id, "manifest_uri": self.manifest_uri, "quarantine_uri": self.quarantine_uri,
            "execution_id": self.execution_id, "batched": len(self.batched), "quarantined": len(self.quarantined),
            "duplicates": len(self.duplicates), "resumed_batches": self.resumed_batches,
            "ignored": len(self.ignored), "failed_messages": len(self.failed_message_ids),
        }


def _lease_seconds(settings: Settings) -> int:
    return settings.trigger.batcher_timeout_seconds + _LEASE_MARGIN_SECONDS


def process_sqs_records(records: Sequence[Mapping[str, Any] | SqsRecord], settings: Settings,
                        names: ResourceNames, *, clock: Callable[[], float] = time.time) -> BatchResult:
    """Batch one window of SQS messages (Lambda event records or ``ReceiveMessage`` messages).

    Returns the result; messages listed in ``failed_message_ids`` must not be deleted from the queue.
    """
    result = BatchResult()
    failed: dict[str, str] = {}

    def fail(message_ids: Iterable[str], reason: str) -> None:
        for m in message_ids:
            failed.setdefault(m, reason)

    events: list[UploadEvent] = []
    for raw in records:
        try:
            rec = raw if isinstance(raw, SqsRecord) else SqsRecord.model_validate(raw)
        except ValidationError:
            mid = str(raw.get("messageId") or raw.get("MessageId") or "") if isinstance(raw, Mapping) else ""
            log.error("SQS record without messageId/body: %.200r", raw)
            if mid:
                fail([mid], "record without a body")
            continue
        events.extend(parse_record(rec, unlabeled_bucket=names.unlabeled_bucket,
                                   unlabeled_prefix=settings.storage.unlabeled_prefix))
    plan = plan_window(events)
    for ev in plan.ignored:
        log.info("acknowledged without batching: message %s: %s", ev.message_id, ev.reason)
        result.ignored.append(ev.message_id)
    for ev in plan.malformed:
        # Retried, then parked in the dead-letter queue, whose alarm tells a person to look.
        log.error("malformed message %s: %s", ev.message_id, ev.reason)
        fail([ev.message_id], ev.reason)

    if plan.identities:
        _commit_window(plan, settings, names, result, fail, clock)

    # A message with one failed event is retried whole; its other events are deduplicated next time.
    result.failed_message_ids = sorted(failed)
    result.failure_reasons = failed
    emit_metrics(BATCH_METRICS_STEP, {
        "objects_batched": len(result.batched), "images_quarantine": len(result.quarantined),
        "duplicate_events": len(result.duplicates), "ignored_events": len(result.ignored),
        "failed_messages": len(result.failed_message_ids),
    }, namespace=settings.observability.metrics_namespace)
    log.info("window done: %s", json.dumps(result.summary(), sort_keys=True))
    return result


def _commit_window(plan: WindowPlan, settings: Settings, names: ResourceNames, result: BatchResult,
                   fail: Callable[[Iterable[str], str], None], clock: Callable[[], float]) -> None:
    ledger = BatchLedger(names.batch_ledger_table, lease_seconds=_lease_seconds(settings), clock=clock)
    batch_id = batch_id_for(plan.identities, plan.earliest_time)
    claimed: list[str] = []
    to_resume: dict[str, list[str]] = {}
    for ident in plan.identities:
        try:
            claim = ledger.claim(ident, batch_id)
        except Exception as exc:  # noqa: BLE001 - one object's ledger error must not fail the window
            log.exception("ledger claim failed for %s", ident)
            fail(plan.messages_of[ident], f"ledger: {exc}")
            continue
        if claim.status == "claimed":
            claimed.append(ident)
        elif claim.status == "duplicate":
            result.duplicates.append(ident)
        elif claim.status == "resume":
            to_resume.setdefault(claim.owner_batch, []).append(ident)
        else:
            fail(plan.messages_of[ident], f"batch {claim.owner_batch} of another invocation is in progress")

    for owner, idents in sorted(to_resume.items()):
        try:
            _resume_batch(ledger, owner, names)
            result.resumed_batches.append(owner)
            result.duplicates.extend(idents)
        except Exception as exc:  # noqa: BLE001
            log.exception("resuming batch %s failed", owner)
            fail((m for i in idents for m in plan.messages_of[i]), f"resume {owner}: {exc}")

    objects = [plan.objects[i] for i in claimed if i in plan.objects]
    quarantined = [plan.quarantined[i] for i in claimed if i in plan.quarantined]
    if not claimed:
        return
    # The same window again (SQS redelivered it after a success, or after a crash mid-commit): its claims
    # are already ours, so the batch record decides whether anything is left to do.
    try:
        existing = ledger.batch(batch_id)
        if existing is not None and existing.status == "starting":
            _resume_batch(ledger, batch_id, names)
            result.resumed_batches.append(batch_id)
        if existing is not None:
            result.duplicates.extend(claimed)
            return
    except Exception as exc:  # noqa: BLE001
        log.exception("batch %s could not be checked or resumed", batch_id)
        fail((m for i in claimed for m in plan.messages_of[i]), f"batch {batch_id}: {exc}")
        return
    batch_dir = batch_dir_uri(names.data_bucket, settings.storage.batches_prefix, batch_id)
    try:
        if quarantined:
            result.quarantine_uri = storage.write_text(batch_dir + QUARANTINE_NAME,
                                                       dumps_lines(quarantine_lines(quarantined)),
                                                       content_type="application/jsonl")
        if objects:
            manifest_uri = storage.write_text(batch_dir + MANIFEST_NAME, dumps_lines(manifest_lines(objects)),
                                              content_type="application/jsonl")
            ledger.record_batch(BatchRecord(batch_id, "starting", manifest_uri), objects=len(objects),
                                quarantined=len(quarantined))
            execution_id = start_labeling_execution(names.labeling_pipeline, manifest_uri, batch_id)
            ledger.record_batch(BatchRecord(batch_id, "started", manifest_uri, execution_id),
                                objects=len(objects), quarantined=len(quarantined))
            result.manifest_uri, result.execution_id = manifest_uri, execution_id
        else:
            ledger.record_batch(BatchRecord(batch_id, "recorded"), quarantined=len(quarantined))
    except Exception as exc:  # noqa: BLE001 - every message of the batch is retried; the claims stay ours
        log.exception("batch %s could not be committed", batch_id)
        fail((m for i in claimed for m in plan.messages_of[i]), f"batch {batch_id}: {exc}")
        return
    result.batch_id = batch_id
    result.batched = [o.identity for o in objects]
    result.quarantined = [q.identity for q, _ in quarantined]
    for obj, reason in quarantined:
        log.warning("quarantined s3://%s/%.200s: %s", obj.bucket, obj.key, reason)


def _resume_batch(ledger: BatchLedger, batch_id: str, names: ResourceNames) -> None:
    """Finish a batch whose invocation died after writing its manifest (same id -> same idempotency token)."""
    record = ledger.batch(batch_id)
    if record is None or not record.manifest_uri:
        raise BatchingError(f"batch {batch_id} has no manifest to resume")
    if record.status == "starting":
        execution_id = start_labeling_execution(names.labeling_pipeline, record.manifest_uri, batch_id)
        ledger.record_batch(BatchRecord(batch_id, "started", record.manifest_uri, execution_id))


def names_from_function_arn(settings: Settings, function_arn: str) -> ResourceNames:
    """Resource names for the account and region of the running Lambda function (from its ARN)."""
    parts = function_arn.split(":")
    if len(parts) < 7 or parts[2] != "lambda":
        raise BatchingError(f"not a Lambda function ARN: {function_arn!r}")
    return ResourceNames.from_settings(settings, account=parts[4], region=parts[3])
