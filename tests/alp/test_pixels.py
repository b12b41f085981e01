"""Pinned pixels (alp/pixels.py): a dataset version keeps the exact bytes its labels were made on.

The scenario of "Datasets that last" on moto with a versioned unlabeled bucket: images uploaded, inferred (the first
read pins their sha256), labeled by the local workforce, merged into a version (content-addressed copies in the data
bucket); then the upload key gets other bytes, a copy is replaced behind the write-once helper's back, another is
deleted, and every reader says so.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import boto3
import pytest
from labeling_builders import human_line, truth_line
from PIL import Image

from alp import storage
from alp.cli import main
from alp.datasets import (
    MANIFEST_FILE,
    image_key,
    list_versions,
    merge_batch_result,
    read_version,
    read_version_info,
)
from alp.labeling.local import LocalWorkforceBackend
from alp.labeling.workflow import run_label_step
from alp.manifest import OBJECT_KEY, ManifestLine, ObjectIdentity, read_manifest, write_manifest
from alp.pixels import (
    PixelsChanged,
    PixelsMissing,
    content_uri,
    pin_copy,
    read_pinned,
    verify_lines,
    with_read_pin,
)
from alp.settings import SETTINGS_ENV, Settings
from inference.runner import run_batch
from training.evaluate import EvaluationError, check_test_pixels
from training.prepare import PreparationError, convert_lines

UPLOADS, DATA = "alp-pixels-unlabeled", "alp-pixels-data"
DATA_ROOT = f"s3://{DATA}/"
COUNTS = ("lines", "ok", "changed", "missing", "unpinned")
N = 4
# every record trains: the tampered image must be one Prepare reads (it holds the test split out)
BASE = Settings().with_overrides({"labeling.backend": "local", "labeling.gold_items_per_job": 0,
                                  "labeling.test_split_fraction": 0.0, "labeling.val_split_fraction": 0.0})


def jpeg(shade: int) -> bytes:
    """A 640x480 frame (the size the truth lines' labels give) of one shade."""
    buf = io.BytesIO()
    Image.new("RGB", (640, 480), (shade, 255 - shade, 90)).save(buf, format="JPEG")
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def buckets(aws_mock: None) -> Any:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=UPLOADS)
    s3.put_bucket_versioning(Bucket=UPLOADS, VersioningConfiguration={"Status": "Enabled"})
    s3.create_bucket(Bucket=DATA)
    return s3


def upload(s3: Any, key: str, data: bytes) -> ObjectIdentity:
    put = s3.put_object(Bucket=UPLOADS, Key=key, Body=data)
    return ObjectIdentity(bucket=UPLOADS, key=key, version_id=put.get("VersionId"), etag=put["ETag"].strip('"'),
                          size=len(data))


def batch_line(identity: ObjectIdentity) -> ManifestLine:
    """A batch manifest line as the batcher writes it: the upload and its identity (version, no pin yet)."""
    return ManifestLine.for_image(f"s3://{identity.bucket}/{identity.key}", **{OBJECT_KEY: identity.dump()})


def inferred_and_labeled(s3: Any, tmp_path: Path, settings: Settings, batch: str = "b0001",
                         ) -> tuple[str, dict[str, bytes]]:
    """Uploads, Infer (cold start: every image to people) and the Label step; returns the batch folder and the
    bytes uploaded per key."""
    truths = [truth_line(f"/truth/img_{i:04d}.jpg", settings, persons=1, seed=i) for i in range(N)]
    write_manifest(str(tmp_path / "truth.jsonl"), truths)
    settings = settings.with_overrides({"labeling.local_truth_uri": str(tmp_path / "truth.jsonl")})
    uploaded = {f"incoming/img_{i:04d}.jpg": jpeg(40 * i) for i in range(N)}
    batch_dir = f"{DATA_ROOT}batches/{batch}/"
    write_manifest(batch_dir + "manifest.jsonl", [batch_line(upload(s3, k, v)) for k, v in uploaded.items()])
    run_batch(batch_dir + "manifest.jsonl", batch_dir + "inference/", settings, engine=None)
    run_label_step(batch_dir, settings, LocalWorkforceBackend(settings))
    return batch_dir, uploaded


def verify_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    rc = main(["datasets", "verify", "--data-root", DATA_ROOT, "--json", *args])
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    return rc, json.loads(out)


@pytest.fixture
def settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    path = tmp_path / "settings.json"
    path.write_text(BASE.to_json())
    monkeypatch.setenv(SETTINGS_ENV, str(path))
    return BASE


def test_a_version_keeps_the_labeled_pixels_and_every_reader_finds_what_changed_under_it(
        buckets: Any, tmp_path: Path, settings_file: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    s3, settings = buckets, settings_file
    batch_dir, uploaded = inferred_and_labeled(s3, tmp_path, settings)
    # Infer pinned the bytes it read, and the labeled lines people returned keep the pin for Merge
    labeled = {image_key(line): line for line in read_manifest(batch_dir + "labeling/labeled.jsonl")}
    assert sorted(labeled) == sorted(uploaded)
    for key, line in labeled.items():
        identity = line.object_identity()
        assert identity is not None and identity.sha256 == sha(uploaded[key]) and identity.version_id
    result = merge_batch_result(batch_dir, settings, DATA_ROOT)
    assert result.version.records == N and result.version.added_from["rejected"] == 0
    lines = {image_key(line): line for line in read_version(result.uri)}
    for key, line in lines.items():
        assert line.source_ref == content_uri(DATA_ROOT, settings, sha(uploaded[key]), key)
        assert line.source_ref.startswith(f"{DATA_ROOT}images/sha256/{sha(uploaded[key])[:2]}/")

    # new bytes under the same upload key: the version still reads the labeled ones, from its copy
    first = "incoming/img_0000.jpg"
    s3.put_object(Bucket=UPLOADS, Key=first, Body=jpeg(250))
    assert read_pinned(lines[first]) == uploaded[first]
    rc, report = verify_cli(capsys)
    assert rc == 0 and report["version"] == "v0001"
    assert {k: report[k] for k in COUNTS} == {"lines": N, "ok": N, "changed": 0, "missing": 0, "unpinned": 0}

    # a misbehaving admin replaces one copy (past the write-once helper) and deletes another
    changed, gone = lines["incoming/img_0001.jpg"], lines["incoming/img_0002.jpg"]
    s3.put_object(Bucket=DATA, Key=storage.parse_s3_uri(changed.source_ref).key, Body=jpeg(7))
    s3.delete_object(Bucket=DATA, Key=storage.parse_s3_uri(gone.source_ref).key)
    rc, report = verify_cli(capsys, "--version", "v0001")
    assert rc == 1
    assert {k: report[k] for k in COUNTS} == {"lines": N, "ok": N - 2, "changed": 1, "missing": 1, "unpinned": 0}
    assert report["changed_images"] == [{"key": "incoming/img_0001.jpg", "source_ref": changed.source_ref}]
    assert report["missing_images"] == [{"key": "incoming/img_0002.jpg", "source_ref": gone.source_ref}]
    assert main(["datasets", "verify", "--data-root", DATA_ROOT]) == 1
    text = capsys.readouterr().out
    assert "changed: incoming/img_0001.jpg" in text and "missing: incoming/img_0002.jpg" in text

    # Prepare refuses to train on other pixels, naming both
    with pytest.raises(PreparationError, match="1 image.s. changed and 1 missing") as refused:
        convert_lines(read_version(result.uri), tmp_path / "prepared", settings, dataset_uri=result.uri,
                      dataset_version="v0001")
    assert "incoming/img_0001.jpg changed" in str(refused.value) and "incoming/img_0002.jpg missing" in str(refused.value)
    assert main(["prepare-training", "--dataset", result.uri, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "refusing to train on other pixels" in err and "incoming/img_0001.jpg" in err
    assert not (tmp_path / "out").exists()  # no half preparation left to block the re-run


def test_an_upload_replaced_between_infer_and_merge_is_rejected_with_the_reason(
        aws_mock: None, tmp_path: Path) -> None:
    """Given uploads to a bucket that keeps no versions, when one key gets new bytes after Infer read it, then Merge
    sets that line aside in merge/rejected.jsonl (the labels describe the old bytes), counted in the version."""
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=UPLOADS)
    s3.create_bucket(Bucket=DATA)
    batch_dir, uploaded = inferred_and_labeled(s3, tmp_path, BASE)
    identities = [line.object_identity() for line in read_manifest(batch_dir + "labeling/labeled.jsonl")]
    assert all(i is not None and i.sha256 and i.version_id is None for i in identities)  # pinned, no version
    s3.put_object(Bucket=UPLOADS, Key="incoming/img_0003.jpg", Body=jpeg(251))
    result = merge_batch_result(batch_dir, BASE, DATA_ROOT)
    assert result.version.records == N - 1 and result.version.added_from["rejected"] == 1
    (rejected,) = read_manifest(batch_dir + "merge/rejected.jsonl")
    assert image_key(rejected) == "incoming/img_0003.jpg"
    assert "not the ones labeled" in rejected.data["alp-merge-rejected"]
    assert "incoming/img_0003.jpg" not in {image_key(line) for line in read_version(result.uri)}


def test_a_versioned_upload_merges_the_bytes_people_labeled_or_is_set_aside_with_the_reason(
        buckets: Any, tmp_path: Path) -> None:
    """Given a versioned unlabeled bucket, Merge copies the version Infer read. People's tools show the key's current
    object: when new bytes replaced it since Infer, the labels may describe either, so the line is set aside. When
    the labeled version is gone (a lifecycle expiry) but the key holds the same bytes again (a restarted local
    project puts its frames back under new version ids), those bytes are merged; when nothing holds them, the line
    is set aside as missing."""
    s3 = buckets
    batch_dir, uploaded = inferred_and_labeled(s3, tmp_path, BASE)
    labeled = {image_key(line): line for line in read_manifest(batch_dir + "labeling/labeled.jsonl")}
    s3.put_object(Bucket=UPLOADS, Key="incoming/img_0000.jpg", Body=jpeg(252))
    gone = labeled["incoming/img_0001.jpg"].object_identity()
    assert gone is not None and gone.version_id
    s3.delete_object(Bucket=UPLOADS, Key=gone.key, VersionId=gone.version_id)
    put_back = labeled["incoming/img_0002.jpg"].object_identity()
    assert put_back is not None and put_back.version_id
    s3.put_object(Bucket=UPLOADS, Key=put_back.key, Body=uploaded[put_back.key])
    s3.delete_object(Bucket=UPLOADS, Key=put_back.key, VersionId=put_back.version_id)

    result = merge_batch_result(batch_dir, BASE, DATA_ROOT)

    lines = {image_key(line): line for line in read_version(result.uri)}
    assert storage.read_bytes(lines["incoming/img_0002.jpg"].source_ref) == uploaded["incoming/img_0002.jpg"]
    assert storage.read_bytes(lines["incoming/img_0003.jpg"].source_ref) == uploaded["incoming/img_0003.jpg"]
    reasons = {image_key(r): r.data["alp-merge-rejected"] for r in read_manifest(batch_dir + "merge/rejected.jsonl")}
    assert set(reasons) == {"incoming/img_0000.jpg", "incoming/img_0001.jpg"}
    assert "replaced while people labeled it" in reasons["incoming/img_0000.jpg"]
    assert "gone" in reasons["incoming/img_0001.jpg"]
    assert result.version.added_from["rejected"] == 2 and result.version.records == N - 2


def test_a_dataset_version_file_is_never_overwritten(buckets: Any, tmp_path: Path, settings_file: Settings,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    batch_dir, _ = inferred_and_labeled(buckets, tmp_path, BASE)
    uri = merge_batch_result(batch_dir, BASE, DATA_ROOT).uri
    before = storage.read_bytes(uri + MANIFEST_FILE)
    with pytest.raises(storage.AlreadyExists):
        storage.write_text(uri + MANIFEST_FILE, "", if_none_match=True)
    assert storage.read_bytes(uri + MANIFEST_FILE) == before
    # a merge of the same batch again returns the version, and writes nothing
    again = merge_batch_result(batch_dir, BASE, DATA_ROOT)
    assert not again.created and again.uri == uri and list_versions(DATA_ROOT, BASE) == [uri]
    assert read_version_info(uri).records == N
    assert main(["datasets", "verify", "--data-root", DATA_ROOT, "--version", "v0009"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f"no dataset version v0009 under {DATA_ROOT}datasets/: it has v0001")


def _record(ref: str, **identity: object) -> ManifestLine:
    line = truth_line(ref, BASE, persons=1).with_fields(**{"alp-split": "test", "alp-source": {"kind": "human"}})
    return line.with_fields(**{OBJECT_KEY: identity}) if identity else line


def test_a_line_without_identity_keeps_its_old_source_ref_as_its_key(tmp_path: Path) -> None:
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "Cab.JPG").write_bytes(b"cab")
    line = _record(str(tmp_path / "frames" / "Cab.JPG"))
    pinned = pin_copy(line, str(tmp_path / "data"), BASE)
    assert image_key(pinned) == image_key(line) == str(tmp_path / "frames" / "Cab.JPG")
    assert pinned.source_ref == str(tmp_path / "data" / "images" / "sha256" / sha(b"cab")[:2] / f"{sha(b'cab')}.jpg")
    assert read_pinned(pinned) == b"cab"
    assert pin_copy(line, str(tmp_path / "data"), BASE) == pinned  # the copy exists: the same line again


def test_a_changed_copy_and_a_gone_one_raise_and_an_unpinned_line_is_not_ok(tmp_path: Path) -> None:
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(b"labeled")
    pinned = _record(str(copy), bucket="u", key="cam/a.jpg", sha256=sha(b"labeled"))
    unpinned = _record(str(copy))
    gone = _record(str(tmp_path / "gone.jpg"), bucket="u", key="cam/b.jpg", sha256=sha(b"b"))
    assert verify_lines([pinned, unpinned, gone]).counts() == {"lines": 3, "ok": 1, "changed": 0, "missing": 1,
                                                              "unpinned": 1}
    assert not verify_lines([unpinned]).all_ok
    copy.write_bytes(b"other")
    with pytest.raises(PixelsChanged, match="cam/a.jpg"):
        read_pinned(pinned)
    with pytest.raises(PixelsMissing, match="cam/b.jpg"):
        read_pinned(gone)
    assert read_pinned(unpinned) == b"other"  # nothing to check it against


def test_infer_s_pin_records_the_first_read_and_never_replaces_one() -> None:
    line = batch_line(ObjectIdentity(bucket="u-bucket", key="incoming/a.jpg"))
    first = with_read_pin(line, sha(b"a"), "v1")
    identity = first.object_identity()
    assert identity is not None and identity.sha256 == sha(b"a") and identity.version_id == "v1"
    assert with_read_pin(first, sha(b"b"), "v2") == first
    assert with_read_pin(ManifestLine.for_image("/x.jpg"), sha(b"a"), None) == ManifestLine.for_image("/x.jpg")
    # a source-ref that is not the object alp-object names (a dataset line's copy): its version is not the upload's
    moved = with_read_pin(human_line("s3://u-bucket/copies/a.jpg", None, BASE), sha(b"a"), "v9").object_identity()
    assert moved is not None and moved.version_id is None and moved.sha256 == sha(b"a")


def test_evaluation_refuses_a_changed_test_image_and_accepts_unpinned_ones_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    image = tmp_path / "t.jpg"
    image.write_bytes(b"labeled")
    truth = [_record(str(image), bucket="u", key="cam/t.jpg", sha256=sha(b"labeled")), _record(str(image))]
    with caplog.at_level(logging.WARNING, logger="training.evaluate"):
        check_test_pixels(truth, "v0001")
    assert [r.message for r in caplog.records if "no pinned sha256" in r.message] == [
        "evaluate: 1 test image(s) of v0001 have no pinned sha256 (a version written before pixels were pinned): "
        "read unchecked"]
    image.write_bytes(b"other")
    with pytest.raises(EvaluationError, match=r"1 test image\(s\) changed and 0 missing.*cam/t.jpg changed"):
        check_test_pixels(truth, "v0001")


def test_infer_reads_the_current_bytes_when_the_batched_version_is_gone_and_pins_what_it_read(buckets: Any) -> None:
    """A batch line names the version uploaded; when that version is gone (expired, or a restarted local project put
    its frames back under new version ids), Infer reads the key's current object and pins those bytes and that
    version, instead of quarantining an image that is there."""
    from inference.runner import load_line_image

    s3 = buckets
    first = upload(s3, "incoming/cam/frame.jpg", jpeg(90))
    s3.put_object(Bucket=UPLOADS, Key=first.key, Body=jpeg(91))
    s3.delete_object(Bucket=UPLOADS, Key=first.key, VersionId=first.version_id)
    current = s3.head_object(Bucket=UPLOADS, Key=first.key)["VersionId"]

    line, image = load_line_image(batch_line(first), BASE)

    assert not hasattr(image, "reason"), image  # decoded, not rejected
    identity = line.object_identity()
    assert identity is not None and identity.version_id == current and identity.sha256 == sha(jpeg(91))
    s3.delete_object(Bucket=UPLOADS, Key=first.key, VersionId=current)
    _, rejected = load_line_image(batch_line(first), BASE)
    assert getattr(rejected, "reason", None) == "missing_object"  # nothing there at all: quarantined as before
