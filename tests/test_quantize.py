"""int8 bundles: what stays float, that the quantized graph runs in the engine, and the clear refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from bundle_factory import scripted_bundle, untrained_bundle

from alp.schema import INCABIN17
from inference.letterbox import letterbox_batch
from inference.onnx_models import OnnxYoloModel
from training.quantize import calibration_batches, float_nodes, head_prefix, quantize_int8

IMGSZ = 160


def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [letterbox_batch([rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)], IMGSZ)[0] for _ in range(n)]


def test_the_heads_decode_part_and_each_branchs_last_layer_stay_float():
    graph = onnx.load(str(untrained_bundle(imgsz=IMGSZ) / "pose_main.onnx")).graph
    prefix = head_prefix(graph)
    assert prefix == "/model.23/"  # yolo11's Pose head
    keep = set(float_nodes(graph))
    assert keep and all(name.startswith(prefix) for name in keep)
    # the final concat mixing pixel boxes with 0-1 scores, and the last conv of every branch, stay float
    outputs = {o.name for o in graph.output}
    assert any(outputs & set(n.output) for n in graph.node if n.name in keep)
    assert {f"{prefix}cv{b}.{i}/cv{b}.{i}.2/Conv" for b in (2, 3, 4) for i in range(3)} <= keep
    # the branch bodies and everything before the head are quantized
    assert f"{prefix}cv2.0/cv2.0.0/conv/Conv" not in keep
    assert not any(n.name.startswith("/model.0/") for n in graph.node if n.name in keep)


def test_an_int8_graph_runs_in_the_engine_with_the_same_output_layout(tmp_path: Path):
    src = untrained_bundle(imgsz=IMGSZ) / "pose_main.onnx"
    dst = quantize_int8(src, tmp_path / "pose_main.int8.onnx", _frames(4))
    ops = {n.op_type for n in onnx.load(str(dst)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    fp32 = OnnxYoloModel(src, task="pose", num_keypoints=INCABIN17.num_keypoints)
    int8 = OnnxYoloModel(dst, task="pose", num_keypoints=INCABIN17.num_keypoints)
    batch = _frames(1, seed=5)[0]
    a, b = fp32.run(batch), int8.run(batch)
    assert a.shape == b.shape
    # boxes stay in input pixels and scores in 0-1: quantizing the output concat would have rounded
    # every score to 0 (one int8 scale for 0-160 px and 0-1 probabilities)
    scores_a, scores_b = a[0, 4], b[0, 4]
    assert 0.0 < scores_b.max() <= 1.0
    assert np.abs(scores_a - scores_b).max() < 0.05
    assert np.abs(a[0, :4] - b[0, :4]).mean() < 2.0  # pixels


def test_a_graph_that_is_not_an_ultralytics_export_is_refused_with_a_reason(tmp_path: Path):
    scripted = scripted_bundle(tmp_path / "scripted")
    with pytest.raises(ValueError, match="cannot find the YOLO head"):
        quantize_int8(Path(scripted) / "pose_main.onnx", tmp_path / "x.onnx", _frames(1))


def test_quantizing_needs_calibration_images(tmp_path: Path):
    with pytest.raises(ValueError, match="calibration"):
        quantize_int8(untrained_bundle(imgsz=IMGSZ) / "head.onnx", tmp_path / "x.onnx", [])


def test_calibration_skips_unreadable_files_and_stops_at_the_cap(tmp_path: Path):
    from PIL import Image

    good = []
    for i in range(3):
        path = tmp_path / f"ok{i}.png"
        Image.new("RGB", (96, 64), (i * 40, 80, 120)).save(path)
        good.append(str(path))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    batches = calibration_batches([str(bad), *good], IMGSZ, max_images=2)
    assert len(batches) == 2
    assert batches[0].shape == (1, 3, 128, 160) and batches[0].dtype == np.float32


def test_quantize_bundle_writes_a_verified_int8_copy_and_compares_accuracy(tmp_path: Path, capsys):
    import json

    from alp.bundle import load_bundle
    from alp.cli import main
    from alp.synth.dataset import generate_dataset

    manifest = generate_dataset(str(tmp_path / "synth"), 4, seed=3, size=(160, 120), progress=False)
    out = tmp_path / "int8"
    rc = main(["quantize-bundle", "--bundle", str(untrained_bundle(imgsz=IMGSZ)), "--calibration", manifest,
               "--out", str(out), "--compare-on", manifest, "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["calibration_images"] == 4 and result["bundle_id"].endswith("-int8")
    assert set(result["fp32"]) == set(result["int8"]) >= {"box_map50", "kpt_oks_map50"}
    desc = load_bundle(str(out), tmp_path / "cache").descriptor  # hashes verified
    assert {m.precision for m in desc.models.values()} == {"int8"}
    assert desc.training["quantized_from"] != desc.bundle_id
    # an int8 bundle is not quantized twice
    rc = main(["quantize-bundle", "--bundle", str(out), "--calibration", manifest, "--out", str(tmp_path / "x")])
    assert rc != 0 and "already int8" in capsys.readouterr().err
