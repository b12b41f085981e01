"""The engine: bundle verification, ONNX decoding, letterboxing, dual-model persons and head ties."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bundle_factory import HEAD_BOX, PERSON_BOX, bright_image, scripted_bundle, untrained_bundle

from alp.bundle import BundleError, BundleHashMismatch
from alp.schema import V_OCCLUDED, V_VISIBLE
from alp.settings import Settings
from inference.engine import InferenceEngine
from inference.labels import prediction_labels
from inference.letterbox import Placement, input_shape, letterbox_batch
from inference.onnx_models import decode_output, nms


@pytest.fixture(scope="module")
def scripted(tmp_path_factory) -> Path:
    return scripted_bundle(tmp_path_factory.mktemp("bundle"))


def test_tampered_model_file_is_refused_with_a_clear_error(tmp_path):
    bundle = scripted_bundle(tmp_path / "b")
    with open(bundle / "pose_visible.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleHashMismatch, match="pose_visible.onnx has sha256 .* refusing to load"):
        InferenceEngine.from_bundle(str(bundle), Settings(), tmp_path / "cache")


def test_bundle_for_another_keypoint_schema_is_refused(scripted, tmp_path):
    with pytest.raises(BundleError, match="refusing to mix"):
        InferenceEngine.from_bundle(str(scripted), Settings(keypoint_schema="coco17"), tmp_path / "cache")


def test_bright_frame_gives_one_person_tied_to_its_head_with_occluded_points(scripted, tmp_path):
    engine = InferenceEngine.from_bundle(str(scripted), Settings(), tmp_path / "cache")
    (pred,) = engine.predict([bright_image(240)])
    assert (pred.width, pred.height) == (320, 256)
    np.testing.assert_allclose(pred.head_boxes[0], HEAD_BOX, atol=1e-3)
    assert pred.head_scores[0] == pytest.approx(240 / 255, abs=1e-3)
    (person,) = pred.persons
    np.testing.assert_allclose(person.box, PERSON_BOX, atol=1e-3)
    assert person.head_box_index == 0
    assert person.visibility.tolist() == [V_VISIBLE] * 15 + [V_OCCLUDED] * 2
    assert person.keypoint_conf_visible[-1] == pytest.approx(0.5 * 240 / 255, abs=1e-3)
    assert pred.unmatched_visible_persons == 0


def test_coordinates_map_back_to_the_original_pixels(scripted, tmp_path):
    engine = InferenceEngine.from_bundle(str(scripted), Settings(), tmp_path / "cache")
    big = bright_image(240, size=(640, 512))  # scaled by 0.5 into the same 320x256 input
    small, large = engine.predict([bright_image(240), big])
    np.testing.assert_allclose(large.head_boxes, small.head_boxes * 2, atol=1e-3)
    np.testing.assert_allclose(large.persons[0].keypoints_xy, small.persons[0].keypoints_xy * 2, atol=1e-3)


def test_labels_are_ground_truth_format_with_confidences(scripted, tmp_path):
    engine = InferenceEngine.from_bundle(str(scripted), Settings(), tmp_path / "cache")
    (pred,) = engine.predict([bright_image(240)])
    boxes, box_meta, kpts, kpt_meta = prediction_labels(
        pred, keypoint_names=engine.keypoint_names, schema_name="incabin17", job_name="auto-x",
        creation_date="2026-01-01T00:00:00.000000")
    assert boxes.dump()["image_size"] == [{"width": 320, "height": 256, "depth": 3}]
    assert boxes.annotations[0].left == pytest.approx(HEAD_BOX[0], abs=1e-3)
    meta = box_meta.dump()
    assert meta["human-annotated"] == "no" and meta["objects"][0]["confidence"] > 0.9
    kp = kpts.persons[0].keypoints
    assert [k.name for k in kp] == list(engine.keypoint_names)
    assert kp[-1].v == V_OCCLUDED and kp[-1].score_visible == pytest.approx(0.4706, abs=1e-3)
    assert kpt_meta.dump()["type"] == "groundtruth/custom"


def test_letterbox_is_rectangular_and_matches_ultralytics_padding():
    assert input_shape(480, 640, 640) == (480, 640)
    assert input_shape(1080, 810, 640) == (640, 480)
    assert input_shape(720, 1280, 640) == (384, 640)
    tensor, (p,) = letterbox_batch([np.zeros((720, 1280, 3), dtype=np.uint8)], 640)
    assert tensor.shape == (1, 3, 384, 640) and tensor.dtype == np.float32
    assert (p.scale, p.pad_left, p.pad_top) == (0.5, 0, 12)
    assert tensor[0, 0, 0, 0] == pytest.approx(114 / 255)  # padding row
    assert tensor[0, 0, 12, 0] == 0.0  # image row


def test_nms_and_decode_in_numpy():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=float)
    assert nms(boxes, np.array([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 2]
    raw = np.zeros((5, 3))
    raw[:, 0] = (15, 15, 10, 10, 0.9)  # cx, cy, w, h, score
    raw[:, 1] = (15, 15, 10, 10, 0.8)  # duplicate: suppressed
    raw[:, 2] = (40, 40, 4, 4, 0.1)  # below the threshold
    det = decode_output(raw, Placement(scale=0.5, pad_left=0, pad_top=0, width=100, height=100),
                        conf_threshold=0.25, num_keypoints=None)
    np.testing.assert_allclose(det.boxes, [[20, 20, 40, 40]])
    assert det.scores.tolist() == [0.9]


@pytest.mark.slow
def test_untrained_ultralytics_export_runs_in_the_engine(tmp_path):
    bundle = untrained_bundle()
    desc = json.loads((bundle / "bundle.json").read_text())
    assert set(desc["models"]) == {"head", "pose_main", "pose_visible"}
    assert desc["models"]["pose_main"]["input_size"] == [0, 0]  # dynamic: rectangular inputs
    settings = Settings().with_overrides({"inference.box_conf_threshold": 0.0})
    engine = InferenceEngine.from_bundle(str(bundle), settings, tmp_path / "cache")
    rng = np.random.default_rng(0)
    preds = engine.predict([rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)])
    assert len(preds) == 1 and preds[0].width == 200
    assert preds[0].persons, "with no threshold an untrained pose model still yields candidates"
    assert preds[0].persons[0].keypoints_xy.shape == (17, 2)
    # an unsure model's dozens of overlapping proposals are cut to inference.max_detections per model
    assert len(preds[0].persons) == settings.inference.max_detections == 20
    assert len(preds[0].head_boxes) <= 20


def test_decode_keeps_the_most_confident_detections_up_to_the_limit():
    raw = np.zeros((5, 30))
    raw[0] = np.arange(30) * 20.0  # 30 boxes far apart: NMS keeps them all
    raw[1], raw[2], raw[3] = 10.0, 10.0, 10.0
    raw[4] = np.linspace(0.3, 0.9, 30)
    placement = Placement(scale=1.0, pad_left=0, pad_top=0, width=1000, height=100)
    assert len(decode_output(raw, placement, conf_threshold=0.25, num_keypoints=None).scores) == 30
    det = decode_output(raw, placement, conf_threshold=0.25, num_keypoints=None, max_detections=5)
    np.testing.assert_allclose(det.scores, np.linspace(0.3, 0.9, 30)[::-1][:5])


def test_a_person_candidate_just_under_the_detection_threshold_is_counted_as_a_near_miss(scripted, tmp_path):
    """The scripted models' confidence is the frame's brightness: at 50/255 (about 0.2) the person is a candidate
    between inference.near_miss_conf (0.1) and box_conf_threshold (0.25): not detected, but counted; at 240 it is
    detected and nothing is missed; with near_miss_conf off nothing is counted."""
    engine = InferenceEngine.from_bundle(str(scripted), Settings(), tmp_path / "cache")
    dim, bright = engine.predict([bright_image(50), bright_image(240)])
    assert (len(dim.persons), dim.near_miss_persons) == (0, 1)
    assert (len(bright.persons), bright.near_miss_persons) == (1, 0)
    assert dim.evidence().near_miss_persons == 1
    off = InferenceEngine.from_bundle(str(scripted), Settings().with_overrides({"inference.near_miss_conf": None}),
                                      tmp_path / "cache")
    assert off.predict([bright_image(50)])[0].near_miss_persons == 0
