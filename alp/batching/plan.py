"""Pure planning of one window: each object once, a deterministic batch id, the batch folder's lines."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from alp.batching.events import UploadEvent
from alp.manifest import OBJECT_KEY, QUARANTINE_KEY, ManifestLine, ObjectIdentity, QuarantineInfo

# the files of a batch folder, s3://<data bucket>/<batches_prefix><batch_id>/
MANIFEST_NAME = "manifest.jsonl"
QUARANTINE_NAME = "quarantine.jsonl"


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

    def messages(self, identities: Iterable[str]) -> list[str]:
        """Every message that carried one of ``identities``."""
        return [m for ident in identities for m in self.messages_of[ident]]


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
