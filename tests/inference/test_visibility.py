"""Three-state visibility, person matching between the two pose models, and head assignment."""

from __future__ import annotations

import numpy as np
import pytest

from alp.schema import INCABIN17, V_OCCLUDED, V_OUTSIDE, V_VISIBLE
from inference.visibility import assign_heads, classify_visibility, match_persons


@pytest.mark.parametrize(
    ("main", "visible", "expected"),
    [
        (0.9, 0.9, V_VISIBLE),
        (0.9, 0.6, V_OCCLUDED),  # additional conf equal to its threshold is not "above"
        (0.9, 0.1, V_OCCLUDED),
        (0.6, 0.9, V_OUTSIDE),  # main conf equal to its threshold is not "above"
        (0.2, 0.95, V_OUTSIDE),  # the visible model alone never puts a point in view
        (0.0, 0.0, V_OUTSIDE),
    ],
)
def test_rule_table_with_default_thresholds(main, visible, expected):
    assert classify_visibility([main], [visible], 0.6, 0.6).tolist() == [expected]


def test_thresholds_come_from_the_caller():
    main, vis = [0.5, 0.5, 0.3], [0.5, 0.2, 0.9]
    assert classify_visibility(main, vis, 0.4, 0.4).tolist() == [V_VISIBLE, V_OCCLUDED, V_OUTSIDE]
    assert classify_visibility(main, vis, 0.6, 0.6).tolist() == [V_OUTSIDE] * 3


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        classify_visibility([0.1, 0.2], [0.1], 0.6, 0.6)


def test_match_persons_one_to_one_by_best_iou():
    main = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [100, 100, 110, 110]], dtype=float)
    vis = np.array([[21, 0, 31, 10], [0, 0, 10, 11], [50, 50, 60, 60]], dtype=float)
    assert match_persons(main, vis, 0.5) == [1, 0, None]


def test_match_persons_respects_min_iou_and_empty_inputs():
    main = np.array([[0, 0, 10, 10]], dtype=float)
    assert match_persons(main, np.array([[5, 0, 15, 10]], dtype=float), 0.5) == [None]  # IoU 1/3
    assert match_persons(main, np.zeros((0, 4)), 0.5) == [None]
    assert match_persons(np.zeros((0, 4)), main, 0.5) == []


def _person(face_xy, conf=0.9):
    kpts = np.zeros((INCABIN17.num_keypoints, 3))
    for k in (INCABIN17.index["left_eye"], INCABIN17.index["right_eye"], INCABIN17.index["nose"]):
        kpts[k] = (*face_xy, conf)
    return kpts


def test_heads_tied_to_the_person_whose_face_they_hold():
    # Two side-by-side passengers with overlapping boxes; heads listed in the "wrong" order.
    persons = np.array([[0, 0, 120, 300], [80, 0, 200, 300]], dtype=float)
    kpts = np.stack([_person((50, 40)), _person((150, 40))])
    heads = np.array([[130, 20, 170, 60], [30, 20, 70, 60]], dtype=float)
    assert assign_heads(persons, kpts, heads, INCABIN17.names, 0.6) == [1, 0]


def test_head_outside_every_person_box_stays_unassigned():
    persons = np.array([[0, 0, 100, 200]], dtype=float)
    heads = np.array([[300, 300, 340, 340]], dtype=float)
    assert assign_heads(persons, _person((50, 30))[None], heads, INCABIN17.names, 0.6) == [None]


def test_without_confident_face_points_the_top_of_the_box_decides():
    persons = np.array([[0, 0, 100, 200]], dtype=float)
    kpts = _person((50, 30), conf=0.1)[None]
    heads = np.array([[30, 150, 70, 190], [30, 5, 70, 45]], dtype=float)  # one near the feet, one on top
    assert assign_heads(persons, kpts, heads, INCABIN17.names, 0.6) == [1]
