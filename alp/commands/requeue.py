"""``alp requeue --batch <batch_dir>``: send the batch's unlabeled and deferred images back (Requeue step)."""

from __future__ import annotations

import argparse
import json
import sys


def _requeue(args: argparse.Namespace) -> int:
    from alp import aws
    from alp.labeling.workflow import labeling_waiting
    from alp.observability import emit_metrics
    from alp.requeue import requeue_batch
    from alp.resources import ResourceNames
    from alp.settings import load_settings

    settings = load_settings()
    if labeling_waiting(args.batch) is not None:
        print(f"alp requeue: labeling of {args.batch} is still with people; nothing to requeue yet", file=sys.stderr)
        if args.json:
            print(json.dumps({"waiting": True}))
        return 0
    bucket = args.unlabeled_bucket
    if bucket is None:
        account = aws.account_id()
        bucket = ResourceNames.from_settings(settings, account).unlabeled_bucket
    summary = requeue_batch(args.batch, unlabeled_bucket=bucket, unlabeled_prefix=settings.storage.unlabeled_prefix,
                            max_requeues=settings.labeling.max_requeues)
    counts = summary.counts()
    emit_metrics("Requeue", {**counts, **{f"quarantined_{k}": v for k, v in summary.quarantined.items()}},
                 namespace=settings.observability.metrics_namespace)
    if args.json:
        print(json.dumps({**counts, "quarantined_by_reason": summary.quarantined, "invariant": summary.invariant},
                         sort_keys=True))
    else:
        print(f"alp requeue: {summary.invariant}", file=sys.stderr)
    return 0


_DESCRIPTION = """\
Copy every image of <batch>/labeling/unlabeled.jsonl and <batch>/inference/deferred.jsonl onto itself in the \
unlabeled bucket (a new version, which the upload rule sends to the batcher). Images sent back \
labeling.max_requeues times, gone or outside the unlabeled prefix are quarantined with the reason in \
<batch>/requeue/quarantine.jsonl. Safe to re-run."""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "requeue", help="send a batch's unlabeled and deferred images back to the queue for a later batch",
        description=_DESCRIPTION)
    parser.add_argument("--batch", required=True, help="batch folder (s3://<data bucket>/batches/<id>/)")
    parser.add_argument("--unlabeled-bucket", default=None,
                        help="the unlabeled bucket (default: the stack's, from the settings and the account)")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON on stdout")
    parser.set_defaults(func=_requeue)
