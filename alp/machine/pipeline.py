"""The deployed pipeline on this machine, one batch at a time: what a round does, for every local runner.

Uploads go into the embedded AWS's unlabeled bucket (S3 -> EventBridge -> SQS, as a camera fleet's would), the
batcher's own function turns their events into a batch manifest, and the declared pipelines of :mod:`alp.steps`
run their steps through the CLI, as the CodeBuild actions do: the labeling pipeline, the completion pipeline each
time people finish a job, the training pipeline when the Merge step started one. ``alp local`` (your frames, people
in Label Studio) and ``alp demo`` (synthetic frames, a simulated workforce or Label Studio) both run their rounds
through :class:`MachinePipeline`; they differ in where frames come from, who labels, and what they record.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alp import storage
from alp.manifest import ROUTES, read_manifest_if_present
from alp.resources import ResourceNames
from alp.settings import Settings
from alp.steps import Step
from inference.budget import DEFERRED_FILE

if TYPE_CHECKING:
    from alp.labeling.backend import JobStatus
    from alp.labeling.label_studio import LabelStudioBackend
    from alp.labeling.workflow import JobRecord


INFERENCE_DIR = "inference/"
ROUTE_FILES = {"auto": "auto.jsonl", "human": "human.jsonl", "quarantine": "quarantine.jsonl"}


def route_counts(batch_dir: str) -> dict[str, int]:
    """Images per route from the inference step's outputs (``summary.json``, else the route files).

    The batcher's own quarantine file (unsafe keys, never inferred) is counted as quarantine too.
    """
    base = storage.join(batch_dir, INFERENCE_DIR)
    counts: dict[str, int] = dict.fromkeys(ROUTES, 0)
    summary_uri = storage.join(base, "summary.json")
    summary: dict[str, Any] = json.loads(storage.read_text(summary_uri)) if storage.exists(summary_uri) else {}
    routes: dict[str, Any] = summary["routes"] if isinstance(summary.get("routes"), dict) else summary
    if all(isinstance(routes.get(r), int) for r in ROUTES):
        counts = {r: int(routes[r]) for r in ROUTES}
    else:
        counts["auto"] = len(read_manifest_if_present(storage.join(base, ROUTE_FILES["auto"])))
        for line in read_manifest_if_present(storage.join(base, ROUTE_FILES["human"])):
            route = line.route()
            counts["audit" if route is not None and route.route == "audit" else "human"] += 1
        counts["quarantine"] = len(read_manifest_if_present(storage.join(base, ROUTE_FILES["quarantine"])))
    counts["quarantine"] += len(read_manifest_if_present(storage.join(batch_dir, "quarantine.jsonl")))
    # a human budget's back-in-the-queue images (inference.budget.reroute_batch)
    counts["deferred"] = (int(routes["deferred"]) if isinstance(routes.get("deferred"), int)
                          else len(read_manifest_if_present(storage.join(base, DEFERRED_FILE))))
    return counts



@dataclass(frozen=True)
class Candidate:
    """What the training pipeline made of a dataset version."""

    uri: str  # <data root>/<models prefix>/candidates/<version>/
    version: str
    approved: bool
    bundle_id: str
    gate: dict[str, float] = field(default_factory=dict)

    @property
    def bundle_uri(self) -> str:
        return self.uri + "bundle/"


@dataclass(frozen=True)
class PeopleWaiting:
    """The job a batch waits on, as its labeling backend reports it."""

    job: JobRecord
    status: JobStatus


@dataclass
class MachinePipeline:
    names: ResourceNames
    settings: Settings
    queue_url: str
    logs: Path  # round-<n>.log per round: every step's own output
    show_progress: bool = False
    after_each_step: Callable[[Step], None] | None = None  # alp local: copy the AWS state after every step

    # --- uploads and the batcher ------------------------------------------------------------------
    def upload(self, images: Mapping[str, Path], *, desc: str) -> None:
        """Each file under the unlabeled bucket's upload prefix, its key the mapping's key."""
        from alp.machine.uploads import upload_images

        upload_images(self.names.unlabeled_bucket, self.settings.storage.unlabeled_prefix, images, desc=desc,
                      show_progress=self.show_progress)

    def batch(self, expected: int) -> str:
        """The batcher over ``expected`` upload events (this round's and any sent back); returns the manifest."""
        from alp.machine.uploads import batch_uploads

        return batch_uploads(self.queue_url, expected, self.settings, self.names)

    # --- the labeling pipeline ------------------------------------------------------------------------
    def label(self, manifest_uri: str, rnd: int, timings: dict[str, float],
              after_step: Callable[[Step], None] | None = None) -> None:
        """The labeling pipeline's steps on the batch (Infer, Label, Merge, Requeue)."""
        self._steps("labeling", {"batch_manifest": manifest_uri}, rnd, timings, after_step)

    def collect(self, manifest_uri: str, rnd: int, timings: dict[str, float]) -> None:
        """The completion pipeline (Label, Merge, Requeue): what the completion event starts in the cloud."""
        self._steps("labeling-completion", {"batch_manifest": manifest_uri}, rnd, timings)

    @staticmethod
    def waiting(batch_dir: str, people: LabelStudioBackend) -> PeopleWaiting | None:
        """The job people are still at (None: the batch's labeling is complete, or its job is done and the
        completion pipeline should collect it)."""
        from alp.labeling.workflow import read_summary

        summary = read_summary(batch_dir)
        if summary is None or summary.state == "complete":
            return None
        job = summary.waiting_on[0]
        status = people.job_status(job.name, job.folder)
        if status is None or status.done:
            return None
        return PeopleWaiting(job=job, status=status)

    # --- the training pipeline ------------------------------------------------------------------------
    def candidate_uri(self, version: str) -> str:
        return storage.join(self.names.data_root, self.settings.storage.models_prefix, "candidates", version) + "/"

    def train(self, dataset_uri: str, rnd: int, timings: dict[str, float]) -> Candidate:
        """The training pipeline on the version (Prepare, Train, Evaluate, Register), unless its candidate is in the
        registry already (a runner stopped after the Register step); returns the candidate and the gate's word."""
        version = storage.basename(dataset_uri.rstrip("/"))
        uri = self.candidate_uri(version)
        if not self.registered(uri):
            self._steps("training", {"dataset": dataset_uri, "data_root": self.names.data_root}, rnd, timings)
        return read_candidate(uri, version)

    def registered(self, candidate_uri: str) -> bool:
        from alp import registry

        bundle = candidate_uri + "bundle/"
        if not storage.exists(candidate_uri + "report.json") or not storage.exists(bundle + "bundle.json"):
            return False
        return registry.find_bundle(self.settings, _bundle_id(bundle)) is not None

    def _steps(self, pipeline: str, variables: dict[str, str], rnd: int, timings: dict[str, float],
               after_step: Callable[[Step], None] | None = None) -> None:
        from alp.machine.pipelines import run_pipeline_steps

        def after(step: Step) -> None:
            if after_step is not None:
                after_step(step)
            if self.after_each_step is not None:
                self.after_each_step(step)

        run_pipeline_steps(pipeline, variables, log_path=self.logs / f"round-{rnd}.log", timings=timings,
                           show_progress=self.show_progress, after_step=after)


def read_candidate(uri: str, version: str) -> Candidate:
    from training.evaluate import read_evaluation_report

    report = read_evaluation_report(uri + "report.json")
    gate = {k: float(v) for k, v in report.metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return Candidate(uri=uri, version=version, approved=report.approved, bundle_id=report.bundle_id, gate=gate)


def _bundle_id(bundle_uri: str) -> str:
    from alp.bundle import DESCRIPTOR_NAME, parse_descriptor

    return parse_descriptor(storage.read_text(storage.join(bundle_uri.rstrip("/"), DESCRIPTOR_NAME))).bundle_id
