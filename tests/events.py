"""AWS event fixtures (``tests/fixtures/events/*.json``), in the exact shape the services send them, with
their placeholders (upper-case words such as BUCKET or KEY) filled in by the test."""

from __future__ import annotations

import json
from typing import Any

from paths import REPO_ROOT

EVENTS = REPO_ROOT / "tests" / "fixtures" / "events"


def event(name: str, **values: str) -> dict[str, Any]:
    """The fixture ``name`` with every string equal to, or starting with, a placeholder replaced."""
    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v) for v in node]
        if isinstance(node, str):
            for placeholder, value in values.items():
                node = node.replace(placeholder, value)
        return node

    loaded: dict[str, Any] = fill(json.loads((EVENTS / f"{name}.json").read_text()))
    return loaded
