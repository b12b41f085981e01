"""The Liquid templates render from the pre-annotation Lambda's real output, with the right elements."""

from __future__ import annotations

import json
from typing import Any

import pytest
from labeling_builders import human_line, truth_line
from paths import REPO_ROOT  # noqa: E402

from alp.labeling.contracts import PERSON_KEY, TEMPLATE_FILES, PersonTask
from alp.labeling.render import parse_form, render_task, template_path
from alp.manifest import ImageSize
from alp.schema import INCABIN17
from alp.settings import Settings
from lambdas.gt_pre_annotation import handler

SETTINGS = Settings()
EVIL = 's3://bucket/in/"><script>alert(1)</script>.jpg'


def _task(line: dict[str, Any]) -> dict[str, Any]:
    out = handler({"version": "2018-10-16", "labelingJobArn": "arn:aws:sagemaker:us-east-1:1:labeling-job/x",
                   "dataObject": line})
    return out["taskInput"]  # type: ignore[no-any-return]


def _head_line(source: str = "s3://u/img_0001.jpg") -> dict[str, Any]:
    truth = truth_line("s3://pool/img_0001.jpg", SETTINGS, persons=3, seed=4)
    return human_line(source, truth, SETTINGS, seed=4).data


def _person_line(source: str = "s3://u/img_0002.jpg") -> dict[str, Any]:
    truth = truth_line("s3://pool/img_0002.jpg", SETTINGS, persons=2, seed=5)
    kp = truth.keypoints(SETTINGS.labeling.keypoint_label_attribute)
    assert kp is not None
    line = human_line(source, truth, SETTINGS, seed=5).data
    line[PERSON_KEY] = PersonTask(image_key=source, head_index=0, head_box=[100, 80, 60, 70],
                                  image_size=ImageSize(width=640, height=480), persons_in_image=2,
                                  prefill=kp[0].persons[0]).dump()
    return line


def test_the_template_files_are_where_the_stack_uploads_them_from() -> None:
    for kind, name in TEMPLATE_FILES.items():
        assert template_path(kind) == REPO_ROOT / "gt_templates" / name
        assert template_path(kind).is_file()


def test_head_box_task_renders_a_bounding_box_element_with_the_models_boxes() -> None:
    task = _task(_head_line())
    html = render_task("head-boxes", task)
    form = parse_form(html)
    box = form.element("crowd-bounding-box")
    assert box["name"] == "heads"
    assert json.loads(box["labels"]) == ["head"]
    initial = json.loads(box["initial-value"])
    assert initial == task["initialBoxes"] and len(initial) == 2 and initial[0]["label"] == "head"
    assert box["src"].startswith("https://") and "img_0001.jpg" in box["src"]
    assert "crowd-form" in html and "elapsed-seconds" in form.hidden
    assert "missed" in box["header"]  # the "find what the model missed" micro-task
    assert "<full-instructions" in html and "<svg" in html  # illustrated instructions


def test_keypoint_task_renders_17_points_a_visibility_row_each_and_the_highlight() -> None:
    task = _task(_person_line())
    html = render_task("keypoints", task)
    form = parse_form(html)
    kp = form.element("crowd-keypoint")
    assert kp["name"] == "keypoints" and json.loads(kp["labels"]) == list(INCABIN17.names)
    assert json.loads(kp["initial-value"]) == task["initialKeypoints"]
    assert sorted(form.radios) == sorted(f"visibility-{n}" for n in INCABIN17.names)
    assert all(values == ["visible", "occluded", "outside"] for values in form.radios.values())
    # The prefilled visibility is pre-checked, point by point.
    expected = {row["field"]: next(c for c in ("visible", "occluded", "outside") if row[c]) for row in task["points"]}
    assert form.checked == expected
    assert f"left: {task['highlight']['left']}%" in html and "Person 1 of 2" in html


def test_a_cold_start_keypoint_task_has_no_prefill_and_nothing_checked() -> None:
    line = _person_line()
    line[PERSON_KEY]["prefill"] = None
    form = parse_form(render_task("keypoints", _task(line)))
    assert json.loads(form.element("crowd-keypoint")["initial-value"]) == [] and form.checked == {}


@pytest.mark.parametrize(("kind", "line"), [("head-boxes", _head_line(EVIL)), ("keypoints", _person_line(EVIL))])
def test_strings_from_manifests_are_escaped(kind: str, line: dict[str, Any]) -> None:
    """A source-ref crafted to break out of the attribute stays inside it, as text."""
    html = render_task(kind, _task(line), grant_read_access=lambda uri: uri)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;" in html
    form = parse_form(html)
    element = form.element("crowd-bounding-box" if kind == "head-boxes" else "crowd-keypoint")
    assert element["src"] == EVIL  # the attribute round-trips to the exact URI


def test_text_shown_to_workers_is_escaped() -> None:
    task = _task(_head_line())
    task["reasonText"] = "<b onmouseover=alert(1)>hi</b>"
    html = render_task("head-boxes", task)
    assert "<b onmouseover" not in html and "&lt;b onmouseover=alert(1)&gt;hi&lt;/b&gt;" in html
