"""Ground Truth post-annotation (consolidation) Lambda: the edge of :mod:`alp.labeling.post_annotation`.

Imports: stdlib, pydantic and the ``alp`` core only (the Lambda asset has no numpy).
"""

from __future__ import annotations

import logging
from typing import Any

from alp.labeling.post_annotation import log, post_annotation

log.setLevel(logging.INFO)


def handler(event: dict[str, Any], context: Any = None) -> list[dict[str, Any]]:
    return post_annotation(event)
