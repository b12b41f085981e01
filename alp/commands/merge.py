"""``alp merge --batch <batch_dir>``: the batch's labels -> the next immutable dataset version (Merge step)."""

from __future__ import annotations

import argparse
import logging
import sys


def _merge(args: argparse.Namespace) -> int:
    from alp import aws, storage
    from alp.audits import record_batch_outcomes
    from alp.datasets import data_root_for, merge_batch_result
    from alp.labeling.workflow import labeling_waiting
    from alp.observability import emit_metrics
    from alp.pipeline_runs import start_execution
    from alp.resources import ResourceNames
    from alp.retraining import record_training_start, retrain_decision
    from alp.settings import load_settings
    from alp.steps import TRAINING_PIPELINE

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    settings = load_settings()
    batch_dir = args.batch.rstrip("/") + "/"
    data_root = args.data_root or data_root_for(batch_dir)
    labeling = labeling_waiting(batch_dir)
    if labeling is not None:
        print(f"alp merge: labeling of {batch_dir} is still with people ({labeling.waiting_on[0].name}); nothing "
              "to merge yet", file=sys.stderr)
        return 0
    result = merge_batch_result(batch_dir, settings, data_root)
    # How right the model's proposals were, by the people's labels of this batch (what the audits rest on).
    outcomes = record_batch_outcomes(batch_dir, data_root, settings)
    if outcomes:
        print(f"alp merge: {len(outcomes)} proposals checked against people's labels "
              f"({sum(o.agreed for o in outcomes)} agreed)", file=sys.stderr)
    if not result.created:
        print(f"alp merge: batch already in {result.uri}; no new version", file=sys.stderr)
    else:
        info = result.version
        decision = (retrain_decision(data_root, settings, result.uri)
                    if storage.is_s3(data_root) and not args.no_training else None)
        emit_metrics("Merge", {"records": info.records, **{f"records_{k}": v for k, v in info.counts_by_source.items()},
                               **{f"changes_{k}": v for k, v in info.changes.items()},
                               **({"new_people_labels": decision.new_people_labels,
                                   "training_started": float(decision.start)} if decision else {})},
                     namespace=settings.observability.metrics_namespace)
        if decision is not None:
            if decision.start:
                pipeline = ResourceNames.from_settings(settings, aws.account_id()).training_pipeline
                execution_id = start_execution(pipeline, TRAINING_PIPELINE, {"DatasetUri": result.uri})
                record_training_start(data_root, settings, info.version, execution_id)
                print(f"alp merge: started {pipeline} execution {execution_id} ({decision.reason})", file=sys.stderr)
            else:
                print(f"alp merge: no training run: {decision.reason}", file=sys.stderr)
    print(result.uri)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("merge", help="merge a labeled batch into the next dataset version")
    parser.add_argument("--batch", required=True, help="batch folder (s3://.../batches/<id>/ or a local path)")
    parser.add_argument("--data-root", help="where datasets/ lives (default $ALP_DATA_ROOT or two levels up)")
    parser.add_argument("--no-training", action="store_true", help="do not start the training pipeline")
    parser.set_defaults(func=_merge)
