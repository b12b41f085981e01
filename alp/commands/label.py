"""``alp label --batch <batch_dir>``: label the batch's human and audit items (the pipeline's Label step)."""

from __future__ import annotations

import argparse
import logging
import sys
import time


def _label(args: argparse.Namespace) -> int:
    from alp.datasets import PEOPLE_KINDS, SOURCE_KEY, data_root_for, latest_version, read_version
    from alp.labeling.backend import JobStatus, JobTimeout, LabelingBackend
    from alp.labeling.backends import get_backend
    from alp.labeling.waiting import record_outcome
    from alp.labeling.workflow import run_label_step
    from alp.manifest import ManifestLine
    from alp.observability import emit_metrics
    from alp.settings import load_settings

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    settings = load_settings()
    options = {}
    if args.local_simulation:
        if settings.labeling.backend != "local":
            raise ValueError("--local-simulation applies to the local backend only (settings.labeling.backend)")
        from alp import storage
        from alp.labeling.local import LocalJobSimulation

        options["simulation"] = LocalJobSimulation.model_validate_json(storage.read_text(args.local_simulation))
    backend = get_backend(settings, **options)
    batch_dir = args.batch.rstrip("/") + "/"

    def report(status: JobStatus) -> None:
        done = f" {status.labeled}/{status.total} labeled" if status.total else ""
        print(f"label: job {status.name} {status.state}{done}", file=sys.stderr, flush=True)

    def wait(b: LabelingBackend, name: str) -> JobStatus:
        """At most --wait-minutes (default: not at all; people's work takes hours or days and no build waits
        for it: a completion event runs the step again)."""
        if args.wait_minutes <= 0:
            status = b.describe_job(name)
            report(status)
            return status
        try:
            return b.wait(name, poll_seconds=args.poll_seconds, timeout_seconds=args.wait_minutes * 60,
                          on_poll=report)
        except JobTimeout:
            return b.describe_job(name)

    def gold() -> list[ManifestLine]:
        lines = backend.gold_candidates()
        if lines:
            return lines
        # Gold for real workforces: the people's labels in the latest dataset version.
        latest = latest_version(args.data_root or data_root_for(batch_dir), settings)
        if latest is None:
            return []
        return [line for line in read_version(latest)
                if (line.data.get(SOURCE_KEY) or {}).get("kind") in PEOPLE_KINDS]
    started = time.monotonic()
    summary = run_label_step(batch_dir, settings, backend, gold_candidates=gold, wait=wait)
    record_outcome(args.data_root or data_root_for(batch_dir), settings, summary)
    if summary.state == "waiting":
        job = summary.waiting_on[0]
        print(f"alp label: people are at work on {job.kind} job {job.name} ({job.labeled}/{job.items} done); the "
              "step ends here and runs again when the job completes", file=sys.stderr)
        print(summary.model_dump_json(indent=2))
        return 0
    emit_metrics("Label", {"images": summary.items, "labeled": summary.labeled, "unlabeled": summary.unlabeled,
                           "audit_items": summary.audit_items,
                           "labeling_job_seconds": time.monotonic() - started},
                 namespace=settings.observability.metrics_namespace)
    print(summary.model_dump_json(indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("label", help="label a batch's human and audit items (Ground Truth, Label Studio or local)")
    parser.add_argument("--batch", required=True, help="batch folder (s3://.../batches/<id>/ or a local path)")
    parser.add_argument("--poll-seconds", type=float, default=60.0, help="job status poll interval")
    parser.add_argument("--wait-minutes", type=float, default=0.0,
                        help="wait this long for people to finish (default 0: create the jobs and end; the batch "
                             "stays 'waiting' and a re-run of the step, by a completion event, goes on)")
    parser.add_argument("--data-root", help="where datasets/ lives (default $ALP_DATA_ROOT or two levels up)")
    parser.add_argument("--local-simulation",
                        help="local backend: JSON file of the simulated job (noise model, workers, outcome)")
    parser.set_defaults(func=_label)
