"""Synthetic data: determinism, exact visibility, the manifest contract and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alp import storage
from alp.cli import main
from alp.manifest import read_manifest
from alp.schema import INCABIN17, V_OCCLUDED, V_OUTSIDE, V_VISIBLE
from alp.settings import Settings
from alp.synth import SYNTH_KEY, encode_jpeg, generate_dataset, image_stem, render_scene
from alp.synth.body import pose_occupant
from alp.synth.camera import Camera
from alp.synth.paint import Painter, Primitive, capsule_points, ellipse_points, visibility_at
from alp.synth.scene import FRONT_X, FRONT_Z, WHEEL_RADIUS, _Light, _sample_style, _Scene

SMALL = (160, 120)


def test_same_seed_same_bytes_and_truth() -> None:
    a = render_scene(7, 3, size=(320, 240))
    b = render_scene(7, 3, size=(320, 240))
    assert encode_jpeg(a.image) == encode_jpeg(b.image)
    assert len(a.truth.persons) == len(b.truth.persons)
    for pa, pb in zip(a.truth.persons, b.truth.persons, strict=True):
        assert np.array_equal(pa.keypoints, pb.keypoints)
        assert pa.head_box == pb.head_box and pa.bbox == pb.bbox


def test_different_seed_or_index_gives_a_different_frame() -> None:
    base = encode_jpeg(render_scene(7, 3, size=SMALL).image)
    assert encode_jpeg(render_scene(8, 3, size=SMALL).image) != base
    assert encode_jpeg(render_scene(7, 4, size=SMALL).image) != base


def test_dataset_bytes_do_not_depend_on_the_run(tmp_path: Path) -> None:
    uri_a = generate_dataset(str(tmp_path / "a"), 4, seed=11, size=SMALL, progress=False)
    uri_b = generate_dataset(str(tmp_path / "b"), 4, seed=11, size=SMALL, progress=False)
    text_a = Path(uri_a).read_text().replace(str(tmp_path / "a"), "<out>")
    text_b = Path(uri_b).read_text().replace(str(tmp_path / "b"), "<out>")
    assert text_a == text_b
    for name in sorted(p.name for p in (tmp_path / "a" / "images").iterdir()):
        assert (tmp_path / "a" / "images" / name).read_bytes() == (tmp_path / "b" / "images" / name).read_bytes()
    # A longer run with the same seed starts with the very same frames.
    generate_dataset(str(tmp_path / "c"), 6, seed=11, size=SMALL, progress=False)
    assert (tmp_path / "c" / "images" / "s11-000003.jpg").read_bytes() == (
        tmp_path / "a" / "images" / "s11-000003.jpg").read_bytes()


# --- visibility on constructed scenes -----------------------------------------------------------------


def test_painter_visibility_states_on_a_constructed_scene() -> None:
    """Given a hand drawn behind a wheel rim, when visibility is read back, then a wrist under the rim is
    occluded, one in the rim's hole visible, one past the frame outside, and a point on the nearest shape
    visible."""
    painter = Painter((200, 150), (100, 100, 100))
    seat = painter.add(Primitive("polygon", [(0, 0), (200, 0), (200, 150), (0, 150)], (60, 60, 60), 3.0))
    hand_a = painter.add(Primitive("polygon", capsule_points((40, 75), (60, 75), 8, 8), (200, 160, 140), 1.0))
    hand_b = painter.add(Primitive("polygon", capsule_points((90, 75), (110, 75), 8, 8), (200, 160, 140), 1.0))
    rim = painter.add(Primitive("ring", ellipse_points((100, 75), np.diag([50.0, 50.0]), 36), (20, 20, 20), 0.5,
                                width=10))
    badge = painter.add(Primitive("polygon", ellipse_points((170, 20), np.diag([10.0, 10.0])), (250, 250, 250), 0.1))
    _, ids = painter.render()
    assert seat.order < hand_a.order < rim.order < badge.order
    assert ids[75, 50] == rim.order  # the rim is painted over the left hand at x=50
    assert visibility_at(ids, 50.0, 75.0, hand_a.order) == V_OCCLUDED
    assert visibility_at(ids, 100.0, 75.0, hand_b.order) == V_VISIBLE
    assert visibility_at(ids, -3.0, 75.0, hand_a.order) == V_OUTSIDE
    assert visibility_at(ids, 200.0, 75.0, hand_a.order) == V_OUTSIDE  # x == width is past the last pixel
    assert visibility_at(ids, 170.0, 20.0, badge.order) == V_VISIBLE
    assert visibility_at(ids, 170.0, 20.0, seat.order) == V_OCCLUDED  # the seat behind the badge is hidden there


def _driver_scene(grip_offset: float, size: tuple[int, int] = (640, 480)):
    cam = Camera.looking_back((0.0, 1.02, 0.4), pitch_deg=12.0, yaw_deg=0.0, hfov_deg=110.0, size=size)
    light = _Light("rgb", 1.0)
    painter = Painter(size, (150, 150, 150))
    scene = _Scene(cam, light, painter)
    scene.cabin(np.random.default_rng(0), night=False, occupied_front={FRONT_X})
    c, e1, e2, normal = scene.steering_wheel(1.0)
    grips = tuple(c + WHEEL_RADIUS * (math.cos(a) * e1 + math.sin(a) * e2) + normal * grip_offset
                  for a in (math.radians(35.0), math.radians(145.0)))
    occ = pose_occupant(np.random.default_rng(1), "driver", np.array([FRONT_X, 0.44, FRONT_Z]),
                        wheel_grips=grips, arm_poses=("wheel", "wheel"))  # type: ignore[arg-type]
    style = _sample_style(np.random.default_rng(2), hard=False)
    style.glasses, style.mask, style.hair_style = "none", False, "short"
    own, _ = scene.occupant(occ, style, "p0", torso_belt=True)
    _, ids = painter.render()
    rim = next(p for p in painter.primitives if p.kind == "ring")
    return scene, occ, own, ids, rim


def test_wrist_gripping_the_wheel_from_behind_is_occluded_by_the_rim() -> None:
    scene, occ, own, ids, rim = _driver_scene(grip_offset=0.035)
    checked = 0
    for side in ("left", "right"):
        (x, y), _ = scene.p2(occ.joints[f"{side}_wrist"])
        order = max(p.order for p in own[f"{side}_wrist"])
        assert rim.order > order  # the rim is nearer the camera than the hand behind it
        if 0 <= x < ids.shape[1] and 0 <= y < ids.shape[0] and ids[int(y), int(x)] == rim.order:
            assert visibility_at(ids, x, y, order) == V_OCCLUDED
            checked += 1
    assert checked >= 1, "the constructed grip should put at least one wrist under the rim"


def test_point_in_front_of_everything_is_visible_and_past_the_frame_is_outside() -> None:
    scene, occ, own, ids, _ = _driver_scene(grip_offset=0.035)
    # The nose of a driver facing the camera: nothing is in front of the face.
    (x, y), _ = scene.p2(occ.joints["nose"])
    assert visibility_at(ids, x, y, max(p.order for p in own["nose"])) == V_VISIBLE
    # The ankles are far below a dashboard camera's frame.
    (ax, ay), _ = scene.p2(occ.joints["left_ankle"])
    assert ay >= ids.shape[0]
    assert visibility_at(ids, ax, ay, max(p.order for p in own["left_ankle"])) == V_OUTSIDE


def test_truth_is_consistent_with_the_frame_over_many_scenes() -> None:
    states = set()
    for index in range(12):
        scene = render_scene(5, index, size=(320, 240), hard_share=0.5)
        t = scene.truth
        assert scene.image.size == (320, 240) and scene.image.mode == "RGB"
        assert 1 <= len(t.persons) <= 3
        assert t.persons[0].role == "driver"
        for p in t.persons:
            assert p.keypoints.shape == (INCABIN17.num_keypoints, 3)
            inside = (p.keypoints[:, 0] >= 0) & (p.keypoints[:, 0] < 320) & (p.keypoints[:, 1] >= 0) & (
                p.keypoints[:, 1] < 240)
            assert np.all((p.keypoints[:, 2] == V_OUTSIDE) == ~inside)
            states |= set(p.keypoints[:, 2].astype(int).tolist())
            left, top, w, h = p.head_box
            assert w > 0 and h > 0 and left >= 0 and top >= 0 and left + w <= 320 + 1e-6 and top + h <= 240 + 1e-6
            bl, bt, bw, bh = p.bbox
            assert bw > 0 and bh > 0 and bl + bw <= 320 and bt + bh <= 240
    assert states == {V_OUTSIDE, V_OCCLUDED, V_VISIBLE}


def test_hard_share_controls_hard_scenes() -> None:
    assert not any(render_scene(1, i, size=SMALL, hard_share=0.0).truth.hard for i in range(6))
    assert all(render_scene(1, i, size=SMALL, hard_share=1.0).truth.hard for i in range(6))


@pytest.mark.parametrize("kwargs", [{"hard_share": 1.5}, {"size": (10, 10)}])
def test_bad_generator_arguments_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        render_scene(0, 0, **kwargs)


def test_negative_seed_is_refused() -> None:
    with pytest.raises(ValueError, match="seed"):
        render_scene(-1, 0, size=SMALL)


# --- the manifest contract -------------------------------------------------------------------------------


def test_manifest_lines_follow_the_project_formats(tmp_path: Path) -> None:
    settings = Settings()
    uri = generate_dataset(str(tmp_path / "out"), 5, seed=2, size=SMALL, progress=False)
    lines = read_manifest(uri)
    assert len(lines) == 5
    for index, line in enumerate(lines):
        assert line.source_ref == storage.join(str(tmp_path / "out"), "images", f"{image_stem(2, index)}.jpg")
        assert Path(line.source_ref).is_file()
        with Image.open(line.source_ref) as img:
            assert img.format == "JPEG" and img.size == SMALL
        boxes, box_meta = line.boxes(settings.labeling.head_label_attribute)
        kp, kp_meta = line.keypoints(settings.labeling.keypoint_label_attribute)
        assert box_meta.class_map == {"0": "head"} and box_meta.human_annotated == "yes"
        assert box_meta.job_name == "synthetic-truth" and box_meta.creation_date == kp_meta.creation_date
        assert kp.keypoint_schema == "incabin17"
        kp.check_schema(INCABIN17.names)
        assert len(kp.persons) == len(boxes.annotations) >= 1
        assert [p.head_box_index for p in kp.persons] == list(range(len(kp.persons)))
        info = line.data[SYNTH_KEY]
        assert info["seed"] == 2 and info["index"] == index
        assert info["camera"] in ("dashboard", "overhead") and info["mode"] in ("ir", "rgb")
        assert isinstance(info["hard"], bool)


def test_stems_are_unique_across_seeds() -> None:
    assert image_stem(1, 12) != image_stem(11, 2)
    assert image_stem(3, 7) == "s3-000007"


def test_generate_to_s3(aws_mock: None) -> None:
    from alp import aws

    aws.client("s3").create_bucket(Bucket="synth-bucket")
    uri = generate_dataset("s3://synth-bucket/pool", 2, seed=4, size=SMALL, progress=False, preview=True)
    assert uri == "s3://synth-bucket/pool/manifest.jsonl"
    lines = read_manifest(uri)
    assert [line.source_ref for line in lines] == [f"s3://synth-bucket/pool/images/s4-00000{i}.jpg" for i in range(2)]
    assert storage.read_bytes(lines[0].source_ref)[:2] == b"\xff\xd8"
    assert storage.read_bytes("s3://synth-bucket/pool/preview.png")[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_writes_images_manifest_and_preview(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    rc = main(["synth-data", "--n", "3", "--seed", "9", "--out", str(out), "--width", "160", "--height", "120",
               "--preview", "--quiet"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["manifest"] == str(out / "manifest.jsonl")
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"s9-00000{i}.jpg" for i in range(3)]
    with Image.open(out / "preview.png") as sheet:
        assert sheet.format == "PNG" and sheet.width >= 160


def test_cli_refuses_a_bad_hard_share(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["synth-data", "--n", "1", "--out", str(tmp_path), "--hard-share", "2"])
