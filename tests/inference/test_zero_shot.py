"""The zero-shot bundle's pure parts: keypoint mapping, heads from faces, the prefill of points COCO lacks, the
judgement (never auto, never audit) and the bundle's place in ``resolve_bundle_uri``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from alp.bundle import (
    MODEL_ROLES,
    BundleDescriptor,
    BundleError,
    BundleHashMismatch,
    ModelFile,
    ZeroShotSource,
)
from alp.labeling.contracts import PERSON_KEY, PersonTask
from alp.labeling.pre_annotation import build_task_input
from alp.manifest import ImageSize
from alp.schema import COCO17, INCABIN17, V_OUTSIDE, V_VISIBLE
from alp.settings import JudgementSettings, Settings
from inference.engine import PersonPrediction
from inference.judgement import ZERO_SHOT, ImageEvidence, PersonEvidence, route_image
from inference.labels import person_keypoints
from inference.runner import resolve_bundle_uri
from inference.visibility import classify_visibility
from inference.zero_shot import (
    FACE_MIN_CONF,
    FACE_POINTS,
    HEAD_WIDTH_CM,
    MIN_HEAD_PX,
    TYPICAL_POINTS_CM,
    head_from_face,
    heads_from_faces,
    known_keypoints,
    map_keypoints,
)

COCO = COCO17.names
SHA = "ab" * 32


def _coco_person(conf: float = 0.9, **points: tuple[float, float, float]) -> np.ndarray:
    """One COCO person (17, 3): every point at (10 * k, 20 * k) with ``conf``, except the ones given."""
    kp = np.array([[10.0 * k, 20.0 * k, conf] for k in range(len(COCO))])
    for name, value in points.items():
        kp[COCO.index(name)] = value
    return kp


# --- keypoint mapping ------------------------------------------------------------------------------------

def test_coco_onto_coco17_is_the_identity():
    kp = np.random.default_rng(0).uniform(0, 1, size=(3, 17, 3))
    assert np.array_equal(map_keypoints(kp, COCO, COCO17.names), kp)
    assert known_keypoints(COCO, COCO17.names).all()


def test_coco_onto_incabin17_copies_by_name_derives_the_neck_and_leaves_the_mouth():
    kp = _coco_person(left_shoulder=(100.0, 200.0, 0.9), right_shoulder=(160.0, 210.0, 0.7))[None]
    out = map_keypoints(kp, COCO, INCABIN17.names)
    assert out.shape == (1, 17, 3)
    for t, name in enumerate(INCABIN17.names):
        if name in COCO:
            assert np.array_equal(out[0, t], kp[0, COCO.index(name)]), name
    neck = out[0, INCABIN17.index["neck"]]
    assert neck.tolist() == pytest.approx([130.0, 205.0, 0.7])  # the midpoint, as sure as the less sure shoulder
    assert out[0, INCABIN17.index["mouth"]].tolist() == [0.0, 0.0, 0.0]
    known = known_keypoints(COCO, INCABIN17.names)
    assert [n for n, k in zip(INCABIN17.names, known, strict=True) if not k] == ["mouth"]


def test_mapping_refuses_keypoints_of_another_shape():
    with pytest.raises(ValueError, match=r"expected \(N, 17, 3\)"):
        map_keypoints(np.zeros((1, 16, 3)), COCO, INCABIN17.names)
    assert map_keypoints(np.zeros((0, 17, 3)), COCO, INCABIN17.names).shape == (0, 17, 3)


def _prediction(kp_coco: np.ndarray) -> PersonPrediction:
    """An incabin17 person as the zero-shot engine makes it (one model: both confidences the same)."""
    kp = map_keypoints(kp_coco[None], COCO, INCABIN17.names)[0]
    conf = kp[:, 2]
    return PersonPrediction(box=(0.0, 0.0, 400.0, 400.0), score=0.9, keypoints_xy=kp[:, :2], keypoint_conf=conf,
                            keypoint_conf_visible=conf, visibility=classify_visibility(conf, conf, 0.6, 0.6),
                            head_box_index=0, keypoint_known=known_keypoints(COCO, INCABIN17.names))


def test_a_point_the_model_lacks_is_prefilled_unplaced_and_unanswered_not_outside():
    kp = _coco_person(left_ankle=(50.0, 300.0, 0.05))  # the model says: this ankle is out of view
    labeled = person_keypoints(_prediction(kp), INCABIN17.names)
    mouth = labeled.keypoints[INCABIN17.index["mouth"]]
    assert (mouth.x, mouth.y, mouth.v, mouth.score, mouth.score_visible) == (0.0, 0.0, V_OUTSIDE, None, None)
    ankle = labeled.keypoints[INCABIN17.index["left_ankle"]]
    assert (ankle.v, ankle.score) == (V_OUTSIDE, 0.05)
    assert labeled.keypoints[INCABIN17.index["nose"]].v == V_VISIBLE

    line = {"source-ref": "s3://u/a.jpg", PERSON_KEY: PersonTask(
        image_key="s3://u/a.jpg", head_index=0, head_box=[0, 0, 50, 50], image_size=ImageSize(width=400, height=400),
        prefill=labeled).dump()}
    task, _ = build_task_input(line)
    placed = {p["label"] for p in task["initialKeypoints"]}
    assert "mouth" not in placed and "left_ankle" not in placed and "nose" in placed
    rows = {r["name"]: r for r in task["points"]}
    # the mouth: nothing chosen, people place it; the ankle: the model's own "outside" stays proposed
    assert not any(rows["mouth"][c] for c in ("visible", "occluded", "outside"))
    assert rows["left_ankle"]["outside"] and rows["nose"]["visible"]
    # a prefill that scores no point at all (people's labels) keeps every point's visibility as given
    unscored = labeled.model_copy(update={"keypoints": [k.model_copy(update={"score": None, "score_visible": None})
                                                        for k in labeled.keypoints]})
    line[PERSON_KEY]["prefill"] = unscored.model_dump(mode="json")
    task, _ = build_task_input(line)
    assert {r["name"]: r for r in task["points"]}["mouth"]["outside"]


# --- heads from faces ------------------------------------------------------------------------------------

def test_a_frontal_face_gives_a_head_as_wide_as_a_head_between_the_ears():
    kp = _coco_person(0.05, nose=(200.0, 130.0, 0.95), left_eye=(216.0, 112.0, 0.9), right_eye=(184.0, 112.0, 0.9),
                      left_ear=(237.5, 120.0, 0.8), right_ear=(162.5, 120.0, 0.8))
    found = head_from_face(kp, COCO, 640, 480)
    assert found is not None
    (x0, y0, x1, y1), score = found
    # ears 75 px apart = 15 cm: 5 px/cm, a head 17 x 23 cm, centred between the ears at eye height
    assert (x0, y0, x1, y1) == pytest.approx((157.5, 54.5, 242.5, 169.5))
    assert score == pytest.approx(np.mean([0.95, 0.9, 0.9, 0.8, 0.8]))


def test_a_profile_face_takes_its_size_from_eye_and_ear_and_holds_every_face_point():
    kp = _coco_person(0.02, nose=(300.0, 215.0, 0.9), right_eye=(285.0, 192.0, 0.9), right_ear=(200.0, 200.0, 0.8))
    (x0, y0, x1, y1), _ = head_from_face(kp, COCO, 640, 480)
    for name in ("nose", "right_eye", "right_ear"):
        x, y, _c = kp[COCO.index(name)]
        assert x0 < x < x1 and y0 < y < y1
    # eye to ear 85.4 px over 9.6 cm on a typical head: a head about 150 px wide, not the 3 px the ears would say
    assert 140 < x1 - x0 < 170


def test_shoulders_size_a_face_cut_by_the_frame_edge():
    face = {"nose": (796.0, 435.0, 0.2), "left_eye": (798.0, 426.0, 0.2), "left_ear": (803.0, 432.0, 0.25)}
    alone = head_from_face(_coco_person(0.0, **face), COCO, 810, 1080)
    with_shoulders = head_from_face(_coco_person(0.0, **face, left_shoulder=(810.0, 488.0, 0.7),
                                                 right_shoulder=(806.0, 483.0, 0.25)), COCO, 810, 1080)
    assert alone is not None and with_shoulders is not None
    assert with_shoulders[0][3] - with_shoulders[0][1] > 1.5 * (alone[0][3] - alone[0][1])
    assert with_shoulders[0][2] == 810.0  # clipped to the image


def test_no_head_from_fewer_than_two_face_points_or_from_one_spot():
    one = _coco_person(0.05, nose=(100.0, 100.0, 0.9))
    assert head_from_face(one, COCO, 640, 480) is None
    same_spot = _coco_person(0.05, nose=(0.0, 0.0, 0.9), left_eye=(0.0, 0.0, 0.9))
    assert head_from_face(same_spot, COCO, 640, 480) is None
    assert head_from_face(np.zeros((17, 3)), COCO, 640, 480) is None
    # names without face points (another schema's model): no heads, no error
    assert head_from_face(np.ones((3, 3)), ("a", "b", "c"), 640, 480) is None


def test_heads_from_faces_says_whose_head_each_is():
    face = {"nose": (200.0, 130.0, 0.9), "left_eye": (216.0, 112.0, 0.9), "right_eye": (184.0, 112.0, 0.9)}
    kp = np.stack([_coco_person(0.0), _coco_person(0.0, **face), _coco_person(0.0)])
    heads = heads_from_faces(kp, COCO, 640, 480)
    assert heads.boxes.shape == (1, 4) and heads.person.tolist() == [1]
    assert heads.head_of(3) == [None, 0, None]
    empty = heads_from_faces(np.zeros((0, 17, 3)), COCO, 640, 480)
    assert empty.boxes.shape == (0, 4) and empty.head_of(0) == []


_coord = st.floats(min_value=-50.0, max_value=700.0, allow_nan=False)
_conf = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@given(points=st.lists(st.tuples(_coord, _coord, _conf), min_size=17, max_size=17),
       size=st.tuples(st.integers(1, 640), st.integers(1, 640)))
@settings(max_examples=300, deadline=None)
@example(points=[(0.0, 0.0, 0.0)] * 3 + [(1.0, 0.0, 1.0), (1.0, 4.26274016269553e-46, 1.0)] + [(0.0, 0.0, 0.0)] * 12,
         size=(1, 1))  # two ears a denormal apart: found once, a head under a pixel is no head
def test_a_head_lies_in_the_image_and_holds_its_confident_face_points(points, size):
    width, height = size
    kp = np.array(points)
    found = head_from_face(kp, COCO, width, height)
    face = [COCO.index(n) for n in FACE_POINTS if kp[COCO.index(n), 2] >= FACE_MIN_CONF]
    if len(face) < 2:
        assert found is None
        return
    if found is None:  # only when the points give no size: (nearly) at one spot once clipped to the image
        shoulders = [COCO.index(n) for n in ("left_shoulder", "right_shoulder") if kp[COCO.index(n), 2] >= FACE_MIN_CONF]
        used = face + shoulders
        spots = np.clip(kp[used, :2], 0, [width, height])
        for i, a in enumerate(used):  # every pair closer than what a one-pixel head would put between them
            for j in range(i + 1, len(used)):
                typical = np.linalg.norm(np.subtract(TYPICAL_POINTS_CM[COCO[a]], TYPICAL_POINTS_CM[COCO[used[j]]]))
                assert np.linalg.norm(spots[i] - spots[j]) <= typical * MIN_HEAD_PX / HEAD_WIDTH_CM + 1e-9
        return
    (x0, y0, x1, y1), score = found
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    assert FACE_MIN_CONF <= score <= 1.0
    for k in face:
        x, y = np.clip(kp[k, :2], 0, [width, height])
        assert x0 <= x <= x1 and y0 <= y <= y1


# --- judgement --------------------------------------------------------------------------------------------

_conf_tuple = st.lists(_conf, min_size=3, max_size=3).map(tuple)


@given(heads=st.lists(_conf, max_size=3).map(tuple),
       persons=st.lists(st.tuples(_conf, _conf_tuple, st.none() | _conf_tuple, st.none() | st.integers(0, 2)),
                        max_size=3),
       near=st.integers(0, 2), unmatched=st.integers(0, 2), audit=st.sampled_from([0.0, 0.5, 1.0]),
       part_routing=st.booleans(), key=st.text(max_size=8))
@settings(max_examples=300, deadline=None)
def test_zero_shot_evidence_is_never_auto_nor_audit(heads, persons, near, unmatched, audit, part_routing, key):
    ev = ImageEvidence(head_confs=heads, persons=tuple(PersonEvidence(*p) for p in persons),
                       near_miss_persons=near, unmatched_visible_persons=unmatched, keypoint_names=("a", "b", "c"),
                       main_threshold=0.6, additional_threshold=0.6, zero_shot=True)
    s = JudgementSettings(audit_fraction=audit, part_routing=part_routing, box_threshold=0.0, keypoint_threshold=0.0)
    d = route_image(key, ev, s)
    assert d.route == "human" and d.reason == ZERO_SHOT and d.reason.startswith("zero_shot: ")
    assert d.parts is None and d.failures == ()  # whole images to people


def test_the_same_confident_evidence_goes_auto_unless_zero_shot():
    person = PersonEvidence(box_conf=0.99, keypoint_conf=(0.99,) * 3, keypoint_conf_visible=(0.99,) * 3,
                            head_box_index=0)
    common = {"head_confs": (0.99,), "persons": (person,), "main_threshold": 0.6, "additional_threshold": 0.6}
    s = JudgementSettings(audit_fraction=0.0)
    assert route_image("k", ImageEvidence(**common), s).route == "auto"
    zs = route_image("k", ImageEvidence(**common, zero_shot=True), s)
    assert (zs.route, zs.score) == ("human", route_image("k", ImageEvidence(**common), s).score)


# --- resolve_bundle_uri -----------------------------------------------------------------------------------

def _descriptor_file(folder: Path, *, zero_shot: bool = True) -> str:
    """A bundle.json (its models are not read by resolve_bundle_uri); returns its sha256."""
    from alp.bundle import sha256_file

    entry = ModelFile(file="pose.onnx", sha256="0" * 64, task="pose", input_size=(0, 0), class_names=("person",))
    desc = BundleDescriptor(
        bundle_id="zs", created_at="2026-01-01T00:00:00", imgsz=320, keypoint_schema="incabin17",
        keypoint_names=INCABIN17.names, models=dict.fromkeys(MODEL_ROLES, entry),
        zero_shot=ZeroShotSource(source_keypoints=COCO, checkpoint_sha256=SHA) if zero_shot else None)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bundle.json").write_text(desc.to_json())
    return sha256_file(folder / "bundle.json")


def _settings(folder: Path | None, sha: str | None) -> Settings:
    return Settings().with_overrides({"inference.zero_shot_bundle": None if folder is None else str(folder),
                                      "inference.zero_shot_bundle_sha256": sha})


@pytest.fixture
def no_champion(monkeypatch):
    monkeypatch.setattr("alp.registry.latest_approved", lambda settings: None)


def test_without_a_champion_the_zero_shot_bundle_runs_after_its_hash_check(tmp_path, no_champion):
    sha = _descriptor_file(tmp_path / "zs")
    assert resolve_bundle_uri(_settings(tmp_path / "zs", sha), None) == str(tmp_path / "zs")
    assert resolve_bundle_uri(_settings(None, None), None) is None  # no zero-shot bundle: cold start
    assert resolve_bundle_uri(_settings(tmp_path / "zs", sha), "s3://b/explicit/") == "s3://b/explicit/"


def test_a_rewritten_or_unrecorded_zero_shot_bundle_is_refused(tmp_path, no_champion):
    sha = _descriptor_file(tmp_path / "zs")
    text = json.loads((tmp_path / "zs" / "bundle.json").read_text())
    text["zero_shot"] = None  # as if someone made it auto-acceptable
    (tmp_path / "zs" / "bundle.json").write_text(json.dumps(text))
    with pytest.raises(BundleHashMismatch, match="zero_shot_bundle_sha256 records"):
        resolve_bundle_uri(_settings(tmp_path / "zs", sha), None)
    with pytest.raises(BundleError, match="has no inference.zero_shot_bundle_sha256"):
        resolve_bundle_uri(_settings(tmp_path / "zs", None), None)
    trained = _descriptor_file(tmp_path / "trained", zero_shot=False)
    with pytest.raises(BundleError, match="not a zero-shot bundle"):
        resolve_bundle_uri(_settings(tmp_path / "trained", trained), None)


def test_an_approved_champion_wins_over_the_zero_shot_bundle(tmp_path, monkeypatch):
    from alp.registry import RegisteredBundle

    sha = _descriptor_file(tmp_path / "zs")
    champion = RegisteredBundle.model_construct(bundle_uri="s3://b/champion/", bundle_id="c")
    monkeypatch.setattr("alp.registry.latest_approved", lambda settings: champion)
    monkeypatch.setattr("alp.registry.verify_descriptor", lambda registered: None)
    assert resolve_bundle_uri(_settings(tmp_path / "zs", sha), None) == "s3://b/champion/"
