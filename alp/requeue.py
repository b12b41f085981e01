"""Back to the queue: the images a batch left unlabeled go back to the unlabeled bucket (the Requeue step).

Two lists of a batch name them: ``labeling/unlabeled.jsonl`` (labeling jobs that failed, were stopped or left
items unanswered) and ``inference/deferred.jsonl`` (images the judgement doubted beyond a human budget). Each
image is copied onto itself, the same bytes as a new object version: S3 reports that like an upload, so the
usual path (EventBridge -> SQS -> batcher) puts it into a later batch, judged by the model of that day.

The copy's metadata carries the round trips (``alp-requeues``) and the batch that sent it
(``alp-requeued-by``):

* an image already sent back ``labeling.max_requeues`` times is quarantined (``requeue/quarantine.jsonl``,
  reason ``requeue_limit``) rather than circling for ever;
* a re-run of the step finds the current version already marked with this batch and does not copy it again
  (the batcher would take a second copy as a second image); it lists it as requeued all the same, so the
  summary of a re-run equals the first one's.

Every other image is quarantined with its reason, one by one (one bad line never stops the others): gone
(``source_missing``), not an object under the watched prefix (``not_requeueable``), overwritten since the
batch took it (``superseded``: the new upload is already new work), a bucket that keeps no versions
(``unversioned_bucket``: the copy would look like the first upload to the batcher) or a copy S3 refused
(``copy_failed``). Throttling and server errors are raised: the step fails and a retry goes on. Outputs under
``<batch_dir>requeue/``: ``summary.json`` and ``quarantine.jsonl``.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

from pydantic import BaseModel, Field

from alp import storage
from alp.manifest import (
    QUARANTINE_KEY,
    ManifestLine,
    QuarantineInfo,
    read_manifest_if_present,
    write_manifest,
)

REQUEUE_DIR = "requeue/"
SUMMARY_FILE = "summary.json"
QUARANTINE_FILE = "quarantine.jsonl"
COUNT_META = "alp-requeues"
BATCH_META = "alp-requeued-by"
# where each list lives under the batch folder
SOURCES: dict[str, str] = {"unlabeled": "labeling/unlabeled.jsonl", "deferred": "inference/deferred.jsonl"}

Decision = Literal["requeue", "already", "limit"]


class RequeuedImage(BaseModel):
    source_ref: str
    origin: str = Field(description="the list that named it: unlabeled or deferred")
    requeues: int = Field(description="round trips so far, this one included")
    version_id: str | None = Field(None, description="the version the copy made")


class RequeueSummary(BaseModel):
    batch_dir: str
    inputs: int
    requeued: list[RequeuedImage] = Field(default_factory=list, description="sent back by this batch's step")
    already_requeued: int = Field(0, description="of requeued: copied by an earlier run of the step")
    quarantined: dict[str, int] = Field(default_factory=dict, description="reason -> images")
    invariant: str = ""

    def counts(self) -> dict[str, int]:
        return {"inputs": self.inputs, "requeued": len(self.requeued), "already_requeued": self.already_requeued,
                "quarantined": sum(self.quarantined.values())}


def decide(metadata: dict[str, str], batch_id: str, max_requeues: int) -> Decision:
    """What to do with an image whose current object carries ``metadata``: pure, so the rules are testable."""
    if metadata.get(BATCH_META) == batch_id:
        return "already"
    if requeue_count(metadata) >= max_requeues:
        return "limit"
    return "requeue"


def requeue_count(metadata: dict[str, str]) -> int:
    try:
        return max(0, int(metadata.get(COUNT_META, "0")))
    except ValueError:
        return 0  # a hand-edited value: count from zero rather than refuse the image


def _retryable(exc: Exception) -> bool:
    """Throttling and server errors end the step (a retry goes on); other refusals concern one object."""
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return status >= 500 or code in ("SlowDown", "Throttling", "ThrottlingException", "RequestTimeout")


class _Quarantine(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _requeue_one(line: ManifestLine, origin: str, batch_id: str, *, bucket: str, prefix: str,
                 max_requeues: int) -> tuple[RequeuedImage, bool]:
    """Send one image back; returns its record and whether an earlier run had sent it. Raises _Quarantine."""
    try:
        uri = line.source_ref
    except ValueError as exc:  # an inline-text item (no source-ref): nothing to send back
        raise _Quarantine("not_requeueable", str(exc)) from None
    problem = _not_requeueable(uri, bucket, prefix)
    if problem:
        raise _Quarantine("not_requeueable", problem)
    try:
        head = storage.object_head(uri)
    except storage.ObjectNotFound:
        raise _Quarantine("source_missing", f"{uri} no longer exists") from None
    judged = line.object_identity()
    decision = decide(head.metadata, batch_id, max_requeues)
    if decision == "already":
        return RequeuedImage(source_ref=uri, origin=origin, requeues=requeue_count(head.metadata),
                             version_id=head.version_id), True
    if judged and judged.version_id and head.version_id and judged.version_id != head.version_id:
        raise _Quarantine("superseded", f"{uri} was overwritten after the batch took version {judged.version_id}; "
                                        f"the new version {head.version_id} is new work already")
    if decision == "limit":
        raise _Quarantine("requeue_limit",
                          f"sent back {requeue_count(head.metadata)} times (labeling.max_requeues)")
    count = requeue_count(head.metadata) + 1
    try:
        version = storage.renew_object(uri, head, {**head.metadata, COUNT_META: str(count), BATCH_META: batch_id})
    except Exception as exc:
        if _retryable(exc) or getattr(exc, "response", None) is None:
            raise
        raise _Quarantine("copy_failed", f"{uri}: {exc}") from None
    if version is None:
        raise _Quarantine("unversioned_bucket", f"s3://{bucket} keeps no versions: a copy has the first upload's "
                                                "ETag and the batcher would drop it as a duplicate")
    return RequeuedImage(source_ref=uri, origin=origin, requeues=count, version_id=version), False


def requeue_batch(batch_dir: str, *, unlabeled_bucket: str, unlabeled_prefix: str,
                  max_requeues: int) -> RequeueSummary:
    """Send the batch's unlabeled and deferred images back to the queue; write and return the summary."""
    batch_dir = batch_dir.rstrip("/") + "/"
    batch_id = storage.basename(batch_dir)
    summary = RequeueSummary(batch_dir=batch_dir, inputs=0)
    quarantine: list[ManifestLine] = []
    reasons: Counter[str] = Counter()
    seen: set[str] = set()
    for origin, rel in SOURCES.items():
        for line in read_manifest_if_present(storage.join(batch_dir, rel)):
            ref = str(line.data.get("source-ref") or line.data.get("source") or "")
            if ref in seen:  # listed twice (both lists): one copy brings it back
                continue
            seen.add(ref)
            summary.inputs += 1
            try:
                image, earlier = _requeue_one(line, origin, batch_id, bucket=unlabeled_bucket,
                                              prefix=unlabeled_prefix, max_requeues=max_requeues)
            except _Quarantine as q:
                quarantine.append(line.with_fields(**{QUARANTINE_KEY: QuarantineInfo(
                    reason=q.reason, stage="requeue", detail=q.detail).dump()}))
                reasons[q.reason] += 1
                continue
            summary.requeued.append(image)
            summary.already_requeued += earlier
    summary.quarantined = dict(reasons)
    counts = summary.counts()
    if counts["inputs"] != counts["requeued"] + counts["quarantined"]:
        raise AssertionError(f"requeue lost images: {counts}")  # every input has exactly one outcome
    summary.invariant = (f"inputs {counts['inputs']} = requeued {counts['requeued']} (an earlier run "
                         f"{counts['already_requeued']}) + quarantined {counts['quarantined']}")
    out = storage.join(batch_dir, REQUEUE_DIR)
    write_manifest(storage.join(out, QUARANTINE_FILE), quarantine)
    storage.write_text(storage.join(out, SUMMARY_FILE), summary.model_dump_json(indent=2))
    return summary


def resend(summary: RequeueSummary) -> int:
    """Copy exactly the images a summary lists as requeued once more, with the counts it recorded (the demo's
    resume: a new embedded AWS lost the queued events and restored the images without their metadata)."""
    batch_id = storage.basename(summary.batch_dir)
    for image in summary.requeued:
        head = storage.object_head(image.source_ref)
        storage.renew_object(image.source_ref, head, {COUNT_META: str(image.requeues), BATCH_META: batch_id})
    return len(summary.requeued)


def read_summary(batch_dir: str) -> RequeueSummary | None:
    uri = storage.join(batch_dir, REQUEUE_DIR, SUMMARY_FILE)
    return RequeueSummary.model_validate_json(storage.read_text(uri)) if storage.exists(uri) else None


def _not_requeueable(uri: str, bucket: str, prefix: str) -> str | None:
    """Why the event path cannot bring ``uri`` back, or None when it can."""
    if not storage.is_s3(uri):
        return f"{uri} is not an S3 object: only uploads to s3://{bucket}/{prefix} reach the batcher"
    loc = storage.parse_s3_uri(uri)
    if loc.bucket != bucket or not loc.key.startswith(prefix):
        return f"{uri} is outside s3://{bucket}/{prefix}, which the upload rule watches"
    return None
