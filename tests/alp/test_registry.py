"""The model registry on moto: one package per bundle, Approved/Rejected, champion lookup, hash checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alp import registry, storage
from alp.bundle import BundleDescriptor, BundleHashMismatch, ModelFile, sha256_file, write_bundle
from alp.registry import RegistryError
from alp.schema import INCABIN17
from alp.settings import Settings


def _bundle(tmp: Path, bundle_id: str, *, dataset_version: str = "v0001", payload: str = "") -> str:
    src = tmp / f"src-{bundle_id}"
    src.mkdir(parents=True)
    files, models = {}, {}
    for role, task in (("head", "detect"), ("pose_main", "pose"), ("pose_visible", "pose")):
        path = src / f"{role}.onnx"
        path.write_bytes(f"{bundle_id} {role} {payload}".encode())
        files[role] = path
        models[role] = ModelFile(file=path.name, sha256=sha256_file(path), task=task, input_size=(0, 0))
    desc = BundleDescriptor(bundle_id=bundle_id, created_at="2026-11-21T00:00:00Z", imgsz=160,
                            keypoint_schema="incabin17", keypoint_names=INCABIN17.names, models=models,
                            dataset_version=dataset_version)
    return write_bundle(str(tmp / "bundles" / bundle_id), desc, files)  # type: ignore[arg-type]


@pytest.fixture
def settings() -> Settings:
    return Settings()


def test_given_no_group_when_asking_for_the_champion_then_cold_start(aws_mock, settings):
    assert registry.latest_approved_bundle_uri(settings) is None
    assert registry.list_bundles(settings) == []


def test_given_no_group_when_registering_then_a_clear_error_unless_local_mode_asks(aws_mock, tmp_path, settings):
    uri = _bundle(tmp_path, "v0001-a")
    with pytest.raises(RegistryError, match="does not exist"):
        registry.register_bundle(settings, uri, approved=True)
    reg = registry.register_bundle(settings, uri, approved=True, create_group_if_missing=True)
    assert reg.status == "Approved" and reg.bundle_uri == uri


def test_champion_is_the_newest_approved_and_rejected_ones_are_skipped(aws_mock, tmp_path, settings):
    registry.ensure_model_package_group(settings)
    assert registry.latest_approved_bundle_uri(settings) is None  # empty group: cold start
    first = _bundle(tmp_path, "v0001-a")
    second = _bundle(tmp_path, "v0002-b", dataset_version="v0002")
    third = _bundle(tmp_path, "v0003-c", dataset_version="v0003")
    registry.register_bundle(settings, first, approved=True, metrics={"box_map50": 0.5, "kpt_oks_map50": 0.4})
    registry.register_bundle(settings, second, approved=True, metrics={"box_map50": 0.6})
    registry.register_bundle(settings, third, approved=False, metrics={"box_map50": 0.1})

    assert registry.latest_approved_bundle_uri(settings) == second
    listed = registry.list_bundles(settings)
    assert [b.bundle_id for b in listed] == ["v0003-c", "v0002-b", "v0001-a"]
    assert [b.status for b in listed] == ["Rejected", "Approved", "Approved"]
    assert listed[2].metrics == {"box_map50": 0.5, "kpt_oks_map50": 0.4}
    assert listed[1].dataset_version == "v0002"
    assert set(listed[0].model_sha256) == {"head", "pose_main", "pose_visible"}


def test_registering_the_same_bundle_twice_keeps_one_package(aws_mock, tmp_path, settings):
    registry.ensure_model_package_group(settings)
    uri = _bundle(tmp_path, "v0001-a")
    a = registry.register_bundle(settings, uri, approved=True, metrics={"box_map50": 0.5})
    b = registry.register_bundle(settings, uri, approved=True, metrics={"box_map50": 0.5})
    assert a.arn == b.arn and len(registry.list_bundles(settings)) == 1
    # a changed decision for the same bundle updates its package instead of adding one
    c = registry.register_bundle(settings, uri, approved=False, metrics={"box_map50": 0.5})
    assert c.arn == a.arn and c.status == "Rejected" and len(registry.list_bundles(settings)) == 1
    assert c.metrics == {"box_map50": 0.5}


def test_a_different_bundle_under_a_registered_id_is_refused(aws_mock, tmp_path, settings):
    registry.ensure_model_package_group(settings)
    uri = _bundle(tmp_path, "v0001-a")
    registry.register_bundle(settings, uri, approved=True)
    other = _bundle(tmp_path / "other", "v0001-a", payload="retrained")
    with pytest.raises(RegistryError, match="different"):
        registry.register_bundle(settings, other, approved=True)


def test_the_champion_loads_verified_and_a_rewritten_descriptor_is_refused(aws_mock, tmp_path, settings):
    registry.ensure_model_package_group(settings)
    uri = _bundle(tmp_path, "v0001-a")
    registry.register_bundle(settings, uri, approved=True)
    loaded = registry.load_approved_bundle(settings, tmp_path / "cache")
    assert loaded is not None and loaded.descriptor.bundle_id == "v0001-a"

    # Someone swaps a model AND rewrites bundle.json to match: the bundle's own check passes, the
    # registry's record of bundle.json does not.
    (Path(uri) / "pose_main.onnx").write_bytes(b"evil")
    desc = json.loads((Path(uri) / "bundle.json").read_text())
    desc["models"]["pose_main"]["sha256"] = sha256_file(Path(uri) / "pose_main.onnx")
    (Path(uri) / "bundle.json").write_text(json.dumps(desc))
    with pytest.raises(BundleHashMismatch, match="registry"):
        registry.load_approved_bundle(settings, tmp_path / "cache2")


def test_bundles_on_s3_register_and_resolve(aws_mock, tmp_path, settings):
    from alp import aws

    aws.client("s3").create_bucket(Bucket="alp-data-bucket")
    local = _bundle(tmp_path, "v0001-a")
    s3_uri = "s3://alp-data-bucket/models/candidates/v0001/bundle/"
    for path in Path(local).iterdir():
        storage.write_bytes(storage.join(s3_uri, path.name), path.read_bytes())
    registry.ensure_model_package_group(settings)
    registry.register_bundle(settings, s3_uri, approved=True, metrics={"box_map50": 0.9},
                             report_uri="s3://alp-data-bucket/models/candidates/v0001/report.json")
    champion = registry.latest_approved(settings)
    assert champion is not None and champion.bundle_uri == s3_uri
    assert champion.report_uri.endswith("report.json")  # type: ignore[union-attr]
    assert registry.load_approved_bundle(settings, tmp_path / "cache") is not None


def test_metadata_respects_sagemaker_limits():
    models = {r: ModelFile(file=f"{r}.onnx", sha256="a" * 64, task="detect" if r == "head" else "pose",
                           input_size=(0, 0)) for r in ("head", "pose_main", "pose_visible")}
    descriptor = BundleDescriptor(bundle_id="b1", created_at="x", imgsz=160, keypoint_schema="incabin17",
                                  keypoint_names=INCABIN17.names, models=models)  # type: ignore[arg-type]
    metrics = {f"m{i}": float(i) for i in range(80)} | {"box_map50": 0.7, "bad": float("nan"), "flag": True}
    props = registry.encode_metadata(bundle_uri="s3://b/k/", descriptor=descriptor, descriptor_sha256="b" * 64,
                                     metrics=metrics, headline=("box_map50",))
    assert len(props) <= 50 and props["metric:box_map50"] == "0.7"
    assert "metric:bad" not in props and "metric:flag" not in props
    with pytest.raises(RegistryError, match="CustomerMetadataProperties"):
        registry.encode_metadata(bundle_uri="s3://b/k{weird}/", descriptor=descriptor,
                                 descriptor_sha256="b" * 64, metrics={})
