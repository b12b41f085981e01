"""Model bundles for tests.

* :func:`untrained_bundle`: three untrained ultralytics models (yolo11n from the architecture YAMLs)
  exported to ONNX through ``training.export.make_bundle``; built once and cached on disk under the
  temp dir (keyed by schema, imgsz and the ultralytics version), so later sessions reuse it. Real
  exports, real layout; its detections are noise.
* :func:`scripted_bundle`: three small hand-written ONNX graphs with the exact YOLO output layout whose
  confidences equal the input image's mean brightness. A bright frame yields a confident person, head
  and keypoints; a dark one the same geometry with low confidence. Tests use it to drive every route
  end to end through the real decoder, letterbox, NMS, matching and judgement.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from alp.bundle import MODEL_ROLES, BundleDescriptor, ModelFile, ModelRole, sha256_file, write_bundle
from alp.schema import KeypointSchema, get_schema

CACHE_ROOT = Path(tempfile.gettempdir()) / "alp-test-bundles"

# Scripted geometry, in input pixels of a 320x256 letterbox (an image of exactly that size maps 1:1).
SCRIPTED_IMGSZ = 320
PERSON_BOX = (110.0, 28.0, 210.0, 228.0)  # xyxy
HEAD_BOX = (145.0, 35.0, 175.0, 65.0)
VISIBLE_FACTOR_OCCLUDED = 0.5  # the visible-only model's confidence factor for the last two keypoints


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def untrained_bundle(schema: str = "incabin17", imgsz: int = 160) -> Path:
    """A folder holding an untrained, exported bundle (built once per machine, then reused)."""
    import ultralytics

    key = f"untrained-{schema}-{imgsz}-ul{ultralytics.__version__}"
    target = CACHE_ROOT / key
    with _locked(CACHE_ROOT / f"{key}.lock"):
        if (target / "bundle.json").is_file():
            return target
        from training.export import build_model, make_bundle

        sch = get_schema(schema)
        work = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=CACHE_ROOT))
        try:
            config = CACHE_ROOT / "ultralytics-config"
            head = build_model("detect", sch, seed=0, config_dir=config)
            main = build_model("pose", sch, seed=1, config_dir=config)
            visible = build_model("pose", sch, seed=2, config_dir=config)
            make_bundle(work, head, main, visible, imgsz, sch, dataset_version=None,
                        training={"note": "untrained test bundle"}, config_dir=config)
            os.replace(work, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def scripted_keypoints(num_keypoints: int) -> list[tuple[float, float]]:
    """Where the scripted pose graphs put each keypoint (input pixels, unshifted)."""
    hx, hy = (HEAD_BOX[0] + HEAD_BOX[2]) / 2, (HEAD_BOX[1] + HEAD_BOX[3]) / 2
    # Face points spread inside the head box, body points down the person box.
    return [(hx - 10 + (k % 5) * 5 if k < 7 else PERSON_BOX[0] + 10 + (k % 4) * 25,
             hy - 5 + (k % 3) * 5 if k < 7 else PERSON_BOX[1] + 60 + (k - 7) * 12) for k in range(num_keypoints)]


def _scripted_graph(path: Path, *, task: str, num_keypoints: int, visible_factors: np.ndarray | None,
                    shift: tuple[float, float] = (0.0, 0.0)) -> None:
    """A YOLO-layout ONNX graph: one candidate anchor whose confidences are the image's mean brightness.

    ``shift`` moves the whole predicted geometry (boxes and keypoints) by (dx, dy) input pixels.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    anchors = 4
    channels = 4 + 1 + (3 * num_keypoints if task == "pose" else 0)
    base = np.zeros((1, channels, anchors), dtype=np.float32)
    conf_mask = np.zeros_like(base)
    box = HEAD_BOX if task == "detect" else PERSON_BOX
    cx, cy, w, h = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]
    dx, dy = shift
    base[0, :4, 0] = (cx + dx, cy + dy, w, h)
    conf_mask[0, 4, 0] = 1.0
    # Other anchors: boxes elsewhere with zero confidence (dropped by the confidence filter).
    for a in range(1, anchors):
        base[0, :4, a] = (20.0 * a, 20.0, 10.0, 10.0)
    if task == "pose":
        for k, (x, y) in enumerate(scripted_keypoints(num_keypoints)):
            base[0, 5 + 3 * k, 0] = x + dx
            base[0, 5 + 3 * k + 1, 0] = y + dy
            conf_mask[0, 5 + 3 * k + 2, 0] = 1.0 if visible_factors is None else float(visible_factors[k])
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=1, axes=[1, 2, 3]),
        helper.make_node("Reshape", ["mean", "shape3"], ["conf"]),
        helper.make_node("Mul", ["conf", "conf_mask"], ["scaled"]),
        helper.make_node("Add", ["scaled", "base"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes, f"scripted-{task}",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", channels, anchors])],
        initializer=[
            numpy_helper.from_array(base, "base"), numpy_helper.from_array(conf_mask, "conf_mask"),
            numpy_helper.from_array(np.array([-1, 1, 1], dtype=np.int64), "shape3"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def scripted_bundle(dest: str | Path, schema: KeypointSchema | None = None, bundle_id: str = "scripted-v1",
                    occluded_keypoints: int = 2, shift: tuple[float, float] = (0.0, 0.0)) -> Path:
    """Write a scripted bundle to ``dest``: bright images -> confident detections, dark -> weak ones.

    The visible-only model reports ``VISIBLE_FACTOR_OCCLUDED`` x the brightness for the last
    ``occluded_keypoints`` keypoints, so those come out occluded on a bright frame. ``shift`` moves every
    predicted box and keypoint by (dx, dy) input pixels: a deliberately misplaced, worse bundle.
    """
    sch = schema or get_schema("incabin17")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    k = sch.num_keypoints
    factors = np.ones(k, dtype=np.float32)
    if occluded_keypoints:
        factors[-occluded_keypoints:] = VISIBLE_FACTOR_OCCLUDED
    specs: dict[ModelRole, tuple[str, np.ndarray | None]] = {
        "head": ("detect", None), "pose_main": ("pose", None), "pose_visible": ("pose", factors),
    }
    files: dict[ModelRole, Path] = {}
    entries: dict[ModelRole, ModelFile] = {}
    for role in MODEL_ROLES:
        task, vis = specs[role]
        path = dest / f"{role}.onnx"
        _scripted_graph(path, task=task, num_keypoints=k, visible_factors=vis, shift=shift)
        files[role] = path
        entries[role] = ModelFile(file=path.name, sha256=sha256_file(path), task=task,  # type: ignore[arg-type]
                                  input_size=(0, 0), class_names=("head",) if task == "detect" else ("person",))
    desc = BundleDescriptor(bundle_id=bundle_id, created_at="2026-01-01T00:00:00.000000",
                            imgsz=SCRIPTED_IMGSZ, keypoint_schema=sch.name, keypoint_names=sch.names,
                            models=entries, dataset_version="v0000", metrics={"note": "scripted"})
    write_bundle(str(dest), desc, files)
    return dest


def bright_image(value: int = 240, size: tuple[int, int] = (SCRIPTED_IMGSZ, 256)) -> np.ndarray:
    """An RGB frame (width, height = ``size``) of uniform ``value``: the scripted bundle's confidence."""
    w, h = size
    return np.full((h, w, 3), value, dtype=np.uint8)
