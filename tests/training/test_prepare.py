"""Dataset version -> three YOLO datasets: visibility mapping, splits, YAMLs, bad lines, S3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from alp import storage
from alp.manifest import (
    BoundingBoxLabel,
    BoxAnnotation,
    ImageSize,
    Keypoint,
    KeypointLabel,
    ManifestLine,
    PersonKeypoints,
    write_manifest,
)
from alp.schema import COCO17, INCABIN17
from alp.settings import Settings
from alp.synth.truth import truth_line_from_labels
from training.prepare import (
    PreparationError,
    fetch_prepared,
    head_label_lines,
    load_prepared,
    pose_label_lines,
    prepare_training,
    yolo_box,
)
from training.sample_data import draw_sample, write_sample_version

W, H = 200, 100


def _person(vs: list[int]) -> PersonKeypoints:
    kps = [Keypoint(name=n, x=10.0 + 5 * i, y=20.0 + 2 * i, v=v) for i, (n, v) in enumerate(zip(INCABIN17.names, vs))]
    return PersonKeypoints(keypoints=kps, bbox=[10.0, 10.0, 100.0, 80.0], head_box_index=0)


def _kp_label(vs: list[int]) -> KeypointLabel:
    return KeypointLabel(image_size=[ImageSize(width=W, height=H)], persons=[_person(vs)])


def _triples(line: str) -> list[tuple[float, float, int]]:
    parts = line.split()
    assert parts[0] == "0" and len(parts) == 5 + 17 * 3
    kp = parts[5:]
    return [(float(kp[i]), float(kp[i + 1]), int(kp[i + 2])) for i in range(0, len(kp), 3)]


def test_visibility_maps_to_both_pose_sets():
    vs = [2, 1, 0] * 5 + [2, 1]
    label = _kp_label(vs)
    main = _triples(pose_label_lines(label, W, H, "pose_main")[0])
    visible = _triples(pose_label_lines(label, W, H, "pose_visible")[0])
    assert [t[2] for t in main] == vs  # visible 2, occluded 1, outside 0
    assert [t[2] for t in visible] == [2 if v == 2 else 0 for v in vs]  # occluded -> 0 too
    # points that end as v=0 carry no coordinates; labeled points are normalized
    for (x, y, v), src in zip(visible, label.persons[0].keypoints):
        if v == 0:
            assert (x, y) == (0.0, 0.0)
        else:
            assert x == pytest.approx(src.x / W, abs=1e-6) and y == pytest.approx(src.y / H, abs=1e-6)
    x, y, v = main[1]  # occluded in the main set keeps its location
    assert v == 1 and x == pytest.approx(label.persons[0].keypoints[1].x / W, abs=1e-6)


def test_person_box_and_head_boxes_are_normalized_and_clipped():
    line = pose_label_lines(_kp_label([2] * 17), W, H, "pose_main")[0].split()
    assert [float(v) for v in line[1:5]] == pytest.approx([0.3, 0.5, 0.5, 0.8])
    boxes = BoundingBoxLabel(image_size=[ImageSize(width=W, height=H)], annotations=[
        BoxAnnotation(left=-10, top=10, width=30, height=20),  # crosses the left border
        BoxAnnotation(left=250, top=10, width=30, height=20),  # entirely outside: dropped
    ])
    lines = head_label_lines(boxes, W, H)
    assert len(lines) == 1
    assert [float(v) for v in lines[0].split()[1:]] == pytest.approx([0.05, 0.2, 0.1, 0.2])
    assert yolo_box(0, 0, 0, 10, W, H) is None


def test_a_person_without_a_box_gets_one_from_its_labeled_points():
    person = _person([2] * 17).model_copy(update={"bbox": None})
    label = KeypointLabel(image_size=[ImageSize(width=W, height=H)], persons=[person])
    cx, cy, bw, bh = (float(v) for v in pose_label_lines(label, W, H, "pose_main")[0].split()[1:5])
    xs = [k.x / W for k in person.keypoints]
    assert cx - bw / 2 <= min(xs) and cx + bw / 2 >= max(xs)


def test_a_version_becomes_three_datasets_and_the_test_split_is_never_written(tmp_path):
    settings = Settings()
    version = write_sample_version(str(tmp_path / "data"), settings, n_train=4, n_val=2, n_test=3)
    out = tmp_path / "yolo"
    summary = prepare_training(version, str(out), settings)
    assert summary.counts == {"train": 4, "val": 2} and summary.test_images_held_out == 3
    assert summary.dataset_version == "v0001" and not summary.skipped
    test_refs = {json.loads(x)["source-ref"] for x in (Path(version) / "manifest.jsonl").read_text().splitlines()
                 if json.loads(x)["alp-split"] == "test"}
    assert not test_refs & set(summary.files.values())
    assert len(list((out / "images").rglob("*.jpg"))) == 6

    for model in ("head", "pose_main", "pose_visible"):
        data = yaml.safe_load((out / f"{model}.yaml").read_text())
        assert Path(data["path"]).is_absolute() and (Path(data["path"]) / data["val"]).is_dir()
        view = Path(data["path"])
        assert len(list((view / "images" / "train").iterdir())) == 4
        assert len(list((view / "labels" / "train").iterdir())) == 4
        if model == "head":
            assert data["names"] == {0: "head"} and "kpt_shape" not in data
        else:
            assert data["kpt_shape"] == [17, 3] and data["flip_idx"] == INCABIN17.flip_idx
    # the same image has the same label in both pose sets except for occluded points
    main = sorted((out / "labels_pose_main" / "train").glob("*.txt"))
    vis = sorted((out / "labels_pose_visible" / "train").glob("*.txt"))
    occluded_seen = False
    for a, b in zip(main, vis):
        for la, lb in zip(a.read_text().splitlines(), b.read_text().splitlines()):
            for (xa, ya, va), (_, _, vb) in zip(_triples(la), _triples(lb)):
                assert vb == (2 if va == 2 else 0)
                occluded_seen |= va == 1
    assert occluded_seen, "the sample data should contain occluded points"


def test_coco17_schema_writes_its_own_flip_idx(tmp_path):
    settings = Settings(keypoint_schema="coco17")
    version = write_sample_version(str(tmp_path / "data"), settings, n_train=2, n_val=0, n_test=0)
    summary = prepare_training(version, str(tmp_path / "yolo"), settings)
    data = yaml.safe_load((tmp_path / "yolo" / "pose_main.yaml").read_text())
    assert data["flip_idx"] == COCO17.flip_idx and summary.val_from_train and data["val"] == "images/train"


def test_bad_lines_are_skipped_with_reasons_and_nothing_usable_is_an_error(tmp_path):
    settings = Settings()
    root = tmp_path / "data"
    data, boxes, kps = draw_sample(settings.schema_, 1)
    good = root / "good.jpg"
    root.mkdir()
    good.write_bytes(data)
    (root / "broken.jpg").write_bytes(b"not an image")

    def line(ref: Path, split: str, heads: BoundingBoxLabel = boxes, keypoints: KeypointLabel = kps) -> ManifestLine:
        return truth_line_from_labels(str(ref), heads, keypoints, settings, job_name="", head_confidence=None,
                                      extra={"alp-split": split})

    wrong_size = [ImageSize(width=10, height=10)]
    lines = [
        line(good, "train"),
        line(root / "broken.jpg", "train"),
        line(root / "missing.jpg", "val"),
        line(good, "holdout"),
        ManifestLine.for_image(str(good), **{"alp-split": "train"}),  # no labels
        line(good, "val", boxes.model_copy(update={"image_size": wrong_size}),
             kps.model_copy(update={"image_size": wrong_size})),
    ]
    version = root / "datasets" / "v0002"
    write_manifest(str(version / "manifest.jsonl"), lines)
    summary = prepare_training(str(version), str(tmp_path / "yolo"), settings)
    assert summary.counts["train"] == 1
    reasons = " | ".join(s.reason for s in summary.skipped)
    assert len(summary.skipped) == 5
    for expected in ("cannot identify image", "no such file", "alp-split", "no head-box label", "label says 10x10"):
        assert expected in reasons

    write_manifest(str(version / "manifest.jsonl"), lines[1:3])
    with pytest.raises(PreparationError, match="no usable train images"):
        prepare_training(str(version), str(tmp_path / "yolo2"), settings)


def test_a_non_empty_foreign_folder_is_not_overwritten(tmp_path):
    settings = Settings()
    version = write_sample_version(str(tmp_path / "data"), settings, n_train=1, n_val=0, n_test=0)
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(PreparationError, match="refusing"):
        prepare_training(version, str(precious), settings)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_a_preparation_killed_half_way_leaves_no_half_folder_and_the_rerun_succeeds(tmp_path, monkeypatch):
    """The data is built beside the target and moved into place whole: a build killed during the conversion
    leaves at most a `.partial-*` sibling, which the re-run removes; the target is never half written."""
    import training.prepare as prepare

    settings = Settings()
    version = write_sample_version(str(tmp_path / "data"), settings, n_train=2, n_val=1, n_test=0)
    out = tmp_path / "yolo"
    real = prepare.convert_lines

    def killed(lines, root, *args, **kwargs):
        (root / "images").mkdir()
        (root / "images" / "half.jpg").write_bytes(b"half")
        raise SystemExit(137)  # what a killed build looks like to the code around it

    monkeypatch.setattr(prepare, "convert_lines", killed)
    with pytest.raises(SystemExit):
        prepare_training(version, str(out), settings)
    assert not out.exists() and not list(tmp_path.glob("yolo.partial-*"))
    (tmp_path / "yolo.partial-99999").mkdir()  # what a SIGKILL (no unwinding) leaves behind

    monkeypatch.setattr(prepare, "convert_lines", real)
    summary = prepare_training(version, str(out), settings)
    assert summary.counts == {"train": 2, "val": 1} and (out / "prepared.json").is_file()
    assert not list(tmp_path.glob("yolo.partial-*"))
    data = yaml.safe_load((out / "pose_main.yaml").read_text())
    assert Path(data["path"]).resolve().is_relative_to(out.resolve())  # the views name the final folder
    view = Path(data["path"]) / "images" / "train"
    assert all(link.resolve().is_file() for link in view.iterdir())


def test_prepared_data_on_s3_round_trips_and_rebuilds_views(aws_mock, tmp_path):
    from alp import aws

    aws.client("s3").create_bucket(Bucket="alp-data")
    settings = Settings()
    version = write_sample_version("s3://alp-data/", settings, n_train=3, n_val=1, n_test=1)
    assert version == "s3://alp-data/datasets/v0001/"
    out = "s3://alp-data/models/candidates/v0001/yolo/"
    prepare_training(version, out, settings)
    keys = list(storage.list_uris(out))
    assert any(k.endswith("prepared.json") for k in keys) and not any("/views/" in k for k in keys)
    local = fetch_prepared(out, tmp_path / "copy")
    summary, yamls = load_prepared(local, settings.schema_)
    assert summary.counts == {"train": 3, "val": 1}
    data = yaml.safe_load(yamls["pose_visible"].read_text())
    assert data["path"].startswith(str(local.resolve()))
    with pytest.raises(PreparationError, match="schema"):
        load_prepared(local, Settings(keypoint_schema="coco17").schema_)


def test_pinned_images_are_checked_as_read_and_unpinned_ones_are_taken_with_one_warning(tmp_path, caplog):
    """Given a version whose first two train records are pinned (alp/pixels.py) and whose others were merged before
    pins, Prepare trains on all of them and warns once about the unpinned; when a pinned copy is replaced, it
    refuses, naming the image."""
    import logging

    from alp.datasets import read_version
    from alp.pixels import pin_copy

    settings = Settings()
    data_root = str(tmp_path / "data") + "/"
    version = write_sample_version(data_root, settings, n_train=4, n_val=1, n_test=0)
    lines = read_version(version)
    pinned = [pin_copy(line, data_root, settings) for line in lines[:2]]
    assert all(line.source_ref.startswith(data_root + "images/sha256/") for line in pinned)
    mixed = tmp_path / "data" / "datasets" / "v0002"
    write_manifest(str(mixed / "manifest.jsonl"), [*pinned, *lines[2:]])
    with caplog.at_level(logging.WARNING, logger="training.prepare"):
        summary = prepare_training(str(mixed), str(tmp_path / "yolo"), settings)
    assert summary.counts == {"train": 4, "val": 1} and not summary.skipped
    assert [r.getMessage() for r in caplog.records if "pinned" in r.getMessage()] == [
        f"prepare: 3 image(s) of {mixed} have no pinned sha256 (a version written before pixels were pinned): read "
        "unchecked"]
    Path(pinned[1].source_ref).write_bytes(Path(lines[3].source_ref).read_bytes())  # another image, same size
    with pytest.raises(PreparationError, match=r"1 image\(s\) changed and 0 missing.*img000_00001.jpg changed"):
        prepare_training(str(mixed), str(tmp_path / "yolo"), settings)
