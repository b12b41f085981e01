"""Contract of the pre-annotation Lambda: manifest line in, ``taskInput`` + ``isHumanAnnotationRequired`` out."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from events import event
from labeling_builders import human_line, truth_line

from alp.labeling.contracts import PERSON_KEY, PersonTask
from alp.labeling.pre_annotation import PreAnnotationError
from alp.manifest import ImageSize
from alp.settings import Settings
from lambdas.gt_pre_annotation import handler

SETTINGS = Settings()
ARN = "arn:aws:sagemaker:us-east-1:123456789012:labeling-job/alp-heads-0123456789abcdef"


def _event(data_object: dict[str, Any]) -> dict[str, Any]:
    return {**event("gt_pre_annotation"), "dataObject": data_object}


def _line(**kw: Any) -> dict[str, Any]:
    truth = truth_line("s3://pool/img_0001.jpg", SETTINGS, persons=3, seed=1)
    return human_line("s3://unlabeled/incoming/img_0001.jpg", truth, SETTINGS, **kw).data


def test_given_a_human_line_with_prefill_then_the_task_carries_image_boxes_and_reason() -> None:
    out = handler(_event(_line()))
    task = out["taskInput"]
    assert out["isHumanAnnotationRequired"] is True
    assert task["taskObject"] == "s3://unlabeled/incoming/img_0001.jpg"
    assert task["kind"] == "head-boxes" and task["labels"] == ["head"]
    assert task["reason"].startswith("low_keypoints: person 0")
    assert task["reasonText"] == "The model was unsure about some body points."
    assert task["prefilled"] is True
    # human_line drops the model's last head: two of three heads are prefilled, in pixels.
    assert len(task["initialBoxes"]) == 2
    assert set(task["initialBoxes"][0]) == {"label", "left", "top", "width", "height"}
    json.dumps(out)  # the response must be JSON


def test_given_malformed_preannotation_then_the_image_is_shown_without_prefill_and_why_is_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    line = _line()
    line["alp-preannotation"]["boxes"][0]["width"] = -5
    with caplog.at_level(logging.WARNING, logger="alp.gt_pre_annotation"):
        out = handler(_event(line))
    assert out["taskInput"]["initialBoxes"] == [] and out["taskInput"]["prefilled"] is False
    assert out["taskInput"]["taskObject"].endswith("img_0001.jpg")
    assert any("malformed alp-preannotation" in r.getMessage() for r in caplog.records)


def test_given_no_preannotation_at_all_then_a_plain_task_is_made() -> None:
    out = handler(_event({"source-ref": "s3://b/x.jpg"}))
    assert out["taskInput"]["initialBoxes"] == [] and out["taskInput"]["taskObject"] == "s3://b/x.jpg"


def test_given_inline_source_then_it_is_the_task_object() -> None:
    assert handler(_event({"source": "s3://b/inline.jpg"}))["taskInput"]["taskObject"] == "s3://b/inline.jpg"


@pytest.mark.parametrize("data_object", [{"alp-preannotation": {}}, {"source-ref": ""}, {"source": 5}])
def test_given_no_usable_source_then_a_clear_error(data_object: dict[str, Any]) -> None:
    with pytest.raises(PreAnnotationError, match="source"):
        handler(_event(data_object))


def test_given_an_event_without_data_object_then_a_clear_error() -> None:
    with pytest.raises(PreAnnotationError, match="dataObject"):
        handler({"version": "2018-10-16", "labelingJobArn": ARN})


def test_given_a_cold_start_line_then_no_prefill_and_the_no_model_text() -> None:
    line = human_line("s3://u/img.jpg", None, SETTINGS).data
    task = handler(_event(line))["taskInput"]
    assert task["initialBoxes"] == [] and task["reason"] == "no_model" and "no model" in task["reasonText"]


def test_given_an_audit_line_then_people_label_without_the_models_boxes() -> None:
    task = handler(_event(_line(route="audit")))["taskInput"]
    assert task["route"] == "audit" and task["initialBoxes"] == [] and "Quality check" in task["reasonText"]


def test_given_a_person_line_then_the_keypoint_task_has_17_labels_prefill_and_highlight() -> None:
    truth = truth_line("s3://pool/img_0002.jpg", SETTINGS, persons=2, seed=2)
    kp = truth.keypoints(SETTINGS.labeling.keypoint_label_attribute)
    assert kp is not None
    person = kp[0].persons[1]
    line = human_line("s3://u/img_0002.jpg", truth, SETTINGS).data
    line[PERSON_KEY] = PersonTask(image_key="s3://u/img_0002.jpg", head_index=1, head_box=[320, 100, 64, 80],
                                  image_size=ImageSize(width=640, height=480), persons_in_image=2,
                                  prefill=person).dump()
    task = handler(_event(line))["taskInput"]
    assert task["kind"] == "keypoints" and len(task["labels"]) == 17 and len(task["points"]) == 17
    assert task["personNumber"] == 2 and task["personCount"] == 2
    assert task["highlight"] == {"left": 50.0, "top": 20.833, "width": 10.0, "height": 16.667}
    placed = {p["label"] for p in task["initialKeypoints"]}
    assert placed == {k.name for k in person.keypoints if k.v > 0}
    row = task["points"][0]
    assert row["field"] == "visibility-left_eye" and [row["visible"], row["occluded"], row["outside"]].count(True) == 1


def test_given_a_person_line_with_a_broken_person_then_a_clear_error() -> None:
    with pytest.raises(PreAnnotationError, match="alp-person"):
        handler(_event({"source-ref": "s3://b/x.jpg", PERSON_KEY: {"head_index": -1}}))


@pytest.mark.parametrize(("reason", "text"), [
    ("low_box: head box 0 confidence 0.2 < box_threshold 0.5; no_head: person 1 has no head box",
     "The model was unsure about some head boxes. The model found a person without a head box."),
    ("<script>alert(1)</script>", "The model was unsure about this image."),
])
def test_worker_facing_reason_text_comes_from_fixed_sentences(reason: str, text: str) -> None:
    line = _line()
    line["alp-preannotation"]["reason"] = reason
    assert handler(_event(line))["taskInput"]["reasonText"] == text
