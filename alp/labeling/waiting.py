"""The index of batches whose labeling is with people: what a completion event or the scheduled check starts
the completion pipeline for.

``<data root><labeling_prefix>waiting/<batch id>.json`` says ``waiting`` while a batch's Label step ended
waiting, and ``complete`` once its labeling is (overwritten, not deleted: no step role may delete objects). The completion trigger reads only this index (never
Label Studio or Ground Truth), so it needs no network path to the labeling tool and no job permissions.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from alp import storage
from alp.batching.plan import MANIFEST_NAME
from alp.settings import Settings

if TYPE_CHECKING:  # the completion Lambda reads this index: its asset carries no label-step code
    from alp.labeling.workflow import LabelingSummary

WAITING_FOLDER = "waiting"


class WaitingBatch(BaseModel):
    state: Literal["waiting", "complete"] = "waiting"
    batch_dir: str
    batch_manifest_uri: str
    backend: str
    jobs: list[str] = Field(default_factory=list, description="the labeling jobs the batch waits on")
    since: float


def waiting_dir(data_root: str, settings: Settings) -> str:
    return storage.join(data_root, settings.storage.labeling_prefix.strip("/"), WAITING_FOLDER).rstrip("/") + "/"


def _entry_uri(data_root: str, settings: Settings, batch_dir: str) -> str:
    return waiting_dir(data_root, settings) + storage.basename(batch_dir.rstrip("/")) + ".json"


def record_outcome(data_root: str, settings: Settings, summary: LabelingSummary) -> None:
    """Mark the batch waiting in the index, or complete once it was waiting (a batch labeled in one go never
    enters the index)."""
    uri = _entry_uri(data_root, settings, summary.batch_dir)
    if summary.state == "complete" and not storage.exists(uri):
        return
    entry = WaitingBatch(state=summary.state, batch_dir=summary.batch_dir, batch_manifest_uri=summary.batch_dir + MANIFEST_NAME,
                         backend=summary.backend, jobs=[j.name for j in summary.waiting_on], since=time.time())
    storage.write_text(uri, entry.model_dump_json(indent=2), content_type="application/json")


def waiting_batches(data_root: str, settings: Settings, job_name: str | None = None) -> list[WaitingBatch]:
    """The waiting batches (those waiting on ``job_name`` only, when given)."""
    out = []
    for uri in storage.list_uris(waiting_dir(data_root, settings)):
        if uri.endswith(".json"):
            entry = WaitingBatch.model_validate_json(storage.read_text(uri))
            if entry.state == "waiting" and (job_name is None or job_name in entry.jobs):
                out.append(entry)
    return out
