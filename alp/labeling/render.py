"""Render the Ground Truth Liquid templates locally, and read back the form a rendered task would submit.

Ground Truth renders the templates with its own Liquid engine and two filters of its own:
``grant_read_access`` (an S3 URI -> a short-lived URL) and ``to_json``. Here python-liquid renders them
with stand-ins for both, so the tests and the local workforce see the same HTML workers would.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

from alp.labeling.contracts import TEMPLATE_FILES

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "gt_templates"
PREVIEW_URL = "https://ground-truth-preview.invalid/object?uri="


def template_path(kind: str) -> Path:
    try:
        return TEMPLATES_DIR / TEMPLATE_FILES[kind]
    except KeyError:
        raise ValueError(f"no template for task kind {kind!r}; kinds: {sorted(TEMPLATE_FILES)}") from None


def preview_url(uri: str) -> str:
    """The local stand-in for ``grant_read_access``: a URL that names the object, nothing more."""
    return PREVIEW_URL + quote(str(uri), safe="")


def render_task(kind: str, task_input: dict[str, Any],
                grant_read_access: Callable[[str], str] = preview_url) -> str:
    """The HTML of one task, as Ground Truth would serve it for this ``taskInput``."""
    from liquid import Environment

    env = Environment()
    env.add_filter("grant_read_access", lambda uri: grant_read_access(str(uri)))
    env.add_filter("to_json", lambda value: json.dumps(value, sort_keys=True))
    template = env.from_string(template_path(kind).read_text(encoding="utf-8"))
    return str(template.render(task={"input": task_input}))


@dataclass
class FormSpec:
    """What a rendered task's form is made of: the crowd elements and the plain inputs, by name."""

    elements: dict[str, dict[str, str]] = field(default_factory=dict)  # tag -> attributes
    radios: dict[str, list[str]] = field(default_factory=dict)  # name -> values in page order
    checked: dict[str, str] = field(default_factory=dict)
    hidden: list[str] = field(default_factory=list)

    def element(self, tag: str) -> dict[str, str]:
        if tag not in self.elements:
            raise ValueError(f"the rendered task has no <{tag}>")
        return self.elements[tag]

    def json_attribute(self, tag: str, attribute: str) -> Any:
        return json.loads(self.element(tag)[attribute])


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.spec = FormSpec()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag.startswith("crowd-") and tag not in ("crowd-form",):
            self.spec.elements.setdefault(tag, values)
        elif tag == "input" and values.get("name"):
            kind = values.get("type", "text")
            if kind == "radio":
                self.spec.radios.setdefault(values["name"], []).append(values.get("value", ""))
                if "checked" in values:
                    self.spec.checked[values["name"]] = values.get("value", "")
            elif kind == "hidden":
                self.spec.hidden.append(values["name"])


def parse_form(html: str) -> FormSpec:
    parser = _FormParser()
    parser.feed(html)
    parser.close()
    return parser.spec
