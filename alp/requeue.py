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
  (the batcher would take a second copy as a second image).

An image that is gone, or that is not an object of the unlabeled bucket under its prefix (the event path
cannot bring it back), is quarantined with the reason too. Outputs under ``<batch_dir>requeue/``:
``summary.json`` and ``quarantine.jsonl``.
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
    version_id: str | None = None


class RequeueSummary(BaseModel):
    batch_dir: str
    inputs: int
    requeued: list[RequeuedImage] = Field(default_factory=list)
    already_requeued: int = Field(0, description="copied by an earlier run of this step for this batch")
    quarantined: dict[str, int] = Field(default_factory=dict, description="reason -> images")
    invariant: str = ""

    def counts(self) -> dict[str, int]:
        return {"inputs": self.inputs, "requeued": len(self.requeued), "already_requeued": self.already_requeued,
                "quarantined": sum(self.quarantined.values())}


def decide(metadata: dict[str, str], batch_id: str, max_requeues: int) -> Decision:
    """What to do with an image whose current object carries ``metadata``: pure, so the rules are testable."""
    if metadata.get(BATCH_META) == batch_id:
        return "already"
    if _count(metadata) >= max_requeues:
        return "limit"
    return "requeue"


def _count(metadata: dict[str, str]) -> int:
    try:
        return max(0, int(metadata.get(COUNT_META, "0")))
    except ValueError:
        return 0  # a hand-edited value: count from zero rather than refuse the image


def _quarantined(line: ManifestLine, reason: str, detail: str) -> ManifestLine:
    return line.with_fields(**{QUARANTINE_KEY: QuarantineInfo(reason=reason, stage="requeue", detail=detail).dump()})


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
            uri = line.source_ref
            if uri in seen:  # listed twice (both lists): one copy brings it back
                continue
            seen.add(uri)
            summary.inputs += 1
            problem = _not_requeueable(uri, unlabeled_bucket, unlabeled_prefix)
            if problem:
                quarantine.append(_quarantined(line, "not_requeueable", problem))
                reasons["not_requeueable"] += 1
                continue
            try:
                metadata = storage.object_metadata(uri)
            except storage.ObjectNotFound:
                quarantine.append(_quarantined(line, "source_missing", f"{uri} no longer exists"))
                reasons["source_missing"] += 1
                continue
            decision = decide(metadata, batch_id, max_requeues)
            if decision == "already":
                summary.already_requeued += 1
            elif decision == "limit":
                quarantine.append(_quarantined(line, "requeue_limit",
                                               f"sent back {_count(metadata)} times (labeling.max_requeues)"))
                reasons["requeue_limit"] += 1
            else:
                count = _count(metadata) + 1
                version = storage.renew_object(uri, {**metadata, COUNT_META: str(count), BATCH_META: batch_id})
                summary.requeued.append(RequeuedImage(source_ref=uri, origin=origin, requeues=count,
                                                      version_id=version))
    summary.quarantined = dict(reasons)
    counts = summary.counts()
    if counts["inputs"] != counts["requeued"] + counts["already_requeued"] + counts["quarantined"]:
        raise AssertionError(f"requeue lost images: {counts}")  # every input has exactly one outcome
    summary.invariant = (f"inputs {counts['inputs']} = requeued {counts['requeued']} + already "
                         f"{counts['already_requeued']} + quarantined {counts['quarantined']}")
    out = storage.join(batch_dir, REQUEUE_DIR)
    write_manifest(storage.join(out, QUARANTINE_FILE), quarantine)
    storage.write_text(storage.join(out, SUMMARY_FILE), summary.model_dump_json(indent=2))
    return summary


def _not_requeueable(uri: str, bucket: str, prefix: str) -> str | None:
    """Why the event path cannot bring ``uri`` back, or None when it can."""
    if not storage.is_s3(uri):
        return f"{uri} is not an S3 object: only uploads to s3://{bucket}/{prefix} reach the batcher"
    loc = storage.parse_s3_uri(uri)
    if loc.bucket != bucket or not loc.key.startswith(prefix):
        return f"{uri} is outside s3://{bucket}/{prefix}, which the upload rule watches"
    return None
