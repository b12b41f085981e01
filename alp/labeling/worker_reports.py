"""Worker quality: agreement with gold items, and the per-job report of every worker's answers.

Workers whose mean agreement with gold items is under a threshold are left out of consolidation, as in the
LSUN / Berkeley DeepDrive labeling pipelines. A :class:`WorkerReport` is written beside the job output for
each consolidation request and merged per job by the label step. Stdlib and pydantic only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from alp.geometry import Box, box_agreement, keypoint_area, point_similarity
from alp.labeling.answers import BoxAnswer, KeypointAnswer
from alp.labeling.contracts import GoldItem, JobContext

# --- gold agreement --------------------------------------------------------------------------------------

def gold_box_agreement(answer: BoxAnswer, gold: GoldItem, iou_threshold: float = 0.5) -> float:
    truth = [Box(b.left, b.top, b.width, b.height) for b in gold.boxes or []]
    return box_agreement(answer.boxes, truth, iou_threshold)


def gold_keypoint_agreement(answer: KeypointAnswer, gold: GoldItem, sigmas: Sequence[float]) -> float:
    """Mean over points: 1 for an agreeing 'outside', the OKS point similarity for an agreeing placed
    point, 0 for a visibility that differs."""
    if gold.person is None:
        return 0.0
    truth = [(k.x, k.y, k.v) for k in gold.person.keypoints]
    if len(truth) != len(answer.points):
        return 0.0
    area = keypoint_area(truth)
    total = 0.0
    for g, a, s in zip(truth, answer.points, sigmas, strict=True):
        if g[2] != a[2]:
            continue
        total += 1.0 if g[2] == 0 else point_similarity(a[0] - g[0], a[1] - g[1], area, s)
    return total / len(truth)


def gold_agreement(answer: BoxAnswer | KeypointAnswer, gold: GoldItem, context: JobContext) -> float:
    """How well one answer agrees with the gold item's known label, in [0, 1]."""
    if isinstance(answer, BoxAnswer):
        return gold_box_agreement(answer, gold, context.box_iou_threshold)
    return gold_keypoint_agreement(answer, gold, context.sigmas)


# --- worker reports --------------------------------------------------------------------------------------

class WorkerStats(BaseModel):
    """One worker's record in a job: answers, gold agreement, time."""

    model_config = ConfigDict(extra="ignore")

    worker_id: str
    items: int = 0
    usable: int = 0
    ignored: dict[str, int] = Field(default_factory=dict, description="reason -> count")
    gold_items: int = 0
    gold_agreement_sum: float = 0.0
    seconds_sum: float = 0.0
    seconds_count: int = 0
    excluded: bool = False

    def record_ignored(self, reason: str) -> None:
        key = reason_key(reason)
        self.ignored[key] = self.ignored.get(key, 0) + 1

    def record_usable(self, answer: BoxAnswer | KeypointAnswer, agreement: float | None) -> None:
        """Count a usable answer, its time and, for a gold item, its agreement with the gold label."""
        self.usable += 1
        if answer.elapsed_seconds is not None:
            self.seconds_sum += answer.elapsed_seconds
            self.seconds_count += 1
        if agreement is not None:
            self.gold_items += 1
            self.gold_agreement_sum += agreement

    @property
    def gold_agreement(self) -> float | None:
        return self.gold_agreement_sum / self.gold_items if self.gold_items else None

    @property
    def seconds_per_item(self) -> float | None:
        return self.seconds_sum / self.seconds_count if self.seconds_count else None

    def summary(self) -> dict[str, Any]:
        ga, spi = self.gold_agreement, self.seconds_per_item
        return {
            "worker_id": self.worker_id, "items": self.items, "usable": self.usable, "ignored": self.ignored,
            "gold_items": self.gold_items,
            "gold_agreement": round(ga, 4) if ga is not None else None,
            "seconds_per_item": round(spi, 2) if spi is not None else None,
            "excluded": self.excluded,
        }

    def merged(self, other: WorkerStats) -> WorkerStats:
        ignored = Counter(self.ignored)
        ignored.update(other.ignored)
        return WorkerStats(
            worker_id=self.worker_id, items=self.items + other.items, usable=self.usable + other.usable,
            ignored=dict(sorted(ignored.items())), gold_items=self.gold_items + other.gold_items,
            gold_agreement_sum=self.gold_agreement_sum + other.gold_agreement_sum,
            seconds_sum=self.seconds_sum + other.seconds_sum, seconds_count=self.seconds_count + other.seconds_count,
            excluded=self.excluded or other.excluded,
        )


class WorkerReport(BaseModel):
    """Written beside the job output for each consolidation request, and merged per job by the label step."""

    model_config = ConfigDict(extra="ignore")

    job_name: str
    kind: str
    gold_agreement_threshold: float
    objects: int = 0
    labeled: int = 0
    unlabeled: int = 0
    workers: list[WorkerStats] = Field(default_factory=list)

    def stats_of(self, worker_id: str) -> WorkerStats:
        for w in self.workers:
            if w.worker_id == worker_id:
                return w
        return WorkerStats(worker_id=worker_id)

    @property
    def excluded(self) -> list[str]:
        return [w.worker_id for w in self.workers if w.excluded]

    def summary(self) -> dict[str, Any]:
        return {
            "job_name": self.job_name, "kind": self.kind, "gold_agreement_threshold": self.gold_agreement_threshold,
            "objects": self.objects, "labeled": self.labeled, "unlabeled": self.unlabeled,
            "excluded_workers": self.excluded, "workers": [w.summary() for w in self.workers],
        }


def merge_reports(reports: Sequence[WorkerReport]) -> WorkerReport | None:
    """Sum several reports of one job (Ground Truth may call the consolidation more than once)."""
    if not reports:
        return None
    stats: dict[str, WorkerStats] = {}
    for report in reports:
        for w in report.workers:
            stats[w.worker_id] = stats[w.worker_id].merged(w) if w.worker_id in stats else w
    first = reports[0]
    return WorkerReport(
        job_name=first.job_name, kind=first.kind, gold_agreement_threshold=first.gold_agreement_threshold,
        objects=sum(r.objects for r in reports), labeled=sum(r.labeled for r in reports),
        unlabeled=sum(r.unlabeled for r in reports), workers=[stats[k] for k in sorted(stats)],
    )


def reason_key(reason: str) -> str:
    """A short bucket for the report: the reason without the numbers and names that vary per answer."""
    words = [w for w in reason.replace(":", " ").split() if not any(ch.isdigit() for ch in w)]
    return " ".join(words[:6])[:60]
