"""Static int8 quantization of exported YOLO graphs, calibrated on training images.

Why int8: on the CPUs the labeling pipeline runs on (CodeBuild, SageMaker Processing, a laptop), the three
fp32 models are ~90% of the inference time, and int8 convolutions (VNNI) run the same graph markedly faster.

What stays float: the decode part of the Detect/Pose head. Its final tensor concatenates box coordinates
in input pixels (0-640) with sigmoid scores (0-1) and keypoint values; one int8 scale for all of them rounds
every score to zero (measured: box and keypoint mAP50 0.0 after naive quantization of a trained bundle).
Only the head's branch convolutions before each branch's last layer are quantized, plus the whole
backbone and neck.

Accuracy is not assumed: the training pipeline's Evaluate step scores the bundle as shipped (int8 when
``training.onnx_precision`` says so) and the gate compares that against the champion.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from alp import storage

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def head_prefix(graph: Any) -> str:
    """The module prefix of the Detect/Pose head (``/model.23/`` for yolo11): the module of the output node."""
    output_names = {o.name for o in graph.output}
    for node in graph.node:
        if output_names & set(node.output):
            match = re.match(r"^(/model\.\d+/)", node.name)
            if match:
                return match.group(1)
    raise ValueError("cannot find the YOLO head: the output node has no '/model.<n>/' name (not an ultralytics "
                     "export?)")


def float_nodes(graph: Any) -> list[str]:
    """Nodes to keep in float: the head's decode part and each branch's last layer (see the module doc)."""
    prefix = head_prefix(graph)
    branch_body = re.compile(re.escape(prefix) + r"cv[234]\.\d+/cv[234]\.\d+\.[01]/")
    return [n.name for n in graph.node if n.name.startswith(prefix) and not branch_body.match(n.name)]


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over NCHW float32 batches."""

    def __init__(self, input_name: str, batches: Iterable[NDArray[np.float32]]):
        self._it: Iterator[dict[str, NDArray[np.float32]]] = ({input_name: b} for b in batches)

    def get_next(self) -> dict[str, NDArray[np.float32]] | None:
        return next(self._it, None)


def quantize_int8(src: str | Path, dst: str | Path, calibration: Sequence[NDArray[np.float32]]) -> Path:
    """Write an int8 (QDQ, per-channel weights, uint8 activations, MinMax calibration) copy of ``src``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise ValueError("int8 quantization needs at least one calibration image")
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="alp-quantize-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        # Constant folding and shape inference first (onnxruntime's recommended pre-step); the symbolic
        # pass cannot resolve the dynamic height/width and is skipped.
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        model = onnx.load(str(pre))
        input_name = model.graph.input[0].name
        quantize_static(
            str(pre), str(Path(tmp) / "int8.onnx"), _Calibration(input_name, calibration),
            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=float_nodes(model.graph),
        )
        shutil.move(str(Path(tmp) / "int8.onnx"), dst)
    return dst


def calibration_batches(image_uris: Sequence[str], imgsz: int, *, max_images: int,
                        limits: Any = None) -> list[NDArray[np.float32]]:
    """Letterboxed single-image batches (what the engine feeds the models) from the first ``max_images``
    readable images. Unreadable or missing files are skipped: calibration needs a sample, not every file
    (the dataset already quarantined bad input). ``limits``: the deployed ``settings.inference``."""
    from alp.settings import InferenceSettings
    from inference.image_io import ImageRejected, decode_image
    from inference.letterbox import letterbox_batch

    limits = limits or InferenceSettings()
    out: list[NDArray[np.float32]] = []
    for uri in image_uris:
        if len(out) >= max_images:
            break
        try:
            decoded = decode_image(storage.read_bytes(uri), max_pixels=limits.max_image_pixels,
                                   min_side=limits.min_image_side)
        except (ImageRejected, storage.ObjectNotFound, OSError):
            continue
        out.append(letterbox_batch([decoded.pixels], imgsz)[0])
    return out


def training_images(prepared_uri: str) -> list[str]:
    """The prepared dataset's training images (path or s3:// prefix), sorted for a stable calibration set."""
    prefix = storage.join(prepared_uri, "images/train/")
    return sorted(u for u in storage.list_uris(prefix) if u.lower().endswith(IMAGE_SUFFIXES))


def quantize_bundle(src_uri: str, dest_uri: str, image_uris: Sequence[str], *, max_images: int,
                    cache_dir: str | Path, limits: Any = None) -> Any:
    """An int8 copy of a verified fp32 bundle at ``dest_uri`` (id ``<id>-int8``), calibrated on ``image_uris``.

    For bundles trained before int8 was the default, or to measure what int8 costs on your own data
    (``alp quantize-bundle --compare-on``). The source is hash-checked before anything is read from it; its
    training checkpoints (warm starts need them) are copied after the same check; its metrics are not
    carried over (they were measured on the fp32 graphs: the Evaluate step measures the copy).
    """
    from datetime import UTC, datetime

    from alp.bundle import DESCRIPTOR_NAME, MODEL_ROLES, load_bundle, sha256_file, write_bundle

    if src_uri.rstrip("/") == dest_uri.rstrip("/"):
        raise ValueError("--out must differ from --bundle: the source bundle stays as registered")
    if storage.exists(storage.join(dest_uri, DESCRIPTOR_NAME)):
        raise ValueError(f"{dest_uri} already holds a bundle; choose an empty destination")
    loaded = load_bundle(src_uri, cache_dir)
    desc = loaded.descriptor
    if any(m.precision == "int8" for m in desc.models.values()):
        raise ValueError(f"bundle {desc.bundle_id} is already int8")
    calibration = calibration_batches(image_uris, desc.imgsz, max_images=max_images, limits=limits)
    if not calibration:
        raise ValueError("no readable calibration images")
    checkpoints: dict[str, Any] = desc.training.get("checkpoints") or {}
    with tempfile.TemporaryDirectory(prefix="alp-int8-bundle-") as tmp:
        files = {}
        models = {}
        for role in MODEL_ROLES:
            entry = desc.models[role]
            files[role] = quantize_int8(loaded.paths[role], Path(tmp) / entry.file, calibration)
            models[role] = entry.model_copy(update={"sha256": sha256_file(files[role]), "precision": "int8",
                                                    "calibration_images": len(calibration)})
        copied: list[tuple[str, Path]] = []
        for name, record in checkpoints.items():
            storage.validate_key(record["file"])
            local = Path(tmp) / "checkpoints" / f"{name}.pt"
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(storage.read_bytes(storage.join(src_uri, record["file"])))
            if sha256_file(local) != record["sha256"]:
                raise ValueError(f"{src_uri}: checkpoint {record['file']} does not match its recorded sha256")
            copied.append((record["file"], local))
        new = desc.model_copy(update={
            "models": models, "bundle_id": f"{desc.bundle_id[:123]}-int8", "metrics": {},
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f"),
            "training": {**desc.training, "quantized_from": desc.bundle_id},
        })
        for key, local in copied:
            storage.write_bytes(storage.join(dest_uri, key), local.read_bytes())
        write_bundle(dest_uri, new, files)
    return new
