"""Ground Truth pre-annotation Lambda (``PreHumanTaskLambdaArn``): one manifest line -> one task's input.

In: ``version``, ``labelingJobArn``, ``dataObject`` (the whole input-manifest line, ``source-ref`` or
``source``). Out: ``taskInput`` (everything the Liquid template reads as ``task.input``: the image, the
model's prefill, the route reason) and ``isHumanAnnotationRequired``.

A missing or malformed pre-annotation still gives a task that shows the image, without prefill, and the
reason is logged; a line with neither ``source-ref`` nor ``source`` fails with a clear error.
Imports: stdlib, pydantic and the ``alp`` core only (the Lambda asset has no numpy).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import ValidationError

from alp.labeling.tasks import PreAnnotationEvent, build_task_input
from alp.manifest import ManifestError

log = logging.getLogger("alp.gt_pre_annotation")
log.setLevel(logging.INFO)


class PreAnnotationError(ValueError):
    """The event or its manifest line cannot make a task."""


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    try:
        parsed = PreAnnotationEvent.model_validate(event)
    except ValidationError as exc:
        raise PreAnnotationError(f"pre-annotation event: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
    try:
        task_input, notes = build_task_input(parsed.data_object)
    except ManifestError as exc:
        raise PreAnnotationError(f"data object of {parsed.labeling_job_arn or 'the job'}: {exc}") from None
    source = task_input["taskObject"]
    for note in notes:
        log.warning(json.dumps({"event": "prefill_dropped", "source": source[:300], "why": note}))
    return {"taskInput": task_input, "isHumanAnnotationRequired": True}
