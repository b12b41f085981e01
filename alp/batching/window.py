"""One window of SQS messages -> at most one batch: parse, plan, claim, write the batch folder, start.

:func:`process_sqs_records` is the entry point of the batcher Lambda and of the demo. It reads in the order
of the work: the typed events (:mod:`alp.batching.events`), the pure plan (:mod:`alp.batching.plan`), the
claims in the ledger (:mod:`alp.batching.ledger`), the batch files (:mod:`alp.storage`) and the labeling
pipeline's start (:mod:`alp.pipeline_runs`). Every failure is reported per message, never for the window.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from alp import storage
from alp.batching import BatchingError
from alp.batching.events import SqsRecord, parse_records
from alp.batching.ledger import BatchLedger, BatchRecord
from alp.batching.plan import (
    MANIFEST_NAME,
    QUARANTINE_NAME,
    WindowPlan,
    batch_dir_uri,
    batch_id_for,
    manifest_lines,
    plan_window,
    quarantine_lines,
)
from alp.manifest import ManifestLine, ObjectIdentity, dumps_lines
from alp.observability import emit_metrics
from alp.pipeline_runs import start_execution
from alp.resources import ResourceNames
from alp.settings import Settings
from alp.steps import LABELING_PIPELINE

log = logging.getLogger(__name__)

BATCH_METRICS_STEP = "Batch"
_LEASE_MARGIN_SECONDS = 30


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

    def fail(self, message_ids: Iterable[str], reason: str) -> None:
        """Send ``message_ids`` back to SQS; a message keeps the first reason it failed for."""
        for m in message_ids:
            self.failure_reasons.setdefault(m, reason)
        self.failed_message_ids = sorted(self.failure_reasons)

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


def process_sqs_records(records: Sequence[Mapping[str, Any] | SqsRecord], settings: Settings,
                        names: ResourceNames, *, clock: Callable[[], float] = time.time) -> BatchResult:
    """Batch one window of SQS messages (Lambda event records or ``ReceiveMessage`` messages).

    Returns the result; messages listed in ``failed_message_ids`` must not be deleted from the queue.
    A message with one failed event is retried whole; its other events are deduplicated next time.
    """
    result = BatchResult()
    plan = plan_window(parse_records(records, unlabeled_bucket=names.unlabeled_bucket,
                                     unlabeled_prefix=settings.storage.unlabeled_prefix))
    for ev in plan.ignored:
        log.info("acknowledged without batching: message %s: %s", ev.message_id, ev.reason)
        result.ignored.append(ev.message_id)
    for ev in plan.malformed:
        # Retried, then parked in the dead-letter queue, whose alarm tells a person to look.
        log.error("malformed message %s: %s", ev.message_id, ev.reason)
        result.fail([ev.message_id], ev.reason)
    if plan.identities:
        ledger = BatchLedger(names.batch_ledger_table, clock=clock,
                             lease_seconds=settings.trigger.batcher_timeout_seconds + _LEASE_MARGIN_SECONDS)
        _commit_window(plan, ledger, settings, names, result)
    emit_metrics(BATCH_METRICS_STEP, {
        "objects_batched": len(result.batched), "images_quarantine": len(result.quarantined),
        "duplicate_events": len(result.duplicates), "ignored_events": len(result.ignored),
        "failed_messages": len(result.failed_message_ids),
    }, namespace=settings.observability.metrics_namespace)
    log.info("window done: %s", json.dumps(result.summary(), sort_keys=True))
    return result


def _commit_window(plan: WindowPlan, ledger: BatchLedger, settings: Settings, names: ResourceNames,
                   result: BatchResult) -> None:
    """Claim the window's objects, finish batches of dead invocations, then write and start this batch."""
    batch_id = batch_id_for(plan.identities, plan.earliest_time)
    claimed, abandoned = _claim_objects(plan, ledger, batch_id, result)
    for owner, idents in sorted(abandoned.items()):
        try:
            _resume_batch(ledger, owner, names)
            result.resumed_batches.append(owner)
            result.duplicates.extend(idents)
        except Exception as exc:  # noqa: BLE001
            log.exception("resuming batch %s failed", owner)
            result.fail(plan.messages(idents), f"resume {owner}: {exc}")
    if not claimed:
        return
    # The same window again (SQS redelivered it after a success, or after a crash mid-commit): its claims
    # are already ours, so the batch record decides whether anything is left to do.
    try:
        earlier = ledger.batch(batch_id)
        if earlier is not None:
            if earlier.status == "starting":
                _resume_batch(ledger, batch_id, names)
                result.resumed_batches.append(batch_id)
            result.duplicates.extend(claimed)
            return
    except Exception as exc:  # noqa: BLE001
        log.exception("batch %s could not be checked or resumed", batch_id)
        result.fail(plan.messages(claimed), f"batch {batch_id}: {exc}")
        return
    objects = [plan.objects[i] for i in claimed if i in plan.objects]
    quarantined = [plan.quarantined[i] for i in claimed if i in plan.quarantined]
    try:
        _write_and_start(batch_dir_uri(names.data_bucket, settings.storage.batches_prefix, batch_id), batch_id,
                         objects, quarantined, ledger, names, result)
    except Exception as exc:  # noqa: BLE001 - every message of the batch is retried; the claims stay ours
        log.exception("batch %s could not be committed", batch_id)
        result.fail(plan.messages(claimed), f"batch {batch_id}: {exc}")
        return
    result.batch_id = batch_id
    result.batched = [o.identity for o in objects]
    result.quarantined = [q.identity for q, _ in quarantined]
    for obj, reason in quarantined:
        log.warning("quarantined s3://%s/%.200s: %s", obj.bucket, obj.key, reason)


def _claim_objects(plan: WindowPlan, ledger: BatchLedger, batch_id: str,
                   result: BatchResult) -> tuple[list[str], dict[str, list[str]]]:
    """The identities this batch now owns, and those of abandoned batches to resume (by their batch id).

    Duplicates (owned by a batch that started) are recorded; objects another live invocation holds fail.
    """
    claimed: list[str] = []
    abandoned: dict[str, list[str]] = {}
    for ident in plan.identities:
        try:
            claim = ledger.claim(ident, batch_id)
        except Exception as exc:  # noqa: BLE001 - one object's ledger error must not fail the window
            log.exception("ledger claim failed for %s", ident)
            result.fail(plan.messages_of[ident], f"ledger: {exc}")
            continue
        if claim.status == "claimed":
            claimed.append(ident)
        elif claim.status == "duplicate":
            result.duplicates.append(ident)
        elif claim.status == "resume":
            abandoned.setdefault(claim.owner_batch, []).append(ident)
        else:
            result.fail(plan.messages_of[ident], f"batch {claim.owner_batch} of another invocation is in progress")
    return claimed, abandoned


def _write_and_start(batch_dir: str, batch_id: str, objects: list[ObjectIdentity],
                     quarantined: list[tuple[ObjectIdentity, str]], ledger: BatchLedger, names: ResourceNames,
                     result: BatchResult) -> None:
    """Write the batch folder, then start its labeling execution; the ledger records each stage."""
    if quarantined:
        result.quarantine_uri = _write_lines(batch_dir + QUARANTINE_NAME, quarantine_lines(quarantined))
    if not objects:
        ledger.record_batch(BatchRecord(batch_id, "recorded"), quarantined=len(quarantined))
        return
    manifest_uri = _write_lines(batch_dir + MANIFEST_NAME, manifest_lines(objects))
    counts = {"objects": len(objects), "quarantined": len(quarantined)}
    ledger.record_batch(BatchRecord(batch_id, "starting", manifest_uri), **counts)
    execution_id = _start_labeling(names, manifest_uri, batch_id)
    ledger.record_batch(BatchRecord(batch_id, "started", manifest_uri, execution_id), **counts)
    result.manifest_uri, result.execution_id = manifest_uri, execution_id


def _resume_batch(ledger: BatchLedger, batch_id: str, names: ResourceNames) -> None:
    """Finish a batch whose invocation died after writing its manifest (same id -> same idempotency token)."""
    record = ledger.batch(batch_id)
    if record is None or not record.manifest_uri:
        raise BatchingError(f"batch {batch_id} has no manifest to resume")
    if record.status == "starting":
        execution_id = _start_labeling(names, record.manifest_uri, batch_id)
        ledger.record_batch(BatchRecord(batch_id, "started", record.manifest_uri, execution_id))


def _write_lines(uri: str, lines: list[ManifestLine]) -> str:
    return storage.write_text(uri, dumps_lines(lines), content_type="application/jsonl")


def _start_labeling(names: ResourceNames, manifest_uri: str, batch_id: str) -> str:
    """The batch id is the idempotency token: a resumed or retried start makes no second execution."""
    return start_execution(names.labeling_pipeline, LABELING_PIPELINE, {"BatchManifestUri": manifest_uri},
                           request_token=batch_id)
