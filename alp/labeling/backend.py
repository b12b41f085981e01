"""The labeling-backend interface: create a job from a manifest, poll it, read its output, list the rest.

Backends: ``ground-truth`` (SageMaker Ground Truth, :mod:`alp.labeling.ground_truth`) and ``local`` (a
simulated workforce, :mod:`alp.labeling.local`). A self-hosted backend for accounts without Ground Truth
implements the same four methods and is added to :func:`alp.labeling.backends.get_backend`; the label step
does not change. This module imports no implementation.
Every backend writes its output as a Ground Truth output manifest: the input line plus ``<attr>`` and
``<attr>-metadata``.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from alp import storage
from alp.labeling.contracts import ConsolidatedLabel, ConsolidationInfo, JobKind, job_folder
from alp.manifest import ManifestLine, read_manifest

log = logging.getLogger(__name__)

JobState = Literal["Initializing", "InProgress", "Completed", "Failed", "Stopping", "Stopped"]
FINAL_STATES: frozenset[str] = frozenset({"Completed", "Failed", "Stopped"})
OUTPUT_MANIFEST = "manifests/output/output.manifest"  # under the job folder, as Ground Truth writes it
TASK_ID_KEY = "alp-task-id"  # on every job input line; joins output lines back to their items


class JobSpec(BaseModel):
    """Everything needed to create one labeling job; files already written where the URIs point."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: JobKind
    label_attribute: str
    input_manifest_uri: str
    output_path: str = Field(description="S3OutputPath; the job writes under <output_path>/<name>/")
    label_category_uri: str
    template_uri: str
    title: str
    description: str
    keywords: tuple[str, ...] = ("images", "head", "keypoints")
    objects: int = 0

    @property
    def folder(self) -> str:
        return job_folder(self.output_path, self.name)


class JobStatus(BaseModel):
    name: str
    state: JobState
    failure_reason: str | None = None
    output_manifest_uri: str | None = None
    total: int | None = None
    labeled: int | None = None
    failed: int | None = None

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES


class ItemOutcome(BaseModel):
    """One job input line after the job: its consolidated label, or why it has none."""

    task_id: str
    line: dict[str, Any]
    label: dict[str, Any] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    consolidation: ConsolidationInfo | None = None
    unlabeled_reason: str | None = None


class JobTimeout(TimeoutError):
    """The job did not finish in time; it keeps running and a re-run of the step finds it."""


class LabelingBackend(ABC):
    """Create, poll and read labeling jobs. Implementations must make ``create_job`` idempotent by name."""

    name: str = "abstract"

    @abstractmethod
    def find_job(self, name: str) -> JobStatus | None:
        """The job's status, or ``None`` when no job of that name exists."""

    @abstractmethod
    def create_job(self, spec: JobSpec) -> JobStatus:
        """Create the job, or return the existing one of the same name (a re-run never duplicates work)."""

    def template_uri(self, kind: JobKind) -> str:
        """Where the job's UI template is (a local file for backends that render it themselves)."""
        from alp.labeling.render import template_path

        return str(template_path(kind))

    def gold_candidates(self) -> list[ManifestLine]:
        """Lines with known labels this backend can draw gold items from (none by default: the label step
        then uses the human labels of the latest dataset version)."""
        return []

    def describe_job(self, name: str) -> JobStatus:
        status = self.find_job(name)
        if status is None:
            raise LookupError(f"no labeling job named {name!r}")
        return status

    def wait(self, name: str, *, poll_seconds: float = 60.0, timeout_seconds: float = 8 * 3600,
             on_poll: Callable[[JobStatus], None] | None = None,
             sleep: Callable[[float], None] = time.sleep) -> JobStatus:
        """Poll until the job reaches a final state; raises :class:`JobTimeout` after ``timeout_seconds``."""
        waited = 0.0
        while True:
            status = self.describe_job(name)
            if on_poll is not None:
                on_poll(status)
            if status.done:
                return status
            if waited >= timeout_seconds:
                raise JobTimeout(f"labeling job {name} still {status.state} after {waited:.0f} s; re-run the step "
                                 "later: it finds the job instead of creating another")
            sleep(poll_seconds)
            waited += poll_seconds

    def read_output(self, spec: JobSpec, status: JobStatus) -> list[ItemOutcome]:
        """Every input line of the job with its label or the reason it has none (failed, stopped or
        partial jobs, objects no worker finished, objects without a usable answer)."""
        inputs = read_manifest(spec.input_manifest_uri)
        outputs: dict[str, ManifestLine] = {}
        # Stopped and failed jobs may still have written a partial manifest where Ground Truth puts it.
        output_uri = status.output_manifest_uri or spec.folder + OUTPUT_MANIFEST
        if storage.exists(output_uri):
            for line in read_manifest(output_uri):
                task_id = line.data.get(TASK_ID_KEY)
                if isinstance(task_id, str):
                    outputs[task_id] = line
        results = []
        attr = spec.label_attribute
        for line in inputs:
            task_id = str(line.data.get(TASK_ID_KEY, ""))
            out = outputs.get(task_id)
            outcome = ItemOutcome(task_id=task_id, line=line.data)
            if out is None:
                why = f"job {status.state.lower()}"
                outcome.unlabeled_reason = f"{why}: {status.failure_reason}" if status.failure_reason else \
                    f"{why} before this item was labeled"
            else:
                meta = out.data.get(f"{attr}-metadata") or {}
                outcome.metadata = meta if isinstance(meta, dict) else {}
                content = out.data.get(attr)
                if not isinstance(content, dict):
                    reason = outcome.metadata.get("failure-reason") or outcome.metadata.get("failure_reason")
                    outcome.unlabeled_reason = f"no label: {reason or 'the job gave no answer'}"
                else:
                    consolidated = ConsolidatedLabel.parse(content)
                    outcome.consolidation = consolidated.info
                    if consolidated.info.unlabeled:
                        outcome.unlabeled_reason = consolidated.info.reason or "no usable worker answer"
                    else:
                        outcome.label = consolidated.label
            results.append(outcome)
        return results

