"""Completion trigger Lambda: Ground Truth's labeling-job state change, or the scheduled check of waiting batches,
starts the labeling-completion pipeline (Label, Merge, Requeue) for the batches it concerns.

Thin handler: settings come from ``ALP_SETTINGS_URI`` (the stack deploys them next to the data), resource names
from the settings and this function's own ARN; the decision and the starts are :mod:`alp.labeling.completion`.
It reads only the waiting index (never Ground Truth or Label Studio): no network path to the labeling tool.
"""

from __future__ import annotations

import logging
from typing import Any

from alp.labeling.completion import log, run_completion
from alp.resources import ResourceNames
from alp.settings import SettingsOnce

log.setLevel(logging.INFO)
_settings = SettingsOnce()  # loaded once per execution environment, not per invocation


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """EventBridge target: a labeling-job state change or a scheduled event."""
    settings = _settings()
    names = ResourceNames.for_function(settings, context.invoked_function_arn)
    return run_completion(event, settings, names).as_json()
