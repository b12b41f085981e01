"""One round of the demo: upload a batch, let the batcher start the labeling pipeline, run its steps, then
the training pipeline's, and score the candidate on the frozen test set.

Round 0 (cold start) is a random seed set, which the labeling pipeline sends to the local workforce whole
because no approved model exists yet; every later round uploads the next slice of the shuffled pool, plus
unusable uploads the pipeline must quarantine.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

from alp import storage
from alp.demo import integration
from alp.demo.people import PeopleAtWork
from alp.demo.report import Overlay
from alp.demo.state import DemoState, RoundRecord, RunFolder
from alp.machine.console import say
from alp.machine.pipeline import MachinePipeline, route_counts
from alp.machine.uploads import upload_broken
from alp.manifest import ManifestLine
from alp.resources import ResourceNames
from alp.settings import Settings
from alp.steps import Step

# Rewrites the Infer step's outputs of the batch in ``batch_dir`` (round, settings); returns the route counts.
Router = Callable[[str, int, Settings], dict[str, int]]
OVERLAYS_PER_KIND = 6


class DemoRun:
    """One demo run: embedded AWS up, data generated; call :meth:`run_round` per round."""

    def __init__(self, folder: RunFolder, state: DemoState, names: ResourceNames, settings: Settings,
                 queue_url: str, *, show_progress: bool, reroute: Router | None = None,
                 people: PeopleAtWork | None = None):
        self.people = people
        self.folder = folder
        self.state = state
        self.config = state.config
        self.names = names
        self.settings = settings
        self.queue_url = queue_url
        self.show_progress = show_progress
        self.reroute = reroute or self._budget_router()
        self.data_root = names.data_root
        # the round's mechanics, shared with `alp local`: uploads, the batcher, the declared pipelines
        self.pipeline = MachinePipeline(names, settings, queue_url, logs=folder.logs_dir, show_progress=show_progress)
        pool_lines = [ManifestLine.parse(t) for t in storage.iter_lines(str(state.pool_manifest))]
        self.pool_by_name = {storage.basename(line.source_ref): line for line in pool_lines}
        order = sorted(self.pool_by_name)
        random.Random(self.config.seed).shuffle(order)
        self.order = order
        # the first round this process runs, when it resumes a run folder (None: a fresh run)
        self._resumed_at = state.completed_rounds if state.rounds else None
        self.test_lines = [ManifestLine.parse(t) for t in storage.iter_lines(str(state.test_manifest))]

    # round plan: seed set first, then equal slices of the shuffled pool
    def round_images(self, rnd: int) -> list[str]:
        seed_n = min(self.config.seed_images, len(self.order))
        if rnd == 0:
            return self.order[:seed_n]
        size = self.config.round_batch_size()
        start = seed_n + (rnd - 1) * size
        return self.order[start:start + size]

    def run_round(self, rnd: int) -> RoundRecord:
        started = time.monotonic()
        names = self.round_images(rnd)
        previous = self.state.rounds[-1] if self.state.rounds else None
        requeued = self._requeued_into(rnd, previous)
        record = RoundRecord(round=rnd, images_seen=len(names) + requeued, redriven=requeued)
        self._announce(rnd, len(names), requeued)
        manifest_uri = self._upload_and_batch(rnd, names, record)
        self._label(rnd, manifest_uri, record, previous)
        dataset_uri = integration.latest_dataset(self.data_root)
        self._train_and_score(dataset_uri, record)
        record.audit_agreement = integration.audit_agreement(dataset_uri)
        self._automation(record)
        record.seconds = round(time.monotonic() - started, 1)
        return record

    # --- the steps of a round ----------------------------------------------------------------------
    def _requeued_into(self, rnd: int, previous: RoundRecord | None) -> int:
        """Back in the queue: last round's Requeue step copied the images it left unlabeled (a human budget's
        deferred ones) onto themselves; their events wait in the queue beside this round's uploads, and this
        round's model judges them."""
        requeued = previous.requeued if previous else 0
        if requeued and previous and previous.batch_dir and rnd == self._resumed_at:
            requeued = self._requeue_again(previous.batch_dir)
        return requeued

    def _requeue_again(self, batch_dir: str) -> int:
        """A resumed run has a new embedded AWS: the events of the last round's Requeue step were lost with the
        old one, and the images were restored without the step's metadata. Send exactly the images that step
        sent, with the counts it recorded (deciding again would start every count at 0). Returns how many."""
        from alp.requeue import read_summary, resend

        summary = read_summary(batch_dir)
        return resend(summary) if summary else 0

    @staticmethod
    def _announce(rnd: int, uploads: int, requeued: int) -> None:
        if rnd == 0:
            say(f"round 0 (cold start): {uploads} random images; with no approved model yet the labeling "
                "pipeline sends every one to the local workforce")
        else:
            say(f"round {rnd}: {uploads} new images" + (f" + {requeued} sent back last round" if requeued else ""))

    def _upload_and_batch(self, rnd: int, names: list[str], record: RoundRecord) -> str:
        """This round's uploads (and unusable ones after the cold start) through the batcher; returns the
        batch manifest."""
        self.pipeline.upload({name: self._local_image(name) for name in names}, desc=f"upload round {rnd}")
        broken = []
        if rnd > 0:
            sources = [self._local_image(self.order[i % len(self.order)])
                       for i in range(self.config.broken_per_round)]
            broken = upload_broken(self.names.unlabeled_bucket, self.settings.storage.unlabeled_prefix, sources, rnd)
        record.images_seen += len(broken)
        manifest_uri = self.pipeline.batch(len(names) + len(broken) + record.redriven)
        say(f"  batch manifest {manifest_uri}")
        return manifest_uri

    def _label(self, rnd: int, manifest_uri: str, record: RoundRecord, previous: RoundRecord | None) -> None:
        """The labeling pipeline's steps on the batch, then what its outputs say about the round's images."""
        batch_dir = record.batch_dir = storage.parent(manifest_uri)
        reroute = self.reroute

        def after_step(step: Step) -> None:
            if step.name == "Infer" and reroute is not None:
                reroute(batch_dir, rnd, self.settings)  # rewrites the Infer step's outputs and summary

        self.pipeline.label(manifest_uri, rnd, record.step_seconds, after_step)
        # People label in Label Studio (--workforce studio): the batch waits; when they finish a job, the
        # completion pipeline runs, as the completion event starts it in the cloud.
        while self.people is not None and not self.people.finished(batch_dir):
            self.pipeline.collect(manifest_uri, rnd, record.step_seconds)
        counts = route_counts(batch_dir)  # the Infer summary's routes (rerouted or not) + the batcher's
        record.auto, record.human = counts["auto"], counts["human"]
        record.audit, record.quarantine = counts["audit"], counts["quarantine"]
        record.deferred = counts.get("deferred", 0)
        record.deferred_images = integration.deferred_images(batch_dir) if record.deferred else []
        record.requeued, record.requeue_quarantined = integration.requeue_counts(batch_dir)
        # what people labeled: an image their jobs left unlabeled comes back and is counted when it is labeled
        record.unlabeled = integration.unlabeled_count(batch_dir)
        prev_labels = previous.human_labels_total if previous else 0
        record.human_labels_total = prev_labels + record.human + record.audit - record.unlabeled

    def _automation(self, record: RoundRecord) -> None:
        """What the model labeled in this round's batch, how right it was by the truth, and people's seconds."""
        from alp.automation import AutomationFigures, batch_automation

        if record.batch_dir is None:
            return
        report = batch_automation(record.batch_dir, self.settings, self.data_root, self.pool_by_name)
        for name in AutomationFigures.model_fields:
            setattr(record, name, getattr(report, name))

    def _train_and_score(self, dataset_uri: str, record: RoundRecord) -> None:
        """The training pipeline's steps, then the candidate on the frozen test set."""
        candidate = self.pipeline.train(dataset_uri, record.round, record.step_seconds)
        record.dataset_version = candidate.version
        record.bundle_uri = candidate.bundle_uri
        record.approved = candidate.approved
        record.bundle_id = candidate.bundle_id
        t0 = time.monotonic()
        scores = integration.score_bundle(record.bundle_uri, self.test_lines, self.settings,
                                          self.folder.work_dir / "bundles")
        record.step_seconds["frozen-test"] = round(time.monotonic() - t0, 2)
        record.box_map50 = scores.get("box_map50")
        record.kpt_oks_map50 = scores.get("kpt_oks_map50")
        record.visibility_accuracy = scores.get("visibility_accuracy")

    def _budget_router(self) -> Router | None:
        """With ``--human-share``: the batch's least confident images up to the budget go to people."""
        budget = self.config.human_budget()
        if budget is None:
            return None
        from inference.budget import reroute_batch

        def route(batch_dir: str, rnd: int, settings: Settings) -> dict[str, int]:
            return reroute_batch(storage.join(batch_dir, "inference/"), budget, "judgement", rnd, settings)

        return route

    def _local_image(self, name: str) -> Path:
        return Path(self.pool_by_name[name].source_ref)

    # --- report -------------------------------------------------------------------------------------
    def overlays(self) -> tuple[list[Overlay], list[Overlay]]:
        """The latest rounds' auto-labeled and human-routed images, up to six of each, newest first."""
        auto: list[Overlay] = []
        human: list[Overlay] = []
        for row in reversed(self.state.rounds):
            if not row.batch_dir:
                continue
            for found, kept in zip(integration.overlay_lines(row.batch_dir), (auto, human), strict=True):
                for line, caption in found[:OVERLAYS_PER_KIND - len(kept)]:
                    kept.append(Overlay(self._local_image(storage.basename(line.source_ref)), line,
                                        f"r{row.round} {caption}"))
            if len(auto) >= OVERLAYS_PER_KIND and len(human) >= OVERLAYS_PER_KIND:
                break
        return auto, human
