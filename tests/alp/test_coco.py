"""COCO import/export, input-format detection and the ``alp evaluate`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_metrics import random_coco  # tests/ is on sys.path (pytest prepend import mode)

from alp.cli import main
from alp.coco import (
    coco_to_manifest,
    detect_and_load,
    evaluate_coco,
    evaluate_files,
    manifest_to_coco,
    manifest_to_coco_results,
)
from alp.manifest import dumps_lines
from alp.metrics import EvaluationError, evaluate_manifests
from alp.schema import INCABIN17
from alp.synth import render_scene, truth_line


def _truth(n: int = 4) -> list:
    return [truth_line(render_scene(31, i, size=(320, 240)).truth, f"s3://b/pool/images/s31-{i:06d}.jpg")
            for i in range(n)]


def test_format_detection() -> None:
    gt, dets = random_coco(0, n_images=3)
    assert detect_and_load(json.dumps(gt))[0] == "coco_gt"
    assert detect_and_load(json.dumps(dets))[0] == "coco_results"
    assert detect_and_load(dumps_lines(_truth(2)))[0] == "manifest"
    assert detect_and_load(dumps_lines(_truth(1)))[0] == "manifest"  # a one-line manifest is still a manifest


@pytest.mark.parametrize("text,match", [("", "empty"), ("   \n", "empty"), ("hello", "neither"),
                                        ("[1, 2]", "detections"), ("{\"a\": 1}", "neither 'source-ref'"),
                                        ("{\"source-ref\": \"a.jpg\"}\nnot json", "line 2: manifest line is not JSON")])
def test_bad_files_are_refused(text: str, match: str) -> None:
    with pytest.raises(EvaluationError, match=match):
        detect_and_load(text, "x.json")


def test_nan_in_coco_json_is_refused() -> None:
    gt, dets = random_coco(0, n_images=3)
    text = json.dumps(dets).replace(str(dets[0]["score"]), "NaN", 1)
    with pytest.raises(EvaluationError, match="non-finite"):
        detect_and_load(text)


def test_manifest_to_coco_round_trip_keeps_labeled_points_and_head_boxes() -> None:
    truth = _truth()
    gt = manifest_to_coco(truth, "incabin17")
    assert gt["categories"][0]["keypoints"] == list(INCABIN17.names)
    assert len(gt["images"]) == len(truth)
    back = coco_to_manifest(gt, schema="incabin17", image_prefix="s3://b/pool/images")
    for a, b in zip(truth, back, strict=True):
        assert a.source_ref == b.source_ref
        ka, kb = a.keypoints("keypoints")[0], b.keypoints("keypoints")[0]
        assert len(ka.persons) == len(kb.persons)
        for pa, pb in zip(ka.persons, kb.persons, strict=True):
            assert pa.bbox == pb.bbox
            for x, y in zip(pa.keypoints, pb.keypoints, strict=True):
                assert x.v == y.v
                if x.v > 0:
                    assert (x.x, x.y) == (y.x, y.y)
                else:
                    assert (y.x, y.y) == (0.0, 0.0)  # COCO's convention for points not in the image
        ba, bb = a.boxes("head-boxes")[0], b.boxes("head-boxes")[0]
        assert [h.xyxy for h in ba.annotations] == [h.xyxy for h in bb.annotations]
    # The two paths give the same keypoint AP on the same data.
    assert evaluate_manifests(truth, back)["kpt_oks_map50"] == 1.0


def test_coco_and_manifest_paths_agree_on_keypoints() -> None:
    truth = _truth()
    preds = []
    for line in truth:
        data = json.loads(line.to_json())
        for i, p in enumerate(data["keypoints"]["persons"]):
            p["score"] = 0.9 - 0.1 * i
            for kp in p["keypoints"]:
                kp["x"] += 3.0 * (i + 1)
        preds.append(type(line)(data))
    m = evaluate_manifests(truth, preds, "incabin17")
    gt = manifest_to_coco(truth, "incabin17")
    c = evaluate_coco(gt, manifest_to_coco_results(preds, gt, "incabin17"), "incabin17")
    assert m["kpt_oks_map50"] == pytest.approx(c["kpt_oks_map50"], abs=1e-9)
    assert m["kpt_oks_map"] == pytest.approx(c["kpt_oks_map"], abs=1e-9)
    assert c["visibility_accuracy"] == pytest.approx(m["visibility_accuracy"])


def test_coco_detection_for_unknown_image_is_an_error() -> None:
    gt, dets = random_coco(1, n_images=3)
    dets.append({**dets[0], "image_id": 99999})
    with pytest.raises(EvaluationError, match="not in the ground truth"):
        evaluate_coco(gt, dets, "coco17")


def test_coco_wrong_number_of_keypoints_is_an_error() -> None:
    gt, dets = random_coco(1, n_images=3)
    dets[0]["keypoints"] = dets[0]["keypoints"][:-3]
    with pytest.raises(EvaluationError, match="expected 51 numbers"):
        evaluate_coco(gt, dets, "coco17")


def test_coco_schema_mismatch_is_an_error() -> None:
    gt, dets = random_coco(1, n_images=3)
    gt["categories"][0]["keypoints"] = gt["categories"][0]["keypoints"][:5]
    with pytest.raises(EvaluationError, match="5 keypoints"):
        evaluate_coco(gt, dets, "coco17")


def test_coco_results_without_visibility_report_none() -> None:
    gt, dets = random_coco(2, n_images=5)
    for d in dets:
        d["keypoints"][2::3] = [0.37] * 17  # confidences, not visibility
    assert evaluate_coco(gt, dets, "coco17")["visibility_accuracy"] is None


def test_evaluate_cli_on_manifests_and_coco(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    truth = _truth(3)
    (tmp_path / "truth.jsonl").write_text(dumps_lines(truth))
    assert main(["evaluate", "--truth", str(tmp_path / "truth.jsonl"), "--pred", str(tmp_path / "truth.jsonl"),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["box_map50"] == 1.0 and result["kpt_oks_map50"] == 1.0 and result["visibility_accuracy"] == 1.0
    assert result["input"] == "manifest" and result["schema"] == "incabin17"

    gt, dets = random_coco(3, n_images=10)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    assert main(["evaluate", "--truth", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "dt.json"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["input"] == "coco" and result["schema"] == "coco17"
    assert result == evaluate_files(str(tmp_path / "gt.json"), str(tmp_path / "dt.json"))


def test_evaluate_cli_reports_bad_input_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "truth.jsonl").write_text(dumps_lines(_truth(1)))
    gt, dets = random_coco(3, n_images=2)
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    assert main(["evaluate", "--truth", str(tmp_path / "empty.jsonl"), "--pred", str(tmp_path / "truth.jsonl")]) == 2
    assert "is empty" in capsys.readouterr().err
    assert main(["evaluate", "--truth", str(tmp_path / "truth.jsonl"), "--pred", str(tmp_path / "dt.json")]) == 2
    assert "COCO detections list" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "--truth", "a", "--pred", "b", "--schema", "body25"])
