"""Ground Truth pre-annotation Lambda (``PreHumanTaskLambdaArn``): the edge of :mod:`alp.labeling.pre_annotation`.

Imports: stdlib, pydantic and the ``alp`` core only (the Lambda asset has no numpy).
"""

from __future__ import annotations

import logging
from typing import Any

from alp.labeling.pre_annotation import log, pre_annotation

log.setLevel(logging.INFO)


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return pre_annotation(event)
