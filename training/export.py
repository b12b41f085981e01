"""Build YOLO models from the architecture YAMLs, export them to ONNX, and assemble model bundles.

Training calls :func:`make_bundle` after it trained the three models; tests and benchmarks call it with
untrained models built by :func:`build_model` (plumbing, not accuracy). Exports use a dynamic input
shape so the engine can feed rectangular letterboxed batches (640x480 instead of 640x640).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from numpy.typing import NDArray

from alp.bundle import MODEL_ROLES, BundleDescriptor, ModelFile, ModelRole, sha256_file, write_bundle
from alp.schema import KeypointSchema

Task = Literal["detect", "pose"]
DEFAULT_CONFIG_DIR = Path(tempfile.gettempdir()) / "alp-ultralytics"
# Class names per role: the head detector finds heads, both pose models find persons.
ROLE_TASK: dict[ModelRole, tuple[Task, str]] = {
    "head": ("detect", "head"), "pose_main": ("pose", "person"), "pose_visible": ("pose", "person"),
}


def _ultralytics(config_dir: str | Path | None) -> Any:
    from alp.torch_compat import prepare_ultralytics

    return prepare_ultralytics(config_dir or DEFAULT_CONFIG_DIR)


def build_model(task: Task, schema: KeypointSchema, size: str = "n", arch: str = "yolo11", *,
                seed: int | None = 0, config_dir: str | Path | None = None) -> Any:
    """An untrained ``ultralytics.YOLO`` from the packaged architecture YAML.

    ``detect``: one class ``head``. ``pose``: one class ``person`` with ``kpt_shape [K, 3]`` from the
    schema (the YAML's own COCO shape is replaced before the network is built, so the ONNX output
    carries K keypoints).
    """
    _ultralytics(config_dir)
    import torch
    from ultralytics import YOLO  # type: ignore[attr-defined]
    from ultralytics.nn.tasks import yaml_model_load

    stem = f"{arch}{size}{'-pose' if task == 'pose' else ''}.yaml"
    cfg: dict[str, Any] = yaml_model_load(stem)  # type: ignore[no-untyped-call]  # resolves the scale-free YAML (yolo11-pose.yaml) inside the package
    cfg["nc"] = 1
    cfg["scale"] = size
    cfg.pop("yaml_file", None)
    if task == "pose":
        cfg["kpt_shape"] = [schema.num_keypoints, 3]
        cfg["flip_idx"] = schema.flip_idx
    with tempfile.TemporaryDirectory(prefix="alp-arch-") as tmp:
        path = Path(tmp) / stem
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        if seed is not None:
            torch.manual_seed(seed)
        model: Any = YOLO(str(path), task=task)
    model.model.names = {0: "head" if task == "detect" else "person"}
    return model


def _as_yolo(model_or_pt: Any, config_dir: str | Path | None) -> Any:
    if isinstance(model_or_pt, str | Path):
        _ultralytics(config_dir)
        from ultralytics import YOLO  # type: ignore[attr-defined]

        return YOLO(str(model_or_pt))  # a .pt is a pickle: callers pass only checkpoints they made/verified
    return model_or_pt


def export_onnx(model_or_pt_path: Any, out_path: str | Path, imgsz: int, *, dynamic: bool = True,
                config_dir: str | Path | None = None) -> Path:
    """Export a YOLO model (object or ``.pt`` path) to ONNX at ``out_path`` (no embedded NMS)."""
    model = _as_yolo(model_or_pt_path, config_dir)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="alp-export-") as tmp:
        # The exporter writes next to the model's source file; point it at a private folder so
        # concurrent exports never meet in the working directory.
        model.model.pt_path = str(Path(tmp) / f"{out.stem}.pt")
        produced = model.export(format="onnx", imgsz=imgsz, dynamic=dynamic, simplify=True, device="cpu",
                                verbose=False)
        shutil.move(str(produced), out)
    return out


def save_checkpoint(model: Any, path: str | Path) -> Path:
    """Save a YOLO model as a ``.pt`` checkpoint (for the torch baseline in benchmarks)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(path))
    return path


def _sha_or_none(model: Any) -> str | None:
    if isinstance(model, str | Path) and Path(model).is_file():
        return sha256_file(model)
    return None


def make_bundle(out_dir: str | Path, head_model: Any, main_model: Any, visible_model: Any, imgsz: int,
                schema: KeypointSchema, dataset_version: str | None = None, metrics: dict[str, Any] | None = None,
                training: dict[str, Any] | None = None, *, dynamic: bool = True, bundle_id: str | None = None,
                dest_uri: str | None = None, config_dir: str | Path | None = None,
                precision: Literal["fp32", "int8"] = "fp32",
                calibration: Sequence[NDArray[np.float32]] = ()) -> BundleDescriptor:
    """Export the three models to ONNX in ``out_dir``, hash them and write ``bundle.json``.

    Models may be ``YOLO`` objects or ``.pt`` paths. ``dest_uri`` (a path or s3:// prefix) additionally
    uploads the bundle there. The bundle id defaults to ``<dataset_version or 'untrained'>-<hash>``,
    the hash covering the three ONNX files. ``precision="int8"`` quantizes each graph statically with
    ``calibration`` (letterboxed training images; see :mod:`training.quantize`).
    """
    if precision == "int8" and not calibration:
        raise ValueError("an int8 bundle needs calibration images (letterboxed training images)")
    if precision == "int8" and not dynamic:
        raise ValueError("int8 export is calibrated with rectangular letterboxes: it needs dynamic=True")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources = {"head": head_model, "pose_main": main_model, "pose_visible": visible_model}
    files: dict[ModelRole, Path] = {}
    entries: dict[ModelRole, ModelFile] = {}
    for role in MODEL_ROLES:
        task, class_name = ROLE_TASK[role]
        path = out / f"{role}.onnx"
        if precision == "int8":
            from training.quantize import quantize_int8

            fp32 = export_onnx(sources[role], out / "fp32" / f"{role}.onnx", imgsz, dynamic=dynamic,
                               config_dir=config_dir)
            quantize_int8(fp32, path, calibration)
            shutil.rmtree(out / "fp32", ignore_errors=True)
        else:
            export_onnx(sources[role], path, imgsz, dynamic=dynamic, config_dir=config_dir)
        files[role] = path
        entries[role] = ModelFile(
            file=path.name, sha256=sha256_file(path), task=task,
            input_size=(0, 0) if dynamic else (imgsz, imgsz), class_names=(class_name,),
            source_checkpoint_sha256=_sha_or_none(sources[role]), precision=precision,
            calibration_images=len(calibration) if precision == "int8" else None,
        )
    content = hashlib.sha256("".join(entries[r].sha256 for r in MODEL_ROLES).encode()).hexdigest()[:12]
    descriptor = BundleDescriptor(
        bundle_id=bundle_id or f"{dataset_version or 'untrained'}-{content}",
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f"),
        imgsz=imgsz, keypoint_schema=schema.name, keypoint_names=schema.names, models=entries,
        dataset_version=dataset_version, metrics=metrics or {}, training=training or {},
    )
    write_bundle(str(out), descriptor, files)
    if dest_uri:
        write_bundle(dest_uri, descriptor, files)
    return descriptor
