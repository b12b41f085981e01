"""Judgement: routes, reasons, cold start, the audit draw, and its properties (hypothesis)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alp.settings import JudgementSettings
from inference.judgement import (
    ImageEvidence,
    InputRejected,
    ModelFailed,
    NoModel,
    PersonEvidence,
    aggregate,
    audit_draw,
    decision_margin,
    keypoint_certainty,
    route_image,
)

NO_AUDIT = JudgementSettings(audit_fraction=0.0)
K = 5


def _person(conf=0.9, vis=0.9, head=0, box=0.9):
    return PersonEvidence(box_conf=box, keypoint_conf=(conf,) * K, keypoint_conf_visible=(vis,) * K,
                          head_box_index=head)


def _image(*persons, heads=None):
    heads = heads if heads is not None else tuple(0.9 for _ in persons)
    return ImageEvidence(head_confs=heads, persons=persons, keypoint_names=tuple(f"k{i}" for i in range(K)),
                         main_threshold=0.6, additional_threshold=0.6)


def test_confident_image_goes_auto():
    d = route_image("s3://b/a.jpg", _image(_person()), NO_AUDIT)
    assert (d.route, d.reason) == ("auto", "confident")
    # keypoints at 0.9 with the visibility thresholds at 0.6: certainty (0.9 - 0.6) / 0.4 = 0.75 < box 0.9
    assert d.score == pytest.approx(0.75)
    raw = route_image("s3://b/a.jpg", _image(_person()), NO_AUDIT.model_copy(update={"keypoint_score": "confidence"}))
    assert raw.score == pytest.approx(0.9)


def test_a_point_confidently_outside_the_view_is_certain_not_doubtful():
    """An in-cabin person with both ankles out of view: both models near 0 there. The raw confidences call
    that doubt; the certainty score calls it a confident 'outside'."""
    person = PersonEvidence(box_conf=0.9, keypoint_conf=(0.95, 0.95, 0.95, 0.03, 0.02),
                            keypoint_conf_visible=(0.9, 0.92, 0.9, 0.01, 0.02), head_box_index=0)
    strict = JudgementSettings(audit_fraction=0, aggregation="min")
    assert route_image("k", _image(person), strict).route == "auto"
    raw = route_image("k", _image(person), strict.model_copy(update={"keypoint_score": "confidence"}))
    assert raw.route == "human" and "keypoint score 0.010 (min)" in raw.reason


def test_keypoints_near_the_visibility_thresholds_or_contradicting_go_to_people():
    strict = JudgementSettings(audit_fraction=0, aggregation="min", keypoint_threshold=0.5)
    near = PersonEvidence(box_conf=0.9, keypoint_conf=(0.95, 0.95, 0.64, 0.95, 0.95),
                          keypoint_conf_visible=(0.9,) * K, head_box_index=0)
    d = route_image("k", _image(near), strict)
    assert d.route == "human"
    assert "person 0 keypoint certainty 0.100 (min) < keypoint_threshold 0.5; least certain k2 main 0.640" in d.reason
    # the main model says outside, the visible-only model sees it: the models contradict each other
    contra = PersonEvidence(box_conf=0.9, keypoint_conf=(0.95, 0.95, 0.05, 0.95, 0.95),
                            keypoint_conf_visible=(0.9, 0.9, 0.8, 0.9, 0.9), head_box_index=0)
    assert "keypoint certainty 0.000" in route_image("k", _image(contra), strict).reason


def test_heads_and_persons_that_do_not_pair_up_score_zero_whatever_the_confidences():
    lone_head = route_image("k", _image(_person(), heads=(0.95, 0.95)), NO_AUDIT)
    assert lone_head.route == "human" and "head box 1 belongs to no person" in lone_head.reason
    assert lone_head.score == 0.0
    headless = route_image("k", _image(_person(head=None), heads=()), NO_AUDIT)
    assert headless.score == 0.0
    # a person the visible-only model missed still fails, but keeps its confidence as the score
    unmatched = dataclasses.replace(_person(), keypoint_conf_visible=None)
    d = route_image("k", _image(unmatched), NO_AUDIT)
    assert d.route == "human" and d.score is not None and d.score > 0.0


def test_certainty_is_the_distance_from_the_threshold_on_either_side():
    assert decision_margin(0.6, 0.6) == 0.0
    assert decision_margin(1.0, 0.6) == pytest.approx(1.0) and decision_margin(0.0, 0.6) == pytest.approx(1.0)
    assert decision_margin(0.8, 0.6) == pytest.approx(0.5) and decision_margin(0.3, 0.6) == pytest.approx(0.5)
    assert decision_margin(0.0, 0.0) == 0.0 and decision_margin(1.0, 1.0) == 0.0  # no division by zero
    assert decision_margin(float("nan"), 0.6) == 0.0
    assert keypoint_certainty(0.9, 0.1, 0.6, 0.6) == pytest.approx(min(0.75, 0.5 / 0.6))  # confidently occluded
    assert keypoint_certainty(0.1, 0.1, 0.6, 0.6) == pytest.approx(0.5 / 0.6)  # confidently outside


def test_low_head_box_names_box_and_threshold():
    d = route_image("k", _image(_person(), heads=(0.3,)), NO_AUDIT)
    assert d.route == "human"
    assert "head box 0 confidence 0.300 < box_threshold 0.5" in d.reason


def test_low_keypoints_name_person_keypoint_and_threshold():
    p = dataclasses.replace(_person(), keypoint_conf=(0.9, 0.9, 0.1, 0.1, 0.1))
    d = route_image("k", _image(_person(), p, heads=(0.9, 0.9)),
                    JudgementSettings(audit_fraction=0, aggregation="min", keypoint_score="confidence",
                                      keypoint_threshold=0.5))
    assert d.route == "human"
    assert "person 1 keypoint score 0.100 (min) < keypoint_threshold 0.5" in d.reason
    assert "lowest k2 main 0.100" in d.reason


def test_structural_doubts_go_to_people():
    unmatched = dataclasses.replace(_person(), keypoint_conf_visible=None)
    assert "not found by the visible-only model" in route_image("k", _image(unmatched), NO_AUDIT).reason
    assert "has no head box" in route_image("k", _image(_person(head=None), heads=()), NO_AUDIT).reason
    assert "belongs to no person" in route_image("k", _image(_person(), heads=(0.9, 0.9)), NO_AUDIT).reason
    assert route_image("k", _image(), NO_AUDIT).reason.startswith("no_detections")
    extra = dataclasses.replace(_image(_person()), unmatched_visible_persons=1)
    assert "the main model did not" in route_image("k", extra, NO_AUDIT).reason


def test_cold_start_model_error_and_bad_input():
    assert route_image("k", NoModel(), NO_AUDIT).route == "human"
    assert route_image("k", NoModel(), NO_AUDIT).reason == "no_model"
    failed = route_image("k", ModelFailed("onnxruntime exploded"), NO_AUDIT)
    assert (failed.route, failed.reason) == ("human", "model_error: onnxruntime exploded")
    q = route_image("k", InputRejected("truncated", "image file is truncated"), NO_AUDIT)
    assert (q.route, q.reason) == ("quarantine", "truncated: image file is truncated")


def test_audit_draw_is_stable_and_hits_the_fraction():
    s = JudgementSettings(audit_fraction=0.05, audit_seed="seed-a")
    keys = [f"s3://bucket/cam/{i:05d}.jpg" for i in range(4000)]
    routes = [route_image(k, _image(_person()), s).route for k in keys]
    again = [route_image(k, _image(_person()), s).route for k in keys]
    assert routes == again
    # the draw is per part: the image's head-box task and its one person are each drawn with p = 0.05
    parts = [route_image(k, _image(_person()), s).parts for k in keys]
    audited_parts = sum((p.heads.route == "audit") + sum(x.route == "audit" for x in p.persons) for p in parts)
    assert 0.035 < audited_parts / (2 * len(keys)) < 0.065
    assert 0.075 < routes.count("audit") / len(keys) < 0.125  # 1 - 0.95^2 of the images hold an audited part
    whole = [route_image(k, _image(_person()), s.model_copy(update={"part_routing": False})).route for k in keys]
    assert 0.035 < whole.count("audit") / len(keys) < 0.065
    other = JudgementSettings(audit_fraction=0.05, audit_seed="seed-b")
    other_seed = [route_image(k, _image(_person()), other).route for k in keys]
    assert other_seed != routes
    assert set(routes) == {"auto", "audit"}


def test_audit_never_takes_low_confidence_images():
    s = JudgementSettings(audit_fraction=1.0)
    assert route_image("k", _image(_person(conf=0.1)), s).route == "human"
    assert route_image("k", _image(_person()), s).route == "audit"


def test_a_doubtful_person_sends_only_that_person_to_people():
    d = route_image("k", _image(_person(), _person(conf=0.62, head=1), _person(head=2)), NO_AUDIT)
    assert d.route == "human" and "person 1" in d.reason
    assert d.parts is not None
    assert [d.parts.heads.route, *(p.route for p in d.parts.persons)] == ["auto", "auto", "human", "auto"]
    assert d.parts.persons[1].reason.startswith("low_keypoints: person 1")
    assert d.parts.persons[0].score == pytest.approx(0.75)


def test_the_head_task_goes_to_people_when_a_head_is_doubtful_or_heads_and_persons_do_not_pair_up():
    low_head = route_image("k", _image(_person(), heads=(0.3,)), NO_AUDIT)
    assert [low_head.parts.heads.route, low_head.parts.persons[0].route] == ["human", "auto"]
    extra_head = route_image("k", _image(_person(), heads=(0.9, 0.9)), NO_AUDIT)
    assert extra_head.parts.heads.route == "human" and extra_head.parts.heads.score == 0.0
    assert extra_head.parts.persons[0].route == "auto"
    no_head = route_image("k", _image(_person(head=None), heads=()), NO_AUDIT)
    assert [no_head.parts.heads.route, no_head.parts.persons[0].route] == ["human", "human"]
    empty = route_image("k", _image(heads=()), NO_AUDIT)
    assert empty.route == "human" and empty.parts.heads.route == "human" and empty.parts.persons == []


def test_whole_image_routing_keeps_no_parts():
    d = route_image("k", _image(_person(), _person(conf=0.62, head=1)), NO_AUDIT.model_copy(
        update={"part_routing": False}))
    assert d.route == "human" and d.parts is None


def test_aggregations():
    values = [0.1, 0.5, 0.9, 0.9]
    assert aggregate(values, "min", 0.1) == pytest.approx(0.1)
    assert aggregate(values, "mean", 0.1) == pytest.approx(0.6)
    assert aggregate(values, "quantile", 0.5) == pytest.approx(0.7)
    assert 0.0 <= audit_draw("x", "y") < 1.0


conf = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def evidence(draw):
    n_persons = draw(st.integers(0, 3))
    persons = []
    for i in range(n_persons):
        kc = tuple(draw(st.lists(conf, min_size=K, max_size=K)))
        kv = draw(st.one_of(st.none(), st.lists(conf, min_size=K, max_size=K).map(tuple)))
        persons.append(PersonEvidence(draw(conf), kc, kv, draw(st.sampled_from([None, i]))))
    heads = tuple(draw(st.lists(conf, min_size=0, max_size=n_persons + 1)))
    return ImageEvidence(head_confs=heads, persons=tuple(persons), unmatched_visible_persons=draw(st.integers(0, 1)),
                         keypoint_names=tuple(f"k{i}" for i in range(K)), main_threshold=draw(conf),
                         additional_threshold=draw(conf))


judgement_settings = st.builds(
    JudgementSettings,
    keypoint_score=st.sampled_from(["certainty", "confidence"]),
    aggregation=st.sampled_from(["min", "mean", "quantile"]), quantile=conf, box_threshold=conf,
    keypoint_threshold=conf, audit_fraction=conf, audit_seed=st.text(max_size=5),
)


def _lower_one(ev: ImageEvidence, data, towards_threshold: bool = False) -> ImageEvidence:
    """``ev`` with one confidence (head, person box, main or visible keypoint) lowered; with
    ``towards_threshold``, a keypoint confidence moves towards its visibility threshold instead."""
    slots = [("head", i) for i in range(len(ev.head_confs))]
    for p, person in enumerate(ev.persons):
        slots += [("box", p)] + [("kpt", p, k) for k in range(K)]
        if person.keypoint_conf_visible is not None:
            slots += [("vis", p, k) for k in range(K)]
    if not slots:
        return ev
    slot = data.draw(st.sampled_from(slots))
    factor = data.draw(st.floats(0.0, 1.0))
    if slot[0] == "head":
        heads = list(ev.head_confs)
        heads[slot[1]] *= factor
        return dataclasses.replace(ev, head_confs=tuple(heads))
    persons = list(ev.persons)
    person = persons[slot[1]]
    if slot[0] == "box":
        person = dataclasses.replace(person, box_conf=person.box_conf * factor)
    else:
        field = "keypoint_conf" if slot[0] == "kpt" else "keypoint_conf_visible"
        values = list(getattr(person, field))
        if towards_threshold:
            t = ev.main_threshold if slot[0] == "kpt" else ev.additional_threshold
            values[slot[2]] = t + (values[slot[2]] - t) * factor
        else:
            values[slot[2]] *= factor
        person = dataclasses.replace(person, **{field: tuple(values)})
    persons[slot[1]] = person
    return dataclasses.replace(ev, persons=tuple(persons))


@settings(max_examples=300, deadline=None)
@given(ev=evidence(), s=judgement_settings, key=st.text(max_size=20), data=st.data())
def test_property_a_less_sure_score_never_moves_human_to_auto(ev, s, key, data):
    """Box confidences and raw keypoint confidences: lower is never more confident. Keypoint certainty:
    a confidence moved towards its visibility threshold is never more certain."""
    before = route_image(key, ev, s)
    after = route_image(key, _lower_one(ev, data, towards_threshold=s.keypoint_score == "certainty"), s)
    if before.route == "human":
        assert after.route == "human"
    if after.route in ("auto", "audit"):
        assert before.route in ("auto", "audit")


@settings(max_examples=300, deadline=None)
@given(ev=evidence(), s=judgement_settings, key=st.text(max_size=20), data=st.data())
def test_property_a_part_never_leaves_people_when_its_confidences_fall(ev, s, key, data):
    """Per part: a part people had to label still goes to people after any confidence of the image falls, and
    the image as a whole keeps at least as many parts with people."""
    before = route_image(key, ev, s).parts
    after = route_image(key, _lower_one(ev, data, towards_threshold=s.keypoint_score == "certainty"), s).parts
    assert before is not None and after is not None
    pairs = [(before.heads, after.heads), *zip(before.persons, after.persons, strict=True)]
    for b, a in pairs:
        if b.route == "human":
            assert a.route == "human"
        if b.route == "audit":
            assert a.route in ("audit", "human")


@settings(max_examples=100, deadline=None)
@given(detail=st.text(max_size=50), s=judgement_settings, key=st.text(max_size=20))
def test_property_model_error_never_yields_auto(detail, s, key):
    assert route_image(key, ModelFailed(detail), s).route == "human"
    assert route_image(key, NoModel(), s).route == "human"


@settings(max_examples=100, deadline=None)
@given(ev=evidence(), s=judgement_settings, key=st.text(max_size=20))
def test_property_deterministic_and_exactly_one_route(ev, s, key):
    a, b = route_image(key, ev, s), route_image(key, ev, s)
    assert a == b
    assert a.route in ("auto", "human", "audit")


def test_a_nearly_found_person_sends_the_head_task_to_people():
    """A person candidate just under the detection threshold, apart from the found ones, may be an occupant the
    labels miss: the head task goes to people (they add the head, then the person is a task); the found persons
    keep their own routes."""
    d = route_image("k", dataclasses.replace(_image(_person()), near_miss_persons=1), NO_AUDIT)
    assert d.route == "human" and d.reason.startswith("near_miss: 1 person candidate(s)")
    assert d.parts is not None and d.parts.heads.route == "human" and d.parts.persons[0].route == "auto"
    assert d.parts.heads.structural  # no score threshold would let it through
