"""The evaluation ruler: agreement with pycocotools, manifest matching, visibility, bad input."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from typing import Any

import numpy as np
import pytest

from alp.coco import evaluate_coco, manifest_to_coco, manifest_to_coco_results
from alp.manifest import ManifestLine
from alp.metrics import EvaluationError, evaluate_manifests
from alp.schema import COCO17, INCABIN17
from alp.synth import render_scene, truth_line

K = 17


def random_coco(seed: int, n_images: int = 80) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Random ground-truth persons and perturbed detections: misses, false positives, jitter, score noise,
    a few crowds and persons without labeled points."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(1, n_images + 1):
        image_id = i * 7  # ids need not be contiguous
        images.append({"id": image_id, "file_name": f"{i}.jpg", "width": 640, "height": 480})
        for _ in range(int(rng.integers(0, 7))):
            w, h = rng.uniform(15, 220), rng.uniform(30, 320)
            x, y = rng.uniform(0, 420), rng.uniform(0, 160)
            kx, ky = rng.uniform(x, x + w, K), rng.uniform(y, y + h, K)
            v = rng.choice([0, 1, 2], K, p=[0.2, 0.3, 0.5])
            if rng.random() < 0.05:
                v[:] = 0
            flat = np.stack([np.where(v > 0, kx, 0), np.where(v > 0, ky, 0), v], 1).ravel().tolist()
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1, "bbox": [x, y, w, h],
                         "area": w * h * float(rng.uniform(0.4, 1.0)), "iscrowd": int(rng.random() < 0.03),
                         "keypoints": flat, "num_keypoints": int((v > 0).sum())})
            if rng.random() < 0.8:  # detected, with jitter; else missed
                jit = rng.normal(0, rng.uniform(0.5, 25), (K, 2))
                bj = rng.normal(0, rng.uniform(0.5, 20), 4)
                dets.append({"image_id": image_id, "category_id": 1,
                             "bbox": [x + bj[0], y + bj[1], max(1.0, w + bj[2]), max(1.0, h + bj[3])],
                             "keypoints": np.stack([kx + jit[:, 0], ky + jit[:, 1], np.ones(K)], 1).ravel().tolist(),
                             "score": float(np.clip(0.55 + rng.normal(0, 0.25), 0.01, 1.0))})
        for _ in range(int(rng.poisson(0.8))):  # false positives
            w, h = rng.uniform(15, 220), rng.uniform(30, 320)
            x, y = rng.uniform(0, 420), rng.uniform(0, 160)
            dets.append({"image_id": image_id, "category_id": 1, "bbox": [x, y, w, h],
                         "keypoints": np.stack([rng.uniform(x, x + w, K), rng.uniform(y, y + h, K), np.ones(K)],
                                               1).ravel().tolist(),
                         "score": float(rng.uniform(0.0, 0.9))})
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": 1, "name": "person", "keypoints": list(COCO17.names), "skeleton": []}]}
    return gt, dets


def pycocotools_stats(gt: dict[str, Any], dets: list[dict[str, Any]], iou_type: str) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        if iou_type == "keypoints":
            ev.params.kpt_oks_sigmas = np.array(COCO17.sigmas)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_pycocotools_on_random_persons(seed: int) -> None:
    gt, dets = random_coco(seed)
    assert len(gt["annotations"]) >= 200
    ours = evaluate_coco(gt, dets, "coco17")
    box = pycocotools_stats(gt, dets, "bbox")
    kpt = pycocotools_stats(gt, dets, "keypoints")
    assert 0.05 < ours["kpt_oks_map50"] < 0.95  # a real spread, not a degenerate case
    assert abs(ours["box_map50"] - box[1]) < 1e-3
    assert abs(ours["box_map"] - box[0]) < 1e-3
    assert abs(ours["kpt_oks_map50"] - kpt[1]) < 1e-3
    assert abs(ours["kpt_oks_map"] - kpt[0]) < 1e-3


def test_manifest_path_agrees_with_pycocotools_through_export() -> None:
    truth = [truth_line(render_scene(21, i, size=(320, 240)).truth, f"s3://b/pool/s21-{i:06d}.jpg") for i in range(8)]
    preds = [_perturb(line, np.random.default_rng(i)) for i, line in enumerate(truth)]
    ours = evaluate_manifests(truth, preds, "incabin17")
    gt = manifest_to_coco(truth, "incabin17")
    dets = manifest_to_coco_results(preds, gt, "incabin17")

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), "keypoints")
        ev.params.kpt_oks_sigmas = np.array(INCABIN17.sigmas)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert 0.0 < ours["kpt_oks_map50"] < 1.0
    assert abs(ours["kpt_oks_map50"] - ev.stats[1]) < 1e-3
    assert abs(ours["kpt_oks_map"] - ev.stats[0]) < 1e-3


def _perturb(line: ManifestLine, rng: np.random.Generator) -> ManifestLine:
    data = json.loads(line.to_json())
    persons = data["keypoints"]["persons"]
    for p in persons:
        p["score"] = float(rng.uniform(0.2, 1.0))
        for kp in p["keypoints"]:
            kp["x"] += float(rng.normal(0, 4))
            kp["y"] += float(rng.normal(0, 4))
            if rng.random() < 0.2:
                kp["v"] = int(rng.integers(0, 3))
    if len(persons) > 1 and rng.random() < 0.5:  # a miss
        persons.pop()
    data["head-boxes-metadata"]["objects"] = [{"confidence": float(rng.uniform(0.3, 1))}
                                              for _ in data["head-boxes"]["annotations"]]
    for a in data["head-boxes"]["annotations"]:
        a["left"] += float(rng.normal(0, 3))
    return ManifestLine(data)


# --- manifests: matching and visibility ---------------------------------------------------------------


def _line(ref: str, persons: list[dict[str, Any]], heads: list[list[float]], confidences: list[float] | None = None,
          size: tuple[int, int] = (200, 100)) -> dict[str, Any]:
    image_size = [{"width": size[0], "height": size[1], "depth": 3}]
    line = {"source-ref": ref,
            "head-boxes": {"image_size": image_size,
                           "annotations": [{"class_id": 0, "left": h[0], "top": h[1], "width": h[2], "height": h[3]}
                                           for h in heads]},
            "head-boxes-metadata": {"type": "groundtruth/object-detection", "class-map": {"0": "head"},
                                    "objects": [{"confidence": c} for c in (confidences or [1.0] * len(heads))]},
            "keypoints": {"image_size": image_size, "schema": "incabin17", "persons": persons},
            "keypoints-metadata": {"type": "groundtruth/custom"}}
    return line


def _person(x0: float, v: list[int] | int = 2, head_index: int | None = 0, score: float | None = None,
            dx: float = 0.0) -> dict[str, Any]:
    vs = v if isinstance(v, list) else [v] * K
    kps = [{"name": n, "x": x0 + 2 * i + dx, "y": 20.0 + 3 * i, "v": vs[i]} for i, n in enumerate(INCABIN17.names)]
    out: dict[str, Any] = {"keypoints": kps, "bbox": [x0 - 5, 10.0, 50.0, 70.0], "head_box_index": head_index}
    if score is not None:
        out["score"] = score
    return out


def test_identical_predictions_score_one() -> None:
    truth = [_line("s3://b/a.jpg", [_person(10), _person(120, head_index=1)], [[5, 5, 20, 20], [115, 5, 20, 20]])]
    result = evaluate_manifests(truth, truth)
    assert result["box_map50"] == 1.0 and result["kpt_oks_map50"] == 1.0 and result["kpt_oks_map"] == 1.0
    assert result["visibility_accuracy"] == 1.0
    assert result["images"] == 1 and result["persons"] == 2 and result["predictions"] == 2
    assert result["unmatched"] == 0


def test_visibility_confusion_counts_each_point_of_matched_persons() -> None:
    truth_v = [2] * 10 + [1] * 5 + [0] * 2
    pred_v = [2] * 8 + [1] * 2 + [1] * 3 + [2] * 2 + [0, 1]
    truth = [_line("a.jpg", [_person(10, truth_v)], [[5, 5, 20, 20]])]
    pred = [_line("a.jpg", [_person(10, pred_v, score=0.9)], [[5, 5, 20, 20]], [0.9])]
    r = evaluate_manifests(truth, pred)
    vis = r["visibility"]
    assert vis["classes"] == ["visible", "occluded", "outside"]
    assert vis["confusion"] == [[8, 2, 0], [2, 3, 0], [0, 1, 1]]
    assert r["visibility_accuracy"] == pytest.approx(12 / 17, abs=1e-6)
    assert vis["per_class"]["occluded"]["precision"] == pytest.approx(3 / 6)
    assert vis["per_class"]["outside"]["recall"] == pytest.approx(1 / 2)


def test_person_far_off_in_oks_is_matched_by_head_box_for_visibility() -> None:
    truth = [_line("a.jpg", [_person(10)], [[5, 5, 20, 20]])]
    pred = [_line("a.jpg", [_person(10, dx=60.0, score=0.8)], [[5, 5, 20, 20]], [0.8])]
    r = evaluate_manifests(truth, pred)
    assert r["kpt_oks_map50"] == 0.0
    assert r["matched"] == {"oks": 0, "head_box": 1}
    assert r["unmatched"] == 0 and r["visibility_accuracy"] == 1.0


def test_missing_prediction_counts_as_unmatched_and_lowers_ap() -> None:
    truth = [_line("a.jpg", [_person(10)], [[5, 5, 20, 20]]), _line("b.jpg", [_person(10)], [[5, 5, 20, 20]])]
    r = evaluate_manifests(truth, truth[:1])
    assert r["unmatched"] == 1 and r["images"] == 2
    assert r["kpt_oks_map50"] == pytest.approx(0.50495, abs=1e-4)  # recall 0.5: 51 of 101 points


def test_predictions_are_matched_by_basename_when_prefixes_differ() -> None:
    truth = [_line("s3://truth/pool/images/a.jpg", [_person(10)], [[5, 5, 20, 20]])]
    pred = [_line("s3://preds/run-1/a.jpg", [_person(10)], [[5, 5, 20, 20]])]
    assert evaluate_manifests(truth, pred)["kpt_oks_map50"] == 1.0


def test_person_score_falls_back_to_head_box_confidence() -> None:
    truth = [_line("a.jpg", [_person(10), _person(120, head_index=1)], [[5, 5, 20, 20], [115, 5, 20, 20]])]
    # The wrong person scores higher through its head box: AP drops below 1.
    pred = [_line("a.jpg", [_person(10), _person(120, head_index=1, dx=40)], [[5, 5, 20, 20], [115, 5, 20, 20]],
                  [0.2, 0.9])]
    assert evaluate_manifests(truth, pred)["kpt_oks_map50"] < 1.0


# --- bad input ----------------------------------------------------------------------------------------


def test_prediction_for_an_unknown_image_is_an_error() -> None:
    truth = [_line("a.jpg", [_person(10)], [[5, 5, 20, 20]])]
    with pytest.raises(EvaluationError, match="not in the truth"):
        evaluate_manifests(truth, [_line("zzz.jpg", [_person(10)], [[5, 5, 20, 20]])])


def test_two_predictions_for_one_image_is_an_error() -> None:
    truth = [_line("a.jpg", [_person(10)], [[5, 5, 20, 20]])]
    with pytest.raises(EvaluationError, match="second prediction"):
        evaluate_manifests(truth, truth + truth)


def test_ambiguous_basename_is_an_error() -> None:
    truth = [_line("x/a.jpg", [_person(10)], [[5, 5, 20, 20]]), _line("y/a.jpg", [_person(10)], [[5, 5, 20, 20]])]
    with pytest.raises(EvaluationError, match="several truth images"):
        evaluate_manifests(truth, [_line("z/a.jpg", [_person(10)], [[5, 5, 20, 20]])])


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_coordinates_are_an_error(bad: float) -> None:
    truth = [_line("a.jpg", [_person(10)], [[5, 5, 20, 20]])]
    pred = _line("a.jpg", [_person(10)], [[5, 5, 20, 20]])
    pred["keypoints"]["persons"][0]["keypoints"][3]["x"] = bad
    with pytest.raises(EvaluationError, match="finite"):
        evaluate_manifests(truth, [pred])


def test_non_finite_box_in_a_json_line_is_an_error() -> None:
    truth = [_line("a.jpg", [_person(10)], [[5, 5, 20, 20]])]
    text = json.dumps(_line("a.jpg", [_person(10)], [[5, 5, 20, 20]])).replace('"left": 5', '"left": NaN', 1)
    with pytest.raises(EvaluationError, match="finite"):
        evaluate_manifests(truth, [text])


def test_wrong_number_of_keypoints_is_an_error() -> None:
    truth = [_line("a.jpg", [_person(10)], [[5, 5, 20, 20]])]
    pred = _line("a.jpg", [_person(10)], [[5, 5, 20, 20]])
    pred["keypoints"]["persons"][0]["keypoints"].pop()
    with pytest.raises(EvaluationError, match="expected 17 keypoints"):
        evaluate_manifests(truth, [pred])


def test_empty_truth_is_an_error() -> None:
    with pytest.raises(EvaluationError, match="empty"):
        evaluate_manifests([], [])


def test_unknown_schema_is_an_error() -> None:
    truth = [_line("a.jpg", [_person(10)], [[5, 5, 20, 20]])]
    with pytest.raises(ValueError, match="unknown keypoint schema"):
        evaluate_manifests(truth, truth, schema="body25")


def test_confidences_misaligned_with_boxes_is_an_error() -> None:
    truth = [_line("a.jpg", [_person(10)], [[5, 5, 20, 20]])]
    pred = _line("a.jpg", [_person(10)], [[5, 5, 20, 20]], [0.5])
    pred["head-boxes-metadata"]["objects"].append({"confidence": 0.4})
    with pytest.raises(EvaluationError, match="confidences"):
        evaluate_manifests(truth, [pred])


def test_no_predictions_at_all_gives_zero_not_an_error() -> None:
    truth = [_line("a.jpg", [_person(10)], [[5, 5, 20, 20]])]
    r = evaluate_manifests(truth, [])
    assert r["box_map50"] == 0.0 and r["kpt_oks_map50"] == 0.0
    assert r["visibility_accuracy"] is None and r["unmatched"] == 1
