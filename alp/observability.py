"""One helper for the metrics the pipeline steps publish per batch.

In the cloud (CodeBuild, SageMaker, Lambda) metrics are printed as CloudWatch embedded metric format
(EMF) lines, which CloudWatch Logs turns into metrics without an API call. In the local runner they are
appended as JSON lines to ``$ALP_METRICS_LOG`` (the demo's run folder), where the report reads them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

METRICS_LOG_ENV = "ALP_METRICS_LOG"
_CLOUD_ENVS = ("CODEBUILD_BUILD_ID", "AWS_LAMBDA_FUNCTION_NAME", "TRAINING_JOB_NAME", "PROCESSING_JOB_CONFIG")

UNITS = {
    "images": "Count", "quarantined": "Count", "seconds": "Seconds", "ms": "Milliseconds",
}


def _unit(name: str) -> str:
    for suffix, unit in (("_ms", "Milliseconds"), ("_seconds", "Seconds"), ("_s", "Seconds")):
        if name.endswith(suffix):
            return unit
    if name.endswith(("_share", "_ratio", "accuracy", "map50", "map")):
        return "None"
    return "Count"


def emit_metrics(step: str, metrics: dict[str, float], *, namespace: str = "ActiveLabelingPipeline",
                 dimensions: dict[str, str] | None = None) -> dict[str, object]:
    """Publish ``metrics`` for one pipeline step; returns the record written."""
    dims = {"Step": step, **(dimensions or {})}
    clean = {k: float(v) for k, v in metrics.items() if v is not None}
    record: dict[str, object] = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [sorted(dims)],
                "Metrics": [{"Name": k, "Unit": _unit(k)} for k in sorted(clean)],
            }],
        },
        **dims,
        **clean,
    }
    log_path = os.environ.get(METRICS_LOG_ENV)
    if log_path and not any(os.environ.get(e) for e in _CLOUD_ENVS):
        path = Path(log_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
    else:
        # stderr: CloudWatch Logs extracts the embedded metrics from either stream, and stdout stays the command's
        # own output (one JSON document with --json)
        sys.stderr.write(json.dumps(record, sort_keys=True) + "\n")
        sys.stderr.flush()
    return record
