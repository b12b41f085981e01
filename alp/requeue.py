"""Back to the queue: the images a batch left unlabeled go back to the unlabeled bucket (the Requeue step).

Two lists of a batch name them: ``labeling/unlabeled.jsonl`` (labeling jobs that failed, were stopped or left
items unanswered) and ``inference/deferred.jsonl`` (images the judgement doubted beyond a human budget). Each
image is copied onto itself, the same bytes as a new object version: S3 reports that like an upload, so the
usual path (EventBridge -> SQS -> batcher) puts it into a later batch, judged by the model of that day.

The copy's metadata carries the round trips (``alp-requeues``), the batch that sent it (``alp-requeued-by``)
and the version it was copied from (``alp-requeued-from``):

* an image already sent back ``labeling.max_requeues`` times is quarantined (``requeue/quarantine.jsonl``,
  reason ``requeue_limit``) rather than circling for ever;
* a finished step is not run twice: a re-run returns the summary it wrote. A run that stopped half-way (a
  crash, a throttled copy) goes on: it finds the images it already copied marked with this batch and the
  version they came from, does not copy them again (the batcher would take a second copy as a second image)
  and lists them as requeued (``already_requeued`` says how many).

Every other image is quarantined with its reason, one by one (one bad line never stops the others): gone
(``source_missing``), not an object under the watched prefix (``not_requeueable``), overwritten since the
batch took it (``superseded``: the new upload is already new work), a bucket that keeps no versions
(``unversioned_bucket``, checked before any copy: the copy would look like the first upload to the batcher),
an archived object (``archived``: Glacier, Deep Archive or an archive tier; restore it first) or one S3 will
not describe or copy (``head_failed``, ``copy_failed``: an SSE-C object, a copy over 5 GB).
Throttling, server errors and faults of the whole setup (access denied, no such bucket, a KMS refusal) are
raised: the step fails and a retry, once the cause is fixed, goes on. Outputs under ``<batch_dir>requeue/``:
``summary.json`` and ``quarantine.jsonl``.

A known race, left alone: an upload to the same key between the step's HEAD and its copy is hidden behind
the copy of the older bytes (the copy is pinned to the judged version, and the later batches read by key).
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

from pydantic import BaseModel, Field

from alp import aws, storage
from alp.batching.plan import MANIFEST_NAME
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
FROM_META = "alp-requeued-from"
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


def decide(metadata: dict[str, str], batch_id: str, max_requeues: int, judged_version: str | None = None) -> Decision:
    """What to do with an image whose current object carries ``metadata``, for a batch that judged
    ``judged_version`` of it: pure, so the rules are testable. "already": this batch copied that very version."""
    if metadata.get(BATCH_META) == batch_id and (judged_version is None
                                                 or metadata.get(FROM_META) in (None, judged_version)):
        return "already"
    if requeue_count(metadata) >= max_requeues:
        return "limit"
    return "requeue"


def requeue_count(metadata: dict[str, str]) -> int:
    try:
        return max(0, int(metadata.get(COUNT_META, "0")))
    except ValueError:
        return 0  # a hand-edited value: count from zero rather than refuse the image


# refusals that concern the whole setup, not one object: quarantining the batch image by image would hide them
_SETUP_FAULTS = ("AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                 "ExpiredToken", "NoSuchBucket", "403")


# one object's state, though S3 answers 403: an archived object (Glacier, Deep Archive, an archive tier)
_ARCHIVED = ("InvalidObjectState", "ObjectNotInActiveTierError")


def _fails_the_step(exc: Exception) -> bool:
    """True for errors a retry or a fix of the setup cures (throttling, server errors, access denied, a KMS
    refusal, a missing bucket), and for anything that is not an AWS answer; False when S3 refused one object."""
    if getattr(exc, "response", None) is None:
        return True
    code, status = aws.error_code(exc), aws.http_status(exc)
    if code in _ARCHIVED:
        return False
    return (status >= 500 or status == 403 or code in _SETUP_FAULTS or code.startswith("KMS.")
            or code in ("SlowDown", "Throttling", "ThrottlingException", "RequestTimeout"))


class _Quarantine(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _unversioned(bucket: str) -> _Quarantine:
    return _Quarantine("unversioned_bucket", f"s3://{bucket} keeps no versions: a copy has the first upload's "
                                             "ETag and the batcher would drop it as a duplicate")


def _requeue_one(line: ManifestLine, origin: str, batch_id: str, *, bucket: str, prefix: str,
                 max_requeues: int, versioned: bool) -> tuple[RequeuedImage, bool]:
    """Send one image back; returns its record and whether an earlier run had sent it. Raises _Quarantine."""
    try:
        uri = line.source_ref
        problem = _not_requeueable(uri, bucket, prefix)
    except ValueError as exc:  # an inline-text item (no source-ref) or a malformed S3 URI
        raise _Quarantine("not_requeueable", str(exc)) from None
    if problem:
        raise _Quarantine("not_requeueable", problem)
    try:
        head = storage.object_head(uri)
    except storage.ObjectNotFound:
        raise _Quarantine("source_missing", f"{uri} no longer exists") from None
    except Exception as exc:
        if _fails_the_step(exc):
            raise
        raise _Quarantine("head_failed", f"{uri}: {exc}") from None
    judged = line.object_identity()
    judged_version = judged.version_id if judged else None
    decision = decide(head.metadata, batch_id, max_requeues, judged_version)
    if decision == "already":
        return RequeuedImage(source_ref=uri, origin=origin, requeues=requeue_count(head.metadata),
                             version_id=head.version_id), True
    if judged_version and head.version_id and judged_version != head.version_id:
        raise _Quarantine("superseded", f"{uri} was overwritten after the batch took version {judged_version}; "
                                        f"the new version {head.version_id} is new work already")
    if decision == "limit":
        raise _Quarantine("requeue_limit",
                          f"sent back {requeue_count(head.metadata)} times (labeling.max_requeues)")
    if not versioned:
        raise _unversioned(bucket)
    count = requeue_count(head.metadata) + 1
    metadata = {**head.metadata, COUNT_META: str(count), BATCH_META: batch_id}
    if head.version_id:
        metadata[FROM_META] = head.version_id
    try:
        version = storage.renew_object(uri, head, metadata)
    except Exception as exc:
        if _fails_the_step(exc):
            raise
        if aws.error_code(exc) in _ARCHIVED:
            raise _Quarantine("archived", f"{uri} is in an archive storage class; restore it to send it "
                                          "back") from None
        raise _Quarantine("copy_failed", f"{uri}: {exc}") from None
    if version is None:  # versioning suspended between the check and the copy
        raise _unversioned(bucket)
    return RequeuedImage(source_ref=uri, origin=origin, requeues=count, version_id=version), False


def requeue_batch(batch_dir: str, *, unlabeled_bucket: str, unlabeled_prefix: str,
                  max_requeues: int) -> RequeueSummary:
    """Send the batch's unlabeled and deferred images back to the queue; write and return the summary.

    A batch whose step finished already gets its summary back, unchanged: by then later batches may have
    judged and sent back the same images again, and deciding anew would count them twice.
    """
    batch_dir = batch_dir.rstrip("/") + "/"
    batch_id = storage.basename(batch_dir)
    done = read_summary(batch_dir)
    if done is not None:
        return done
    if not storage.exists(storage.join(batch_dir, MANIFEST_NAME)):
        raise FileNotFoundError(f"{batch_dir} is not a batch folder: it has no {MANIFEST_NAME} (the batcher "
                                "writes one for every batch); check the --batch path")
    summary = RequeueSummary(batch_dir=batch_dir, inputs=0)
    quarantine: list[ManifestLine] = []
    reasons: Counter[str] = Counter()
    seen: set[tuple[str, str | None]] = set()  # source-ref and version: two versions are two images
    versioned: bool | None = None  # asked once, before the first copy
    for origin, rel in SOURCES.items():
        for line in read_manifest_if_present(storage.join(batch_dir, rel)):
            identity = line.object_identity()
            ref = str(line.data.get("source-ref") or line.data.get("source") or "")
            key = (ref, identity.version_id if identity else None)
            if key in seen:  # listed twice (both lists): one copy brings it back
                continue
            seen.add(key)
            summary.inputs += 1
            if versioned is None and storage.is_s3(ref) and ref.startswith(f"s3://{unlabeled_bucket}/"):
                versioned = storage.bucket_versioned(unlabeled_bucket)
            try:
                image, earlier = _requeue_one(line, origin, batch_id, bucket=unlabeled_bucket,
                                              prefix=unlabeled_prefix, max_requeues=max_requeues,
                                              versioned=bool(versioned))
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
