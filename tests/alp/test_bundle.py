"""Model bundles: written with hashes, loaded only when every hash matches (local and S3)."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from alp.bundle import (
    BundleDescriptor,
    BundleError,
    BundleHashMismatch,
    ModelFile,
    load_bundle,
    sha256_file,
    write_bundle,
)
from alp.schema import INCABIN17


def _fake_models(tmp: Path) -> tuple[BundleDescriptor, dict[str, Path]]:
    tmp.mkdir(parents=True, exist_ok=True)
    files = {}
    models = {}
    for role, task in (("head", "detect"), ("pose_main", "pose"), ("pose_visible", "pose")):
        path = tmp / f"{role}.onnx"
        path.write_bytes(f"not really onnx: {role}".encode())
        files[role] = path
        models[role] = ModelFile(file=path.name, sha256=sha256_file(path), task=task, input_size=(480, 640))
    desc = BundleDescriptor(bundle_id="b-0001", created_at="2026-01-01T00:00:00Z", imgsz=640,
                            keypoint_schema="incabin17", keypoint_names=INCABIN17.names, models=models)
    return desc, files


@pytest.mark.parametrize("where", ["local", "s3"])
def test_written_bundle_loads_and_a_tampered_file_is_refused(tmp_path, where, aws_mock):
    desc, files = _fake_models(tmp_path / "src")
    if where == "s3":
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="bundle-bucket")
        dest = "s3://bundle-bucket/models/b-0001"
    else:
        dest = str(tmp_path / "bundle")
    write_bundle(dest, desc, files)
    loaded = load_bundle(dest, tmp_path / "cache")
    assert loaded.descriptor == desc and set(loaded.paths) == {"head", "pose_main", "pose_visible"}

    from alp import storage

    storage.write_bytes(storage.join(dest, "pose_main.onnx"), b"swapped model")
    with pytest.raises(BundleHashMismatch, match="pose_main.onnx"):
        load_bundle(dest, tmp_path / "cache2")


def test_write_refuses_files_that_differ_from_the_descriptor(tmp_path):
    desc, files = _fake_models(tmp_path)
    files["head"].write_bytes(b"changed after hashing")
    with pytest.raises(BundleHashMismatch):
        write_bundle(str(tmp_path / "out"), desc, files)


def test_malformed_descriptor_is_a_clear_error(tmp_path):
    (tmp_path / "bundle.json").write_text('{"format_version": 1, "bundle_id": "x"}')
    with pytest.raises(BundleError, match="bundle.json"):
        load_bundle(str(tmp_path), tmp_path / "cache")
