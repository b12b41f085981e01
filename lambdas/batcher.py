"""Batcher Lambda: one SQS window of S3 upload events -> one batch manifest and one labeling execution.

Thin handler: settings come from ``ALP_SETTINGS_URI`` (the stack deploys them next to the data), resource
names from the settings and this function's own ARN; everything else is :mod:`alp.batching`.
"""

from __future__ import annotations

import logging
from typing import Any

from alp.batching import BatchingError
from alp.batching.window import process_sqs_records
from alp.resources import ResourceNames
from alp.settings import Settings, SettingsOnce

logging.getLogger().setLevel(logging.INFO)
_settings = SettingsOnce()  # loaded once per execution environment, not per invocation


def names_from_function_arn(settings: Settings, function_arn: str) -> ResourceNames:
    """Resource names for the account and region of the running Lambda function (from its ARN)."""
    parts = function_arn.split(":")
    if len(parts) < 7 or parts[2] != "lambda":
        raise BatchingError(f"not a Lambda function ARN: {function_arn!r}")
    return ResourceNames.from_settings(settings, account=parts[4], region=parts[3])


def handler(event: dict[str, Any], context: Any) -> dict[str, list[dict[str, str]]]:
    """SQS event source handler with ``ReportBatchItemFailures``."""
    settings = _settings()
    names = names_from_function_arn(settings, context.invoked_function_arn)
    result = process_sqs_records(event.get("Records", []), settings, names)
    return result.lambda_response()
