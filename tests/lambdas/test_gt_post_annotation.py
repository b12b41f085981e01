"""Contract of the consolidation Lambda: event + payload on S3 in, one consolidated annotation per object out."""

from __future__ import annotations

import json
from typing import Any

import pytest
from events import event

from alp import aws, storage
from alp.labeling.contracts import CONSOLIDATION_KEY, GoldItem, JobContext
from alp.labeling.post_annotation import PostAnnotationError
from alp.labeling.worker_reports import WorkerReport
from alp.manifest import BoxAnnotation, ImageSize
from alp.schema import INCABIN17
from lambdas.gt_post_annotation import handler

BUCKET = "labeling-out"
JOB = "alp-heads-0123456789abcdef"
FOLDER = f"s3://{BUCKET}/batches/b1/labeling/jobs/{JOB}/"
PAYLOAD = FOLDER + "annotations/consolidated-annotation/consolidation-request/iteration-1/2026-01-01_00:00:00.json"
ATTR = "head-boxes"


def _event(payload: str = PAYLOAD, attr: str = ATTR) -> dict[str, Any]:
    return event("gt_post_annotation", JOB=JOB, ATTR=attr, PAYLOAD=payload, FOLDER=FOLDER)


def _answer(*boxes: tuple[float, float, float, float], seconds: str = "20") -> str:
    return json.dumps({"heads": {"boundingBoxes": [{"label": "head", "left": b[0], "top": b[1], "width": b[2],
                                                    "height": b[3]} for b in boxes],
                                 "inputImageProperties": {"width": 640, "height": 480}},
                       "elapsed-seconds": seconds})


def _object(obj_id: str, answers: dict[str, str], source: str | None = None) -> dict[str, Any]:
    return {"datasetObjectId": obj_id, "dataObject": {"s3Uri": source or f"s3://u/img_{obj_id}.jpg"},
            "annotations": [{"workerId": w, "annotationData": {"content": c}} for w, c in answers.items()]}


@pytest.fixture
def bucket(aws_mock: None) -> str:
    aws.client("s3").create_bucket(Bucket=BUCKET)
    return BUCKET


def _write_context(gold: list[GoldItem] | None = None, threshold: float = 0.6) -> None:
    ctx = JobContext(job_name=JOB, kind="head-boxes", label_attribute=ATTR, keypoint_names=list(INCABIN17.names),
                     sigmas=list(INCABIN17.sigmas), gold_agreement_threshold=threshold, gold=gold or [])
    storage.write_text(FOLDER + "alp-job.json", ctx.model_dump_json())


def _run(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    storage.write_text(PAYLOAD, json.dumps(objects))
    out = handler(_event())
    assert all(set(o) == {"datasetObjectId", "consolidatedAnnotation"} for o in out)
    return {o["datasetObjectId"]: o["consolidatedAnnotation"]["content"][ATTR] for o in out}


def test_given_three_workers_then_one_consolidated_label_per_object_in_ground_truth_shape(bucket: str) -> None:
    _write_context()
    result = _run([
        _object("0", {"w1": _answer((100, 100, 50, 60)), "w2": _answer((102, 100, 50, 60)),
                      "w3": _answer((101, 99, 50, 62))}),
        _object("1", {"w1": _answer(), "w2": _answer(), "w3": _answer((5, 5, 10, 10))}),
    ])
    first = result["0"]
    assert first["image_size"] == [{"width": 640, "height": 480, "depth": 3}]
    assert first["annotations"] == [{"class_id": 0, "left": 101.0, "top": 100.0, "width": 50.0, "height": 60.0}]
    info = first[CONSOLIDATION_KEY]
    assert info["workers_used"] == ["w1", "w2", "w3"] and 0.9 < info["confidence"] <= 1
    assert result["1"]["annotations"] == []  # one worker's stray box is outvoted


def test_given_the_same_payload_twice_then_the_same_output(bucket: str) -> None:
    _write_context()
    objects = [_object(str(i), {"w1": _answer((i, i, 30, 30)), "w2": _answer((i + 1, i, 30, 31))}) for i in range(5)]
    assert _run(objects) == _run(objects)


def test_given_malformed_answers_then_they_are_ignored_and_the_job_goes_on(bucket: str) -> None:
    _write_context()
    nan = ('{"heads": {"boundingBoxes": [{"label": "head", "left": NaN, "top": 1, "width": 2, "height": 2}], '
           '"inputImageProperties": {"width": 640, "height": 480}}}')
    script = json.dumps({"heads": {"boundingBoxes": [{"label": "<img src=x onerror=alert(1)>", "left": 1, "top": 1,
                                                      "width": 5, "height": 5}],
                                   "inputImageProperties": {"width": 640, "height": 480}}})
    result = _run([
        _object("0", {"good": _answer((10, 10, 40, 40)), "nan": nan, "script": script,
                      "offimage": _answer((630, 10, 40, 40)), "types": '{"heads": "yes"}', "unknown": json.dumps(
                          {"heads": {"boundingBoxes": [{"label": "car", "left": 1, "top": 1, "width": 4, "height": 4}],
                                     "inputImageProperties": {"width": 640, "height": 480}}})}),
    ])
    info = result["0"][CONSOLIDATION_KEY]
    assert info["workers_used"] == ["good"]
    assert set(info["workers_ignored"]) == {"nan", "script", "offimage", "types", "unknown"}
    assert "markup" in info["workers_ignored"]["script"]
    assert len(result["0"]["annotations"]) == 1


def test_given_no_usable_worker_then_the_object_comes_back_unlabeled(bucket: str) -> None:
    _write_context()
    result = _run([_object("0", {"w1": "{broken"}), _object("1", {})])
    assert result["0"][CONSOLIDATION_KEY]["unlabeled"] is True
    assert result["0"][CONSOLIDATION_KEY]["reason"].startswith("no usable worker answer: answer is not JSON")
    assert "annotations" not in result["0"]
    assert result["1"][CONSOLIDATION_KEY]["reason"] == "no worker answered"


def test_given_gold_items_then_a_worker_under_the_threshold_is_left_out_and_reported(bucket: str) -> None:
    """Given a gold object with a known head, a careless worker who misses it by far is excluded
    from every object of the request, and the report beside the job output says so."""
    gold = GoldItem(dataset_object_id="7", source_ref="s3://pool/gold.jpg", image_size=ImageSize(width=640, height=480),
                    boxes=[BoxAnnotation(left=200, top=200, width=60, height=60)])
    _write_context([gold])
    result = _run([
        _object("7", {"good1": _answer((201, 200, 60, 60)), "good2": _answer((200, 202, 60, 59)),
                      "careless": _answer((20, 20, 60, 60), seconds="3")}, source="s3://pool/gold.jpg"),
        _object("8", {"good1": _answer((50, 50, 40, 40)), "careless": _answer((400, 300, 40, 40))}),
    ])
    info = result["8"][CONSOLIDATION_KEY]
    assert info["workers_used"] == ["good1"] and "careless" in info["workers_ignored"]
    assert result["8"]["annotations"][0]["left"] == 50
    assert result["7"][CONSOLIDATION_KEY]["gold"] is True
    reports = list(storage.list_uris(FOLDER + "alp-worker-reports/"))
    assert len(reports) == 1
    report = WorkerReport.model_validate_json(storage.read_text(reports[0]))
    by_worker = {w.worker_id: w for w in report.workers}
    assert by_worker["careless"].excluded and by_worker["careless"].gold_agreement == 0.0
    assert by_worker["good1"].gold_agreement is not None and by_worker["good1"].gold_agreement > 0.9
    assert by_worker["careless"].seconds_per_item == 11.5 and by_worker["good1"].items == 2


def test_given_gold_from_an_earlier_request_then_the_exclusion_carries_over(bucket: str) -> None:
    gold = GoldItem(dataset_object_id="0", source_ref="s3://pool/gold.jpg",
                    boxes=[BoxAnnotation(left=200, top=200, width=60, height=60)])
    _write_context([gold])
    _run([_object("0", {"good": _answer((200, 200, 60, 60)), "careless": _answer()}, source="s3://pool/gold.jpg")])
    later = PAYLOAD.replace("iteration-1", "iteration-2")
    storage.write_text(later, json.dumps([_object("5", {"good": _answer((9, 9, 30, 30)), "careless": _answer()})]))
    out = handler(_event(later))
    info = out[0]["consolidatedAnnotation"]["content"][ATTR][CONSOLIDATION_KEY]
    assert info["workers_used"] == ["good"]


def test_given_answers_stored_on_s3_then_they_are_read(bucket: str) -> None:
    _write_context()
    storage.write_text(f"s3://{BUCKET}/answers/w1.json", _answer((10, 10, 20, 20)))
    objects = [{"datasetObjectId": "0", "dataObject": {"s3Uri": "s3://u/a.jpg"}, "annotations": [
        {"workerId": "w1", "annotationData": {"s3Uri": f"s3://{BUCKET}/answers/w1.json"}},
        {"workerId": "w2", "annotationData": {"s3Uri": f"s3://{BUCKET}/answers/missing.json"}},
    ]}]
    info = _run(objects)["0"][CONSOLIDATION_KEY]
    assert info["workers_used"] == ["w1"] and "unreadable" in info["workers_ignored"]["w2"]


def test_given_a_broken_payload_object_then_only_that_object_is_unlabeled(bucket: str) -> None:
    _write_context()
    result = _run([{"datasetObjectId": "3", "annotations": "nope"}, _object("4", {"w": _answer()})])
    assert result["3"][CONSOLIDATION_KEY]["unlabeled"] is True
    assert result["4"]["annotations"] == []


def test_given_no_job_context_then_the_kind_comes_from_the_label_attribute(bucket: str) -> None:
    kp = {"keypoints": {"keypoints": [], "inputImageProperties": {"width": 64, "height": 64}},
          **{f"visibility-{n}": "outside" for n in INCABIN17.names}}
    storage.write_text(PAYLOAD, json.dumps([_object("0", {"w": json.dumps(kp)})]))
    out = handler(_event(attr="keypoints"))
    label = out[0]["consolidatedAnnotation"]["content"]["keypoints"]
    assert len(label["persons"][0]["keypoints"]) == 17 and label["schema"] == "incabin17"


def test_given_an_event_without_payload_then_a_clear_error(bucket: str) -> None:
    event = _event()
    del event["payload"]
    with pytest.raises(PostAnnotationError, match="payload"):
        handler(event)
