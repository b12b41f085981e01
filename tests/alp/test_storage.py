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
