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


def test_the_heads_decode_part_and_each_branchs_last_layer_stay_float(tmp_path: Path):
    src = untrained_bundle(imgsz=IMGSZ) / "pose_main.onnx"
    graph = onnx.load(str(src)).graph
    prefix = head_prefix(graph)
    assert prefix == "/model.23/"  # yolo11's Pose head
    keep = set(float_nodes(graph))
    assert keep and all(name.startswith(prefix) for name in keep)
    assert {f"{prefix}cv{b}.{i}/cv{b}.{i}.2/Conv" for b in (2, 3, 4) for i in range(3)} <= keep
    assert f"{prefix}cv2.0/cv2.0.0/conv/Conv" not in keep
    assert not any(n.name.startswith("/model.0/") for n in graph.node if n.name in keep)

    # ...and in the quantized graph: nothing feeds the output in int8, the branches' last convs take float
    # weights, while the backbone's first conv reads dequantized int8 weights
    q = onnx.load(str(quantize_int8(src, tmp_path / "q.onnx", _frames(2)))).graph
    producer = {out: n for n in q.node for out in n.output}
    output_node = producer[q.output[0].name]
    assert output_node.op_type != "DequantizeLinear"
    assert all(producer[i].op_type != "DequantizeLinear" for i in output_node.input if i in producer)
    by_name = {n.name: n for n in q.node}
    last_conv = by_name[f"{prefix}cv3.0/cv3.0.2/Conv"]
    assert all(i not in producer or producer[i].op_type != "DequantizeLinear" for i in last_conv.input[1:])
    first_conv = by_name["/model.0/conv/Conv"]
    assert producer[first_conv.input[1]].op_type == "DequantizeLinear"


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
    scores_b = b[0, 4]
    assert 0.0 < scores_b.max() <= 1.0
    assert np.abs(a[0, :4] - b[0, :4]).mean() < 2.0  # pixels: the boxes are the fp32 graph's, give or take


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
    truth = generate_dataset(str(tmp_path / "truth"), 3, seed=4, size=(160, 120), progress=False)
    out = tmp_path / "int8"
    rc = main(["quantize-bundle", "--bundle", str(untrained_bundle(imgsz=IMGSZ)), "--calibration", manifest,
               "--out", str(out), "--compare-on", manifest])
    assert rc != 0 and "also in --compare-on" in capsys.readouterr().err
    rc = main(["quantize-bundle", "--bundle", str(untrained_bundle(imgsz=IMGSZ)), "--calibration", manifest,
               "--out", str(out), "--compare-on", truth, "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["calibration_images"] == 4 and result["bundle_id"].endswith("-int8")
    assert set(result["fp32"]) == set(result["int8"]) >= {"box_map50", "kpt_oks_map50"}
    desc = load_bundle(str(out), tmp_path / "cache").descriptor  # hashes verified
    assert {m.precision for m in desc.models.values()} == {"int8"}
    source = load_bundle(str(untrained_bundle(imgsz=IMGSZ)), tmp_path / "cache").descriptor
    assert desc.training["quantized_from"] == source.bundle_id and desc.metrics == {}
    # an int8 bundle is not quantized twice
    rc = main(["quantize-bundle", "--bundle", str(out), "--calibration", manifest, "--out", str(tmp_path / "x")])
    assert rc != 0 and "already int8" in capsys.readouterr().err
    # the source is never overwritten, and nothing calibrates on the set it is compared on
    rc = main(["quantize-bundle", "--bundle", str(out), "--calibration", manifest, "--out", str(out)])
    assert rc != 0 and "must differ" in capsys.readouterr().err
