"""The model bundle: three ONNX files plus a JSON descriptor (``bundle.json``).

Training writes bundles; the inference engine and the registry read them. Loading verifies the sha256
of every file against the descriptor before any model is opened and refuses a mismatch, so a model that
was swapped or corrupted after registration never runs.

A zero-shot bundle (``zero_shot`` set, :mod:`training.zero_shot`) holds one pretrained pose model instead of
three trained ones: round 0's proposer, before any champion exists. Its proposals always go to people.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from alp import storage

DESCRIPTOR_NAME = "bundle.json"
ModelRole = Literal["head", "pose_main", "pose_visible"]
MODEL_ROLES: tuple[ModelRole, ...] = ("head", "pose_main", "pose_visible")


class BundleError(ValueError):
    """A bundle is malformed, incomplete, or its files do not match their recorded hashes."""


class BundleHashMismatch(BundleError):
    """A file's sha256 differs from the descriptor's."""


class ModelFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field(description="file name relative to the bundle folder")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    task: Literal["detect", "pose"]
    input_size: tuple[int, int] = Field(description="(height, width) the ONNX graph expects; 0 = dynamic")
    class_names: tuple[str, ...] = ("head",)
    source_checkpoint_sha256: str | None = Field(None, description="sha256 of the .pt it was exported from")
    precision: Literal["fp32", "int8"] = "fp32"
    calibration_images: int | None = Field(None, description="int8 only: images the activation ranges came from")


class VisibilityThreshold(BaseModel):
    """One keypoint's visibility rule: in view above ``main``; then visible above ``additional``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    main: float = Field(ge=0.0, le=1.0)
    additional: float = Field(ge=0.0, le=1.0)


class ZeroShotSource(BaseModel):
    """What a zero-shot bundle's one pose model is and how its output becomes the schema's labels.

    Its keypoints are the checkpoint's own (``source_keypoints``, COCO's 17), mapped by name onto the bundle's
    ``keypoint_names`` at inference (:func:`inference.zero_shot.map_keypoints`); it has no head detector, so head
    boxes are derived from each person's face keypoints (``heads_from``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_keypoints: tuple[str, ...] = Field(min_length=1, description="the pose model's keypoints, in its order")
    checkpoint_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="the pinned .pt the ONNX was exported from")
    heads_from: Literal["face-keypoints"] = "face-keypoints"

    @model_validator(mode="after")
    def _unique(self) -> ZeroShotSource:
        if len(set(self.source_keypoints)) != len(self.source_keypoints):
            raise ValueError("source keypoint names must be unique")
        return self


class BundleDescriptor(BaseModel):
    """``bundle.json``: everything needed to run and to trust a bundle."""

    model_config = ConfigDict(extra="forbid")

    format_version: Literal[1] = 1
    bundle_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    created_at: str
    imgsz: int = Field(gt=0)
    keypoint_schema: str
    keypoint_names: tuple[str, ...]
    # A zero-shot bundle names the same ONNX file (one pretrained pose model) in all three roles: the engine opens
    # it once, as the pose model; the head role has no model of its own (heads come from face keypoints).
    models: dict[ModelRole, ModelFile]
    dataset_version: str | None = None
    dataset_uri: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict, description="epochs, imgsz, seed, warm start...")
    visibility_thresholds: dict[str, VisibilityThreshold] | None = Field(
        None, description="per keypoint name, fitted on the validation split at training time (None: the "
                          "settings' inference.main_threshold / additional_threshold for every point)")
    zero_shot: ZeroShotSource | None = Field(
        None, description="set: a pretrained pose model not trained on this project's labels; every image it "
                          "proposes labels for goes to people")

    @model_validator(mode="after")
    def _zero_shot_is_one_model(self) -> BundleDescriptor:
        if self.zero_shot is not None and len({m.file for m in self.models.values()}) > 1:
            # the engine runs only the pose model: a second file would be listed, hashed, and never used
            raise ValueError("a zero-shot bundle names one pose model in every role")
        return self

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_descriptor(text: str) -> BundleDescriptor:
    try:
        desc = BundleDescriptor.model_validate_json(text)
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(map(str, e["loc"]))  # empty for a rule across fields
        raise BundleError(f"bundle.json: {where + ': ' if where else ''}{e['msg']}") from None
    missing = [r for r in MODEL_ROLES if r not in desc.models]
    if missing:
        raise BundleError(f"bundle.json: missing models {missing}")
    return desc


class LoadedBundle(BaseModel):
    """A bundle whose files are local and verified."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    uri: str
    descriptor: BundleDescriptor
    paths: dict[ModelRole, Path]


def load_bundle(uri: str, cache_dir: str | Path) -> LoadedBundle:
    """Fetch a bundle (folder path or s3:// prefix) into ``cache_dir`` and verify every hash.

    Raises :class:`BundleHashMismatch` naming the file when a hash differs; nothing is loaded then.
    """
    base = uri.rstrip("/")
    desc = parse_descriptor(storage.read_text(storage.join(base, DESCRIPTOR_NAME)))
    local_dir = Path(cache_dir) / desc.bundle_id
    paths: dict[ModelRole, Path] = {}
    verified: dict[tuple[str, str], Path] = {}  # (file, sha256): a file several roles name is fetched and hashed once
    for role in MODEL_ROLES:
        mf = desc.models[role]
        if (mf.file, mf.sha256) in verified:
            paths[role] = verified[(mf.file, mf.sha256)]
            continue
        storage.validate_key(mf.file)
        src = storage.join(base, mf.file)
        if storage.is_s3(base):
            dest = local_dir / mf.file
            if not dest.is_file() or sha256_file(dest) != mf.sha256:
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(storage.read_bytes(src))
            path = dest
        else:
            path = Path(src)
            if not path.is_file():
                raise BundleError(f"bundle {uri}: model file {mf.file} is missing")
        actual = sha256_file(path)
        if actual != mf.sha256:
            raise BundleHashMismatch(
                f"bundle {desc.bundle_id}: {mf.file} has sha256 {actual[:12]}..., the descriptor records "
                f"{mf.sha256[:12]}...; refusing to load it"
            )
        paths[role] = verified[(mf.file, mf.sha256)] = path
    return LoadedBundle(uri=uri, descriptor=desc, paths=paths)


def write_bundle(dest_uri: str, descriptor: BundleDescriptor, files: dict[ModelRole, Path]) -> str:
    """Upload/copy the model files and the descriptor to ``dest_uri``; hashes are checked first."""
    written: set[str] = set()
    for role, path in files.items():
        mf = descriptor.models[role]
        if sha256_file(path) != mf.sha256:
            raise BundleHashMismatch(f"{path}: sha256 differs from the descriptor's {role} entry")
        if mf.file not in written:  # a zero-shot bundle's roles share one file
            storage.write_bytes(storage.join(dest_uri, mf.file), Path(path).read_bytes())
            written.add(mf.file)
    storage.write_text(storage.join(dest_uri, DESCRIPTOR_NAME), descriptor.to_json(),
                       content_type="application/json")
    return dest_uri
