"""Dataset version -> the three YOLO datasets the bundle's models train on.

* ``head``: the head detector, one class (``head``), boxes from the head-box label.
* ``pose_main``: persons (class 0, the person box) with every keypoint; COCO visibility kept
  (visible -> 2, occluded -> 1, outside -> 0), so the model learns to locate occluded points too.
* ``pose_visible``: the same persons, but occluded points become ``v=0``: this model's confidence says
  "visible", and the two confidences together give the three-state visibility at inference.

Images are stored once (``images/<split>/``) with one label folder per model (``labels_<model>/``), which
is what goes to S3. Ultralytics finds labels by replacing ``/images/`` with ``/labels/`` in each image
path, so :func:`materialize_views` builds a per-model view (``views/<model>/images`` and ``labels``, two
symlinks) and the dataset YAML with absolute paths wherever the data lands (CodeBuild, the SageMaker
job, a laptop). The frozen ``test`` split is never written here: nothing trains on it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field

from alp import storage
from alp.manifest import (
    BoundingBoxLabel,
    KeypointLabel,
    ManifestError,
    ManifestLine,
    PersonKeypoints,
    read_manifest,
)
from alp.pixels import (
    PinnedImage,
    PixelReport,
    PixelsChanged,
    PixelsMissing,
    describe_problems,
    image_name,
    pinned_sha256,
    read_pinned,
)
from alp.schema import V_OCCLUDED, V_OUTSIDE, V_VISIBLE, KeypointSchema
from alp.settings import Settings

log = logging.getLogger(__name__)

ModelName = Literal["head", "pose_main", "pose_visible"]
MODEL_NAMES: tuple[ModelName, ...] = ("head", "pose_main", "pose_visible")
TRAIN_SPLITS = ("train", "val")
SPLIT_KEY = "alp-split"
SUMMARY_NAME = "prepared.json"
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")

# visibility on the wire -> the label each pose set trains on
VISIBILITY_MAPS: dict[str, dict[int, int]] = {
    "pose_main": {V_VISIBLE: 2, V_OCCLUDED: 1, V_OUTSIDE: 0},
    "pose_visible": {V_VISIBLE: 2, V_OCCLUDED: 0, V_OUTSIDE: 0},
}


class PreparationError(ValueError):
    """The dataset version cannot be turned into training data; the message says why."""


class SkippedImage(BaseModel):
    source_ref: str
    reason: str


class PreparedSummary(BaseModel):
    """``prepared.json``: what was converted, from which version, and what was left out and why."""

    dataset_uri: str
    dataset_version: str
    keypoint_schema: str
    keypoint_names: tuple[str, ...]
    flip_idx: list[int]
    counts: dict[str, int] = Field(description="images per split")
    instances: dict[str, int] = Field(description="labels per model (train+val)")
    test_images_held_out: int
    val_from_train: bool = Field(False, description="the version had no val images: val reuses train")
    skipped: list[SkippedImage] = Field(default_factory=list)
    files: dict[str, str] = Field(default_factory=dict, description="image file name -> source-ref")


# --- pure conversions --------------------------------------------------------------------------------
def _clip01(v: float) -> float:
    return min(1.0, max(0.0, v))


def yolo_box(left: float, top: float, width: float, height: float, img_w: int, img_h: int) -> tuple[float, ...] | None:
    """A pixel box (l, t, w, h) -> normalized (cx, cy, w, h), clipped to the image; None if nothing is left."""
    x1, y1 = _clip01(left / img_w), _clip01(top / img_h)
    x2, y2 = _clip01((left + width) / img_w), _clip01((top + height) / img_h)
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return None
    return ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)


def head_label_lines(label: BoundingBoxLabel, img_w: int, img_h: int) -> list[str]:
    """YOLO detect lines: every head box as class 0."""
    out = []
    for ann in label.annotations:
        box = yolo_box(ann.left, ann.top, ann.width, ann.height, img_w, img_h)
        if box is not None:
            out.append("0 " + " ".join(f"{v:.6f}" for v in box))
    return out


def person_box(person: PersonKeypoints, img_w: int, img_h: int,
               margin: float = 0.1) -> tuple[float, float, float, float] | None:
    """The person box (l, t, w, h): the labeled one, else the labeled keypoints' extent plus a margin."""
    if person.bbox is not None:
        left, top, width, height = person.bbox
        return (left, top, width, height)
    pts = [(k.x, k.y) for k in person.keypoints if k.v > 0]
    if not pts:
        return None
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    w, h = max(xs) - min(xs), max(ys) - min(ys)
    pad = margin * max(w, h, 8.0)
    return (min(xs) - pad, min(ys) - pad, w + 2 * pad, h + 2 * pad)


def pose_label_lines(label: KeypointLabel, img_w: int, img_h: int, model: ModelName) -> list[str]:
    """YOLO pose lines (class 0, person box, then x y v per keypoint) under ``model``'s visibility map.

    Points that end with v=0 get coordinates 0 0, ultralytics' convention for "not labeled".
    """
    vmap = VISIBILITY_MAPS[model]
    out = []
    for person in label.persons:
        ltwh = person_box(person, img_w, img_h)
        box = yolo_box(*ltwh, img_w, img_h) if ltwh is not None else None
        if box is None:
            continue
        parts = ["0", *(f"{v:.6f}" for v in box)]
        for kp in person.keypoints:
            v = vmap[kp.v]
            if v == 0:
                parts += ["0.000000", "0.000000", "0"]
            else:
                parts += [f"{_clip01(kp.x / img_w):.6f}", f"{_clip01(kp.y / img_h):.6f}", str(v)]
        out.append(" ".join(parts))
    return out


def image_file_name(source_ref: str) -> str:
    """A unique, safe file name for an image: a short hash of its URI plus its base name."""
    base = _SAFE.sub("_", storage.basename(source_ref))[-80:] or "image"
    suffix = Path(base).suffix.lower()
    if suffix not in _IMAGE_SUFFIXES:
        base += ".jpg" if not suffix else ""
    digest = hashlib.sha256(source_ref.encode()).hexdigest()[:12]
    return f"{digest}_{base}"


def dataset_yaml(root: Path, model: ModelName, schema: KeypointSchema, *, val_from_train: bool) -> dict[str, Any]:
    """The ultralytics data YAML for one model's view under ``root`` (absolute paths)."""
    view = (root / "views" / model).resolve()
    data: dict[str, Any] = {
        "path": str(view),
        "train": "images/train",
        "val": "images/train" if val_from_train else "images/val",
    }
    if model == "head":
        data["names"] = {0: "head"}
    else:
        data["names"] = {0: "person"}
        data["kpt_shape"] = [schema.num_keypoints, 3]
        data["flip_idx"] = list(schema.flip_idx)
        data["kpt_names"] = {0: list(schema.names)}
    return data


# --- I/O --------------------------------------------------------------------------------------------
def _image_size(data: bytes) -> tuple[int, int]:
    """(width, height) as ultralytics sees the image: EXIF rotations by 90 degrees swap the sides."""
    # Pillow's own opener: ultralytics (imported by training) patches Image.open to auto-install codecs.
    from inference.image_io import pillow_open

    with pillow_open(io.BytesIO(data)) as img:
        img.verify()
    with pillow_open(io.BytesIO(data)) as img:
        width, height = img.size
        if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):
            width, height = height, width
    return width, height


def _labels_of(line: ManifestLine, settings: Settings, schema: KeypointSchema) -> tuple[BoundingBoxLabel, KeypointLabel]:
    boxes = line.boxes(settings.labeling.head_label_attribute)
    kps = line.keypoints(settings.labeling.keypoint_label_attribute)
    if boxes is None:
        raise ManifestError(f"no head-box label {settings.labeling.head_label_attribute!r}")
    if kps is None:
        raise ManifestError(f"no keypoint label {settings.labeling.keypoint_label_attribute!r}")
    kps[0].check_schema(schema.names)
    return boxes[0], kps[0]


def materialize_views(root: Path, summary: PreparedSummary, schema: KeypointSchema) -> dict[ModelName, Path]:
    """Per-model views (symlinks to the shared images and the model's labels) and their YAMLs."""
    yamls: dict[ModelName, Path] = {}
    for model in MODEL_NAMES:
        view = root / "views" / model
        if view.exists():
            shutil.rmtree(view)
        view.mkdir(parents=True)
        for split in TRAIN_SPLITS:
            images, labels = view / "images" / split, view / "labels" / split
            images.mkdir(parents=True)
            labels.mkdir(parents=True)
            for label in sorted((root / f"labels_{model}" / split).glob("*.txt")):
                shutil.copyfile(label, labels / label.name)  # labels are tiny; the cache goes beside them
            for image in sorted((root / "images" / split).glob("*")) if (root / "images" / split).is_dir() else []:
                # Per-file links: ultralytics resolves directories, which would lead it to the shared folder.
                try:
                    (images / image.name).symlink_to(image.resolve())
                except OSError:  # filesystems without symlinks
                    shutil.copyfile(image, images / image.name)
        path = root / f"{model}.yaml"
        data = dataset_yaml(root, model, schema, val_from_train=summary.val_from_train)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        yamls[model] = path
    return yamls


def load_prepared(root: Path, schema: KeypointSchema) -> tuple[PreparedSummary, dict[ModelName, Path]]:
    """Read ``prepared.json`` in a local copy of prepared data and (re)build the views and YAMLs there."""
    summary_path = root / SUMMARY_NAME
    if not summary_path.is_file():
        raise PreparationError(f"{root} holds no {SUMMARY_NAME}: run `alp prepare-training` first")
    summary = PreparedSummary.model_validate_json(summary_path.read_text())
    if tuple(summary.keypoint_names) != tuple(schema.names):
        raise PreparationError(
            f"prepared data uses schema {summary.keypoint_schema!r}, the settings say {schema.name!r}"
        )
    return summary, materialize_views(root, summary, schema)


def fetch_prepared(uri: str, dest: Path) -> Path:
    """A local folder with the prepared data at ``uri`` (the folder itself when it is local)."""
    if not storage.is_s3(uri):
        return Path(uri)
    dest.mkdir(parents=True, exist_ok=True)
    prefix = uri.rstrip("/") + "/"
    for obj in storage.list_uris(prefix):
        rel = obj[len(prefix):]
        if not rel or rel.startswith("views/"):
            continue
        storage.validate_key(rel)
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(storage.read_bytes(obj))
    return dest


def _split_of(line: ManifestLine) -> str:
    split = line.data.get(SPLIT_KEY)
    if split not in ("train", "val", "test"):
        raise ManifestError(f"{SPLIT_KEY!r} is {split!r}, expected train, val or test")
    return str(split)


def convert_lines(lines: Iterable[ManifestLine], root: Path, settings: Settings, *, dataset_uri: str,
                  dataset_version: str) -> PreparedSummary:
    """Write images and the three label sets under ``root``; returns the summary (also written)."""
    schema = settings.schema_
    counts: Counter[str] = Counter()
    instances: Counter[str] = Counter()
    skipped: list[SkippedImage] = []
    files: dict[str, str] = {}
    held_out = 0
    read = 0
    unpinned = 0
    changed: list[PinnedImage] = []
    missing: list[PinnedImage] = []
    for line in lines:
        ref = line.data.get("source-ref", "<inline>")
        try:
            split = _split_of(line)
            if split == "test":
                held_out += 1  # the frozen test split: evaluation only
                continue
            head, kps = _labels_of(line, settings, schema)
            read += 1
            # checked as it is read: a label never trains on pixels other than those it was made on
            data = read_pinned(line)
            unpinned += pinned_sha256(line) is None
            width, height = _image_size(data)
        except PixelsChanged:
            changed.append(PinnedImage(key=image_name(line), source_ref=str(ref)))
            continue
        except PixelsMissing:
            missing.append(PinnedImage(key=image_name(line), source_ref=str(ref)))
            continue
        except (ManifestError, storage.StorageError, OSError, SyntaxError) as exc:
            skipped.append(SkippedImage(source_ref=str(ref), reason=str(exc)[:300]))
            continue
        if (width, height) != (head.size.width, head.size.height):
            skipped.append(SkippedImage(
                source_ref=ref,
                reason=f"image is {width}x{height} but the label says {head.size.width}x{head.size.height}"))
            continue
        name = image_file_name(ref)
        if name in files:  # the same bytes under two keys name one pinned copy: its first record trains
            skipped.append(SkippedImage(source_ref=str(ref), reason=f"{image_name(line)}: the same image as another "
                                        "record of this version (identical bytes); that record's labels are used"))
            continue
        files[name] = ref
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "images" / split / name).write_bytes(data)
        stem = Path(name).stem
        per_model = {
            "head": head_label_lines(head, width, height),
            "pose_main": pose_label_lines(kps, width, height, "pose_main"),
            "pose_visible": pose_label_lines(kps, width, height, "pose_visible"),
        }
        for model, label_lines in per_model.items():
            folder = root / f"labels_{model}" / split
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{stem}.txt").write_text("\n".join(label_lines) + ("\n" if label_lines else ""))
            instances[model] += len(label_lines)
        counts[split] += 1
    if changed or missing:
        report = PixelReport(lines=read, ok=read - len(changed) - len(missing), changed=changed, missing=missing)
        raise PreparationError(
            f"dataset {dataset_uri}: {len(changed)} image(s) changed and {len(missing)} missing since they were "
            f"labeled; refusing to train on other pixels ({describe_problems(report)}); `alp datasets verify` "
            "checks a whole version")
    if unpinned:
        log.warning("prepare: %d image(s) of %s have no pinned sha256 (a version written before pixels were pinned): "
                    "read unchecked", unpinned, dataset_uri)
    if counts["train"] == 0:
        reasons = "; ".join(f"{s.source_ref}: {s.reason}" for s in skipped[:3])
        raise PreparationError(f"dataset {dataset_uri} has no usable train images ({len(skipped)} skipped: {reasons})")
    for model in MODEL_NAMES:
        for split in TRAIN_SPLITS:
            (root / f"labels_{model}" / split).mkdir(parents=True, exist_ok=True)
    summary = PreparedSummary(
        dataset_uri=dataset_uri,
        dataset_version=dataset_version,
        keypoint_schema=schema.name,
        keypoint_names=schema.names,
        flip_idx=list(schema.flip_idx),
        counts={s: counts[s] for s in TRAIN_SPLITS},
        instances={m: instances[m] for m in MODEL_NAMES},
        test_images_held_out=held_out,
        val_from_train=counts["val"] == 0,
        skipped=skipped,
        files=files,
    )
    (root / SUMMARY_NAME).write_text(summary.model_dump_json(indent=2))
    return summary


def dataset_version_of(dataset_uri: str) -> str:
    """The version name (``v0003``) from ``dataset.json`` if it says so, else the folder name."""
    base = dataset_uri.rstrip("/")
    try:
        info = json.loads(storage.read_text(storage.join(base, "dataset.json")))
    except (storage.ObjectNotFound, json.JSONDecodeError):
        info = {}
    version = info.get("version") if isinstance(info, dict) else None
    return str(version) if version else storage.basename(base)


def prepare_training(dataset_uri: str, out_uri: str, settings: Settings) -> PreparedSummary:
    """Convert the dataset version at ``dataset_uri`` into the three YOLO datasets at ``out_uri``."""
    base = dataset_uri.rstrip("/")
    lines = read_manifest(storage.join(base, "manifest.jsonl"))
    version = dataset_version_of(dataset_uri)
    if storage.is_s3(out_uri):
        with tempfile.TemporaryDirectory(prefix="alp-prepare-") as tmp:
            root = Path(tmp)
            summary = convert_lines(lines, root, settings, dataset_uri=dataset_uri, dataset_version=version)
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                storage.write_bytes(storage.join(out_uri, path.relative_to(root).as_posix()), path.read_bytes())
        return summary
    root = Path(out_uri)
    if root.exists() and any(root.iterdir()) and not (root / SUMMARY_NAME).is_file():
        raise PreparationError(f"{root} is not empty and holds no earlier preparation; refusing to overwrite")
    # Built beside the target and moved into place whole: a crash (a killed build) leaves a `.partial-*` folder,
    # removed by the next run, never a half preparation where a finished one is expected.
    for stale in root.parent.glob(f"{root.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    work = root.with_name(f"{root.name}.partial-{os.getpid()}")
    work.mkdir(parents=True)
    try:
        summary = convert_lines(lines, work, settings, dataset_uri=dataset_uri, dataset_version=version)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if root.exists():
        shutil.rmtree(root)  # a re-run replaces the previous preparation entirely
    work.rename(root)
    materialize_views(root, summary, settings.schema_)  # links and YAMLs name absolute paths: after the move
    return summary
