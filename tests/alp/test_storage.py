"""Storage adapter: local paths and S3 (moto) behave the same; unsafe keys are refused."""

from __future__ import annotations

import boto3
import pytest

from alp import storage


@pytest.mark.parametrize(
    "key",
    ["a/../b", "../x", "/abs/key", "a\x00b", "a\nb", "a\\b", "%2e%2e/etc", "a/%2E%2E/b", "./x", "",
     "x" * 1100],
)
def test_unsafe_keys_are_refused(key):
    with pytest.raises(storage.StorageError):
        storage.validate_key(key)


@pytest.mark.parametrize("key", ["images/a.jpg", "ünïcødé/😀.png", "a b/c+d.jpg", "a..b/c.jpg"])
def test_ordinary_keys_pass(key):
    assert storage.validate_key(key) == key


@pytest.mark.parametrize("uri", ["s3://", "s3://Bad_Bucket/x", "s3://b/x", "s3://bucket/../x", "s3://bucket//x"])
def test_malformed_s3_uris_are_refused(uri):
    with pytest.raises(storage.StorageError):
        storage.parse_s3_uri(uri)


def test_unsupported_scheme_is_a_clear_error():
    with pytest.raises(storage.StorageError, match="unsupported location"):
        storage.read_bytes("http://example.com/x.jpg")


def _round_trip(base: str) -> None:
    a = storage.join(base, "dir", "a.txt")
    storage.write_text(a, "hello\n\nworld\n")
    assert storage.exists(a)
    assert storage.read_text(a) == "hello\n\nworld\n"
    assert list(storage.iter_lines(a)) == ["hello", "world"]
    storage.write_bytes(storage.join(base, "dir", "b.bin"), b"\x00\x01")
    listed = list(storage.list_uris(storage.join(base, "dir") + "/"))
    assert [storage.basename(u) for u in listed] == ["a.txt", "b.bin"]
    assert not storage.exists(storage.join(base, "missing.txt"))
    with pytest.raises(storage.ObjectNotFound):
        storage.read_bytes(storage.join(base, "missing.txt"))
    with pytest.raises(storage.StorageError):
        storage.join(base, "../escape.txt")


def test_local_round_trip(tmp_path):
    _round_trip(str(tmp_path))


def test_s3_round_trip_on_moto(aws_mock):
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="alp-test-bucket")
    _round_trip("s3://alp-test-bucket/prefix")


def test_parent_and_basename():
    assert storage.parent("s3://b-1/x/y/m.jsonl") == "s3://b-1/x/y/"
    assert storage.parent("s3://b-1/x/y/") == "s3://b-1/x/"
    assert storage.basename("s3://b-1/x/y/") == "y"


def _write_once(base: str) -> None:
    uri = storage.join(base, "versions", "v0001", "manifest.jsonl")
    storage.write_text(uri, "first\n", if_none_match=True)
    with pytest.raises(storage.AlreadyExists, match="written once"):
        storage.write_text(uri, "second\n", if_none_match=True)
    assert storage.read_text(uri) == "first\n"
    assert [storage.basename(u) for u in storage.list_uris(storage.join(base, "versions") + "/")] == ["manifest.jsonl"]


def test_a_second_write_once_write_is_refused_locally_and_the_first_bytes_remain(tmp_path):
    _write_once(str(tmp_path))


def test_a_second_write_once_write_is_refused_on_s3_and_the_first_bytes_remain(aws_mock):
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="alp-test-bucket")
    _write_once("s3://alp-test-bucket/prefix")


def test_a_concurrent_conditional_write_conflict_is_already_exists_too(aws_mock, monkeypatch):
    """Given real S3's answer to a second conditional write of a key while the first is in flight (409
    ConditionalRequestConflict, which moto never gives), when write-once meets it, then it is AlreadyExists."""
    from botocore.exceptions import ClientError

    from alp import aws

    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="alp-test-bucket")

    def conflict(**_):
        raise ClientError({"Error": {"Code": "ConditionalRequestConflict", "Message": "in flight"},
                           "ResponseMetadata": {"HTTPStatusCode": 409}}, "PutObject")

    monkeypatch.setattr(aws.client("s3"), "put_object", conflict)
    with pytest.raises(storage.AlreadyExists):
        storage.write_bytes("s3://alp-test-bucket/k", b"x", if_none_match=True)
    with pytest.raises(ClientError):  # without write-once the same answer is an ordinary failure
        storage.write_bytes("s3://alp-test-bucket/k", b"x")


def test_an_ordinary_write_replaces(tmp_path):
    uri = str(tmp_path / "a.txt")
    storage.write_text(uri, "first")
    storage.write_text(uri, "second")
    assert storage.read_text(uri) == "second"


def test_a_version_is_read_by_its_id_and_a_gone_version_is_not_found(aws_mock):
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="alp-versioned")
    s3.put_bucket_versioning(Bucket="alp-versioned", VersioningConfiguration={"Status": "Enabled"})
    storage.write_bytes("s3://alp-versioned/img.jpg", b"first")
    first = storage.read_object("s3://alp-versioned/img.jpg")
    storage.write_bytes("s3://alp-versioned/img.jpg", b"second")
    assert first.data == b"first" and first.version_id
    assert storage.read_bytes("s3://alp-versioned/img.jpg") == b"second"
    assert storage.read_bytes("s3://alp-versioned/img.jpg", first.version_id) == b"first"
    assert storage.read_object("s3://alp-versioned/img.jpg").version_id not in (None, first.version_id)
    s3.delete_object(Bucket="alp-versioned", Key="img.jpg", VersionId=first.version_id)  # a lifecycle expiry
    with pytest.raises(storage.ObjectNotFound, match="version"):
        storage.read_bytes("s3://alp-versioned/img.jpg", first.version_id)


def test_an_unversioned_read_says_no_version_and_a_local_file_has_none(aws_mock, tmp_path):
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="alp-plain")
    storage.write_bytes("s3://alp-plain/a", b"a")
    assert storage.read_object("s3://alp-plain/a") == storage.StoredObject(b"a", None)
    (tmp_path / "a").write_bytes(b"a")
    assert storage.read_object(str(tmp_path / "a")) == storage.StoredObject(b"a", None)
    with pytest.raises(storage.StorageError, match="no versions"):
        storage.read_bytes(str(tmp_path / "a"), "v1")


def test_write_once_on_a_filesystem_without_hard_links_still_refuses_an_existing_file(tmp_path, monkeypatch):
    import errno
    import os

    def no_links(src, dst):
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    target = str(tmp_path / "v0001" / "manifest.jsonl")
    storage.write_text(target, "first\n", if_none_match=True)
    with pytest.raises(storage.AlreadyExists):
        storage.write_text(target, "second\n", if_none_match=True)
    assert storage.read_text(target) == "first\n"
    assert sorted(p.name for p in (tmp_path / "v0001").iterdir()) == ["manifest.jsonl"]  # no temporary file left
