"""The human-effort model: seconds per action, proposals against labeling by hand."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from paths import REPO_ROOT

from alp.effort import Effort, by_hand_seconds, head_task_seconds, person_scale, person_task_seconds
from alp.geometry import Box, match_boxes
from alp.manifest import BoxAnnotation, Keypoint, PersonKeypoints, ScoredBox
from alp.settings import EffortSettings, Settings, SettingsError, parse_settings

E = EffortSettings()
K = 17


def head(left: float, top: float, width: float = 40.0, height: float = 40.0) -> BoxAnnotation:
    return BoxAnnotation(left=left, top=top, width=width, height=height)


def proposal(box: BoxAnnotation, dx: float = 0.0, dy: float = 0.0) -> ScoredBox:
    return ScoredBox(left=box.left + dx, top=box.top + dy, width=box.width, height=box.height, score=0.9)


def person(vs: list[int] | None = None, bbox: list[float] | None = None) -> PersonKeypoints:
    vs = vs if vs is not None else [2] * K
    return PersonKeypoints(
        keypoints=[Keypoint(name=f"k{i}", x=100.0 + 10 * i, y=50.0 + 20 * i, v=v) for i, v in enumerate(vs)],
        bbox=bbox if bbox is not None else [80.0, 40.0, 200.0, 400.0])


def edited(p: PersonKeypoints, i: int, **change: float) -> PersonKeypoints:
    points = list(p.keypoints)
    points[i] = points[i].model_copy(update=change)
    return p.model_copy(update={"keypoints": points})


# head boxes ------------------------------------------------------------------------------------------------------


def test_proposals_identical_to_the_final_boxes_cost_only_the_look_and_the_confirmations():
    final = [head(0, 0), head(100, 0), head(200, 50)]
    seconds = head_task_seconds([proposal(b) for b in final], final, E)
    assert seconds == pytest.approx(E.head_task_overhead_seconds + 3 * E.head_box_confirm_seconds)


def test_no_proposals_cost_exactly_drawing_every_box():
    final = [head(0, 0), head(100, 0)]
    assert head_task_seconds([], final, E) == pytest.approx(E.head_task_overhead_seconds + 2 * E.head_box_draw_seconds)
    assert head_task_seconds([], [], E) == pytest.approx(E.head_task_overhead_seconds)


def test_a_roughly_right_proposal_is_adjusted_and_a_wrong_one_deleted_and_the_box_drawn():
    box = head(0, 0)
    roughly = proposal(box, dx=4.0)  # IoU 36*40 / (44*40) = 0.82: between 0.5 and 0.9
    assert 0.5 <= match_boxes([box], [Box(4.0, 0.0, 40.0, 40.0)], 0.5)[0][2] < 0.9
    assert head_task_seconds([roughly], [box], E) == pytest.approx(
        E.head_task_overhead_seconds + E.head_box_adjust_seconds)
    wrong = proposal(box, dx=30.0)  # IoU 10/70
    assert head_task_seconds([wrong], [box], E) == pytest.approx(
        E.head_task_overhead_seconds + E.head_box_draw_seconds + E.head_box_delete_seconds)


def test_a_proposal_where_there_is_no_head_costs_one_delete():
    box = head(0, 0)
    seconds = head_task_seconds([proposal(box), proposal(head(300, 300))], [box], E)
    assert seconds == pytest.approx(
        E.head_task_overhead_seconds + E.head_box_confirm_seconds + E.head_box_delete_seconds)


def test_a_proposal_is_thrown_away_when_adjusting_it_would_take_longer_than_drawing_anew():
    slow = EffortSettings(head_box_adjust_seconds=60.0)
    box = head(0, 0)
    assert head_task_seconds([proposal(box, dx=4.0)], [box], slow) == pytest.approx(
        slow.head_task_overhead_seconds + slow.head_box_delete_seconds + slow.head_box_draw_seconds)


def test_the_confirm_iou_is_a_setting():
    box, near = head(0, 0), proposal(head(0, 0), dx=4.0)
    strict, loose = EffortSettings(head_confirm_iou=0.95), EffortSettings(head_confirm_iou=0.8)
    assert head_task_seconds([near], [box], strict) - head_task_seconds([near], [box], loose) == pytest.approx(
        E.head_box_adjust_seconds - E.head_box_confirm_seconds)


# keypoints -------------------------------------------------------------------------------------------------------


def test_a_proposal_identical_to_the_final_person_costs_only_the_look_and_the_confirmations():
    final = person([2] * 10 + [1] * 4 + [0] * 3)
    assert person_task_seconds(final, final, E) == pytest.approx(
        E.person_task_overhead_seconds + 14 * E.keypoint_confirm_seconds)


def test_no_proposal_costs_placing_every_point_and_marking_the_occluded_ones():
    final = person([2] * 10 + [1] * 4 + [0] * 3)
    expected = E.person_task_overhead_seconds + 14 * E.keypoint_place_seconds + 4 * E.keypoint_visibility_seconds
    assert person_task_seconds(None, final, E) == pytest.approx(expected)
    nothing_placed = person([0] * K)
    assert person_task_seconds(nothing_placed, final, E) == pytest.approx(expected)


def test_moving_one_point_costs_one_adjust():
    final = person()
    moved = edited(final, 5, x=final.keypoints[5].x + 0.5 * person_scale(final))
    assert person_task_seconds(moved, final, E) - person_task_seconds(final, final, E) == pytest.approx(
        E.keypoint_adjust_seconds - E.keypoint_confirm_seconds)


def test_a_point_within_the_tolerance_is_confirmed():
    final = person()
    tolerance = E.keypoint_confirm_tolerance * person_scale(final)
    near = edited(final, 5, x=final.keypoints[5].x + 0.9 * tolerance)
    far = edited(final, 5, x=final.keypoints[5].x + 1.1 * tolerance)
    assert person_task_seconds(near, final, E) == pytest.approx(person_task_seconds(final, final, E))
    assert person_task_seconds(far, final, E) > person_task_seconds(near, final, E)


def test_a_wrong_visibility_costs_one_switch():
    final = person()
    occluded = edited(final, 3, v=1)
    assert person_task_seconds(occluded, final, E) - person_task_seconds(final, final, E) == pytest.approx(
        E.keypoint_visibility_seconds)
    assert person_task_seconds(final, occluded, E) - person_task_seconds(occluded, occluded, E) == pytest.approx(
        E.keypoint_visibility_seconds)


def test_a_proposed_point_where_the_person_is_not_labeled_is_cleared():
    proposed = person()
    final = edited(proposed, 0, v=0)
    assert person_task_seconds(proposed, final, E) == pytest.approx(
        E.person_task_overhead_seconds + 16 * E.keypoint_confirm_seconds + E.keypoint_delete_seconds)


def test_a_point_missing_from_the_proposal_is_placed_as_by_hand():
    final = edited(person(), 2, v=1)
    proposed = edited(final, 2, v=0)
    assert person_task_seconds(proposed, final, E) == pytest.approx(
        E.person_task_overhead_seconds + 16 * E.keypoint_confirm_seconds + E.keypoint_place_seconds
        + E.keypoint_visibility_seconds)


def test_the_person_scale_is_its_box_else_its_points_and_at_least_32_pixels():
    assert person_scale(person(bbox=[0.0, 0.0, 100.0, 400.0])) == pytest.approx(200.0)
    assert person_scale(person(bbox=[0.0, 0.0, 1.0, 1.0])) == pytest.approx(32.0)
    unboxed = person().model_copy(update={"bbox": None})
    points = unboxed.keypoints
    extent = (points[-1].x - points[0].x) * (points[-1].y - points[0].y)
    assert person_scale(unboxed) == pytest.approx(math.sqrt(extent))


def test_a_proposal_of_another_schema_is_refused():
    with pytest.raises(ValueError, match="not the same schema"):
        person_task_seconds(person([2] * 5), person(), E)


# the image and the batch -----------------------------------------------------------------------------------------


def test_by_hand_is_one_head_task_and_one_task_per_person():
    boxes, persons = [head(0, 0), head(100, 0)], [person(), person([1] * K)]
    assert by_hand_seconds(boxes, persons, E) == pytest.approx(
        head_task_seconds([], boxes, E) + sum(person_task_seconds(None, p, E) for p in persons))
    assert by_hand_seconds([], [], E) == pytest.approx(E.head_task_overhead_seconds)


def test_efforts_add_up_and_give_the_ratio():
    batch = [Effort(10.0, 40.0), Effort(5.0, 20.0), Effort(0.0, 0.0)]
    total = sum(batch, Effort())
    assert total == Effort(15.0, 60.0)
    assert total.ratio == pytest.approx(0.25)
    assert Effort().ratio is None
    assert Effort(3.0, 0.0).ratio is None


# settings and documentation --------------------------------------------------------------------------------------


def test_the_effort_section_is_part_of_the_settings_and_validated():
    assert Settings().effort == EffortSettings()
    assert parse_settings({"effort": {"head_box_draw_seconds": 35.0}}).effort.head_box_draw_seconds == 35.0
    with pytest.raises(SettingsError) as exc:
        parse_settings({"effort": {"keypoint_place_seconds": -1.0}})
    assert str(exc.value).startswith("settings.effort.keypoint_place_seconds")
    with pytest.raises(SettingsError, match=r"^settings\.effort\.head_match_iou"):
        parse_settings({"effort": {"head_match_iou": 0.0}})


def test_every_default_says_where_it_comes_from_and_is_documented():
    rows = {line.split("|")[1].strip(" `"): line for line in
            (REPO_ROOT / "docs" / "effort.md").read_text().splitlines() if line.startswith("| `")}
    for name, field in EffortSettings.model_fields.items():
        assert field.description and field.description.endswith(")"), name
        assert name in rows, f"{name} has no row in docs/effort.md's table"
        assert rows[name].split("|")[2].strip() == f"{field.default:g}", f"{name}: the table's default differs"


# properties ------------------------------------------------------------------------------------------------------

_coord = st.floats(0.0, 300.0, allow_nan=False)
_side = st.floats(1.0, 80.0, allow_nan=False)
_boxes = st.lists(st.builds(head, _coord, _coord, _side, _side), max_size=6)
_scored = st.lists(st.builds(lambda b, s: proposal(b, s, -s), st.builds(head, _coord, _coord, _side, _side),
                             st.floats(-10.0, 10.0)), max_size=6)
_people = st.builds(
    lambda xs, ys, vs, boxed: PersonKeypoints(
        keypoints=[Keypoint(name=f"k{i}", x=x, y=y, v=v) for i, (x, y, v) in enumerate(zip(xs, ys, vs, strict=True))],
        bbox=[0.0, 0.0, 300.0, 300.0] if boxed else None),
    st.lists(_coord, min_size=K, max_size=K), st.lists(_coord, min_size=K, max_size=K),
    st.lists(st.sampled_from([0, 1, 2]), min_size=K, max_size=K), st.booleans())
_seconds = st.floats(0.0, 60.0, allow_nan=False)
_any_settings = st.builds(
    EffortSettings, head_task_overhead_seconds=_seconds, head_box_draw_seconds=_seconds,
    head_box_adjust_seconds=_seconds, head_box_confirm_seconds=_seconds, head_box_delete_seconds=_seconds,
    head_confirm_iou=st.floats(0.01, 1.0), head_match_iou=st.floats(0.01, 1.0),
    person_task_overhead_seconds=_seconds, keypoint_place_seconds=_seconds, keypoint_adjust_seconds=_seconds,
    keypoint_confirm_seconds=_seconds, keypoint_delete_seconds=_seconds, keypoint_visibility_seconds=_seconds,
    keypoint_confirm_tolerance=st.floats(0.0, 1.0))


@settings(max_examples=200, deadline=None)
@given(proposed=_scored, final=_boxes, effort=_any_settings)
def test_head_effort_is_never_negative_nor_above_by_hand_plus_deleting_every_proposal(proposed, final, effort):
    seconds = head_task_seconds(proposed, final, effort)
    assert 0.0 <= seconds <= head_task_seconds([], final, effort) + len(proposed) * effort.head_box_delete_seconds + 1e-9


@settings(max_examples=200, deadline=None)
@given(proposed=_people, final=_people, effort=_any_settings)
def test_person_effort_is_never_negative_nor_above_by_hand_plus_clearing_every_proposed_point(proposed, final,
                                                                                              effort):
    seconds = person_task_seconds(proposed, final, effort)
    placed = sum(1 for k in proposed.keypoints if k.v > 0)
    assert 0.0 <= seconds <= person_task_seconds(None, final, effort) + placed * effort.keypoint_delete_seconds + 1e-9


@settings(max_examples=300, deadline=None)
@given(proposed=_scored, final=_boxes, pick=st.integers(0, 5))
def test_a_correct_proposal_for_one_more_head_never_increases_the_effort(proposed, final, pick):
    ltwh = [Box(p.left, p.top, p.width, p.height) for p in proposed]
    matched = {i for i, _, _ in match_boxes(final, ltwh, E.head_match_iou)}
    unproposed = [i for i in range(len(final)) if i not in matched]
    assume(unproposed)
    extra = proposal(final[unproposed[pick % len(unproposed)]])
    assert head_task_seconds([*proposed, extra], final, E) <= head_task_seconds(proposed, final, E) + 1e-9


@settings(max_examples=300, deadline=None)
@given(proposed=_people, final=_people, pick=st.integers(0, K - 1))
def test_a_correct_proposal_for_one_more_keypoint_or_person_never_increases_the_effort(proposed, final, pick):
    assert person_task_seconds(final, final, E) <= person_task_seconds(None, final, E)
    assume(proposed.keypoints[pick].v == 0)
    better = edited(proposed, pick, x=final.keypoints[pick].x, y=final.keypoints[pick].y, v=final.keypoints[pick].v)
    assert person_task_seconds(better, final, E) <= person_task_seconds(proposed, final, E) + 1e-9
