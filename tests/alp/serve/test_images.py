"""Where an image may come from: allowed hosts and buckets, the image root, the size limit; S3 through moto."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from alp import aws
from alp.serve.errors import ServeError
from alp.serve.images import ImageFetcher, ImagePolicy, Origin, StudioOrigin, decode
from alp.settings import InferenceSettings


def fetch(policy: ImagePolicy, ref: str, studio: StudioOrigin | None = None) -> bytes:
    async def go() -> bytes:
        async with httpx.AsyncClient() as client:
            return await ImageFetcher(policy, client).fetch(ref, studio)

    return asyncio.run(go())


def refused(policy: ImagePolicy, ref: str, studio: StudioOrigin | None = None) -> ServeError:
    with pytest.raises(ServeError) as caught:
        fetch(policy, ref, studio)
    return caught.value


def test_allowed_hosts_take_hosts_ports_urls_and_buckets():
    policy = ImagePolicy.build(["files.example.com", "cdn.example.com:8443", "https://img.example.com",
                                "s3://frames-bucket", "alp-unlabeled-1.s3.us-east-1.amazonaws.com"], None, 10)
    admitted = {h: any(r.admits(Origin.of(h)) for r in policy.hosts) for h in (  # type: ignore[arg-type]
        "http://files.example.com:9999/a", "https://cdn.example.com:8443/a", "https://cdn.example.com/a",
        "https://img.example.com/a", "http://img.example.com/a", "https://evil.example.com/a")}
    assert admitted == {"http://files.example.com:9999/a": True, "https://cdn.example.com:8443/a": True,
                        "https://cdn.example.com/a": False, "https://img.example.com/a": True,
                        "http://img.example.com/a": False, "https://evil.example.com/a": False}
    # a virtual-hosted S3 name (what the stack lists for presigned URLs) allows its bucket's s3:// URIs too
    assert policy.buckets == {"frames-bucket", "alp-unlabeled-1"}
    with pytest.raises(ValueError, match="not a host"):
        ImagePolicy.build(["http://"], None, 10)


def test_local_paths_stay_inside_the_image_root(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.png").write_bytes(b"x" * 5)
    (tmp_path / "outside.png").write_bytes(b"y")
    (root / "link.png").symlink_to(tmp_path / "outside.png")
    policy = ImagePolicy.build([], str(root), 100)
    assert fetch(policy, "sub/a.png") == b"xxxxx" == fetch(policy, str(root / "sub" / "a.png"))
    assert fetch(policy, f"file://{root}/sub/a.png") == b"xxxxx"
    for escape in ("../outside.png", "sub/../../outside.png", str(tmp_path / "outside.png"), "link.png"):
        assert refused(policy, escape).reason == "path_not_allowed", escape
    assert refused(ImagePolicy.build([], None, 100), "sub/a.png").reason == "path_not_allowed"
    assert refused(ImagePolicy.build([], str(root), 3), "sub/a.png").status == 413


def test_a_relative_url_needs_label_studios_host_and_goes_there():
    policy = ImagePolicy.build([], None, 100)
    # no /setup seen: a path is a local path, and there is no image root
    assert refused(policy, "/data/upload/1/a.png").reason == "path_not_allowed"
    # Label Studio's host is known: the path is its URL (nothing listens on port 9: the fetch itself fails)
    studio = StudioOrigin(url="http://127.0.0.1:9", token="secret-token")
    assert refused(policy, "/data/upload/1/a.png", studio).reason == "image_fetch_failed"
    assert "secret-token" not in repr(studio)


@pytest.mark.usefixtures("aws_mock")
def test_s3_images_only_from_allowed_buckets_and_within_the_size_limit():
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="frames")
    s3.put_object(Bucket="frames", Key="cam/a.png", Body=b"p" * 50)
    policy = ImagePolicy.build(["s3://frames"], None, 100)
    assert fetch(policy, "s3://frames/cam/a.png") == b"p" * 50
    assert refused(policy, "s3://frames/cam/missing.png").status == 404
    assert refused(policy, "s3://other/cam/a.png").reason == "bucket_not_allowed"
    assert refused(policy, "s3://frames/../x").status == 400
    assert refused(ImagePolicy.build(["s3://frames"], None, 10), "s3://frames/cam/a.png").status == 413


@pytest.mark.parametrize("data, status, reason", [
    (b"", 422, "empty_file"),
    (b"plain text, not a picture", 415, "not_an_image"),
])
def test_decoding_maps_the_decoders_reasons_to_statuses(data, status, reason):
    with pytest.raises(ServeError) as caught:
        decode(data, InferenceSettings())
    assert (caught.value.status, caught.value.reason) == (status, reason)
