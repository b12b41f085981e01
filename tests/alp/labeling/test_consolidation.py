"""Consolidation math: box clustering, keypoint medians and votes, agreement, worker answers (stdlib only)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paths import REPO_ROOT  # noqa: E402

from alp.geometry import Box, box_agreement, box_iou, iou_matrix, oks
from alp.labeling.answers import (
    BoxAnswer,
    KeypointAnswer,
    WorkerAnswerError,
    parse_box_answer,
    parse_keypoint_answer,
)
from alp.labeling.consolidation import consolidate_boxes, consolidate_keypoints, majority_visibility
from alp.schema import INCABIN17
from alp.statistics import wilson_interval

NAMES = list(INCABIN17.names)
SIGMAS = list(INCABIN17.sigmas)


def _box_answer(worker: str, *boxes: tuple[float, float, float, float]) -> BoxAnswer:
    return BoxAnswer(worker, (640, 480), tuple(Box(*b) for b in boxes))


def test_box_iou_of_ltwh_boxes_matches_the_numpy_matrix() -> None:
    a, b = Box(10, 10, 50, 40), Box(30, 20, 50, 50)
    assert box_iou(a.xyxy, b.xyxy) == pytest.approx(iou_matrix(np.array([(10, 10, 60, 50)]),
                                                               np.array([(30, 20, 80, 70)]))[0, 0])
    assert box_iou(a.xyxy, Box(200, 200, 5, 5).xyxy) == 0.0


def _cocoeval_oks(gt: list[tuple[float, float, int]], pred: list[tuple[float, float]], area: float,
                  sigmas: list[float]) -> float:
    """pycocotools' COCOeval.computeOks for one ground truth and one prediction, in numpy."""
    g, p = np.array([t[:2] for t in gt], dtype=np.float64), np.array(pred, dtype=np.float64)
    labeled = np.array([t[2] for t in gt]) > 0
    if not labeled.any():
        return 0.0
    e = np.sum((g - p) ** 2, axis=1) / (2.0 * np.array(sigmas)) ** 2 / (area + np.spacing(1)) / 2.0
    return float(np.mean(np.exp(-e[labeled])))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 100), st.integers(0, 2)), min_size=17, max_size=17),
       st.lists(st.tuples(st.floats(0, 100), st.floats(0, 100)), min_size=17, max_size=17),
       st.floats(100, 10000))
def test_oks_equals_the_numpy_cocoeval_formula(gt: list[tuple[float, float, int]],
                                               pred: list[tuple[float, float]], area: float) -> None:
    expected = _cocoeval_oks(gt, pred, area, SIGMAS)
    assert oks([g[:2] for g in gt], [g[2] for g in gt], pred, area, SIGMAS) == pytest.approx(expected, abs=1e-9)


def test_three_workers_boxes_cluster_by_iou_and_take_the_median() -> None:
    """Given two heads drawn by three workers with small differences and one stray box,
    when consolidated, then two boxes remain at the per-edge medians and the stray one is dropped."""
    answers = [
        _box_answer("w1", (100, 100, 50, 60), (300, 100, 50, 60)),
        _box_answer("w2", (102, 98, 50, 60), (304, 100, 48, 60), (500, 400, 20, 20)),
        _box_answer("w3", (98, 101, 52, 62), (301, 99, 50, 61)),
    ]
    result = consolidate_boxes(answers)
    assert [(b.left, b.top) for b in result.boxes] == [(100, 100), (301, 100)]
    assert result.boxes[0].width == 50 and result.boxes[0].height == 60
    assert len(result.box_confidence) == 2 and all(0.8 < c <= 1 for c in result.box_confidence)
    assert result.confidence < 1  # the stray box lowers agreement


def test_a_head_drawn_by_only_one_of_three_workers_is_dropped_but_two_of_three_kept() -> None:
    one = consolidate_boxes([_box_answer("a", (10, 10, 40, 40)), _box_answer("b"), _box_answer("c")])
    two = consolidate_boxes([_box_answer("a", (10, 10, 40, 40)), _box_answer("b", (11, 10, 40, 40)),
                             _box_answer("c")])
    assert one.boxes == () and len(two.boxes) == 1


def test_consolidation_does_not_depend_on_answer_order() -> None:
    answers = [_box_answer("w1", (100, 100, 50, 60)), _box_answer("w2", (104, 100, 50, 60)),
               _box_answer("w3", (99, 103, 50, 60))]
    assert consolidate_boxes(answers) == consolidate_boxes(list(reversed(answers)))


def test_a_single_worker_is_taken_as_is_with_full_confidence() -> None:
    result = consolidate_boxes([_box_answer("w1", (1, 2, 30, 40))])
    assert result.boxes == (Box(1, 2, 30, 40),) and result.confidence == 1.0


def test_keypoints_median_coordinates_and_majority_visibility() -> None:
    def answer(worker: str, dx: float, v_first: int) -> KeypointAnswer:
        points = [(100.0 + dx, 50.0, v_first)] + [(200.0 + dx, 80.0 + i, 2) for i in range(16)]
        return KeypointAnswer(worker, (640, 480), tuple(points))

    result = consolidate_keypoints([answer("a", 0, 2), answer("b", 2, 1), answer("c", 50, 2)], SIGMAS)
    assert result.points[0] == (102.0, 50.0, 2)  # median x of 100, 102, 150; visible wins 2:1
    assert result.points[1] == (202.0, 80.0, 2)
    assert 0 < result.confidence < 1


def test_points_the_majority_calls_outside_have_no_coordinates() -> None:
    outside = tuple((0.0, 0.0, 0) for _ in NAMES)
    placed = tuple((10.0, 10.0, 2) for _ in NAMES)
    result = consolidate_keypoints([KeypointAnswer("a", (64, 64), outside), KeypointAnswer("b", (64, 64), outside),
                                    KeypointAnswer("c", (64, 64), placed)], SIGMAS)
    assert all(p == (0.0, 0.0, 0) for p in result.points)


@pytest.mark.parametrize(("votes", "expected"), [([2, 2, 1], 2), ([0, 1, 1], 1), ([2, 0], 0), ([1, 2], 1),
                                                 ([0, 1, 2], 1), ([2], 2)])
def test_majority_visibility_breaks_ties_deterministically(votes: list[int], expected: int) -> None:
    assert majority_visibility(votes) == expected


def test_box_agreement_is_one_for_identical_and_zero_for_disjoint_sets() -> None:
    boxes = [Box(0, 0, 10, 10), Box(20, 20, 10, 10)]
    assert box_agreement(boxes, boxes) == 1.0
    assert box_agreement(boxes, [Box(100, 100, 5, 5)]) == 0.0
    assert box_agreement([], []) == 1.0
    assert 0 < box_agreement(boxes, boxes[:1]) < 1


def test_wilson_interval_brackets_the_share() -> None:
    lo, hi = wilson_interval(45, 50)
    assert lo < 0.9 < hi and 0.78 < lo < 0.8
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)


def _head_form(boxes: list[dict[str, object]], w: object = 640, h: object = 480) -> str:
    return json.dumps({"heads": {"boundingBoxes": boxes, "inputImageProperties": {"width": w, "height": h}},
                       "elapsed-seconds": "12.5"})


def test_a_well_formed_head_answer_parses_with_its_time() -> None:
    answer = parse_box_answer("w", _head_form([{"label": "head", "left": 1, "top": 2, "width": 3, "height": 4}]))
    assert answer.boxes == (Box(1, 2, 3, 4),) and answer.elapsed_seconds == 12.5


@pytest.mark.parametrize(("content", "why"), [
    ("{not json", "not JSON"),
    ('["a"]', "not an object"),
    ('{"heads": {"boundingBoxes": [{"label": "head", "left": NaN, "top": 1, "width": 2, "height": 2}], '
     '"inputImageProperties": {"width": 9, "height": 9}}}', "NaN"),
    (_head_form([{"label": "head", "left": "1", "top": 1, "width": 2, "height": 2}]), "not a number"),
    (_head_form([{"label": "<script>alert(1)</script>", "left": 1, "top": 1, "width": 2, "height": 2}]), "markup"),
    (_head_form([{"label": "face", "left": 1, "top": 1, "width": 2, "height": 2}]), "unknown label"),
    (_head_form([{"label": "head", "left": 600, "top": 1, "width": 200, "height": 2}]), "outside"),
    (_head_form([{"label": "head", "left": 1, "top": 1, "width": 0, "height": 2}]), "no area"),
    (_head_form([], w=True), "not a number"),
    (json.dumps({"other": {}}), "no 'heads'"),
])
def test_malformed_head_answers_are_refused_with_a_reason(content: str, why: str) -> None:
    with pytest.raises(WorkerAnswerError, match=why):
        parse_box_answer("w", content)


def _kp_form(points: list[dict[str, object]], vis: dict[str, object]) -> dict[str, object]:
    form: dict[str, object] = {"keypoints": {"keypoints": points, "inputImageProperties": {"width": 100, "height": 100}}}
    form.update({f"visibility-{n}": v for n, v in vis.items()})
    return form


def test_keypoint_answer_reads_visibility_in_both_submitted_shapes() -> None:
    vis: dict[str, object] = {n: "outside" for n in NAMES}
    vis["left_eye"] = "visible"
    vis["right_eye"] = {"visible": False, "occluded": True, "outside": False}
    vis["nose"] = "occluded"  # occluded but never placed: counts as outside
    answer = parse_keypoint_answer("w", _kp_form([{"label": "left_eye", "x": 10, "y": 11},
                                                  {"label": "right_eye", "x": 20, "y": 21}], vis), NAMES)
    assert answer.points[0] == (10.0, 11.0, 2) and answer.points[1] == (20.0, 21.0, 1)
    assert answer.points[NAMES.index("nose")] == (0.0, 0.0, 0)


@pytest.mark.parametrize(("points", "vis_change", "why"), [
    ([{"label": "tail", "x": 1, "y": 1}], {}, "unknown label"),
    ([{"label": "left_eye", "x": 1, "y": 1}, {"label": "left_eye", "x": 2, "y": 2}], {}, "placed twice"),
    ([{"label": "left_eye", "x": 500, "y": 1}], {}, "outside the 100x100"),
    ([{"label": "left_eye", "x": math.inf, "y": 1}], {}, "finite"),
    ([], {"left_eye": "sometimes"}, "visibility of left_eye"),
    ([], {"left_eye": None}, "missing"),
    ([], {"left_eye": "<b>visible</b>"}, "markup"),
])
def test_malformed_keypoint_answers_are_refused(points: list[dict[str, object]], vis_change: dict[str, object],
                                                why: str) -> None:
    vis: dict[str, object] = {n: "outside" for n in NAMES}
    vis.update(vis_change)
    with pytest.raises(WorkerAnswerError, match=why):
        parse_keypoint_answer("w", _kp_form(points, vis), NAMES)


def test_consolidation_modules_import_without_numpy() -> None:
    """The Lambda asset ships alp/ and pydantic only: the handlers' imports must not pull numpy in."""
    code = ("import sys; sys.modules['numpy'] = None\n"
            "import lambdas.gt_pre_annotation, lambdas.gt_post_annotation\n"
            "assert 'numpy' not in [m for m, v in sys.modules.items() if v is not None]\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(REPO_ROOT))
