"""Storage adapter: every manifest, image and output location may be an ``s3://`` URI or a local path.

Users try the pipeline on a folder; the tests and the demo use S3 on moto; the cloud uses S3. Callers
never branch on the scheme themselves. Keys are validated before use: ``..`` segments, a leading ``/``,
backslashes and control characters are refused with a clear error, so an uploaded object's name cannot
steer a write outside its prefix.
"""

from __future__ import annotations

import os
import re
import threading
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from alp import aws

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
MAX_KEY_BYTES = 1024


class StorageError(ValueError):
    """A location is malformed or unsafe, or an object is missing."""


class ObjectNotFound(StorageError, FileNotFoundError):
    """The object or file does not exist (or not in the version asked for)."""


class AlreadyExists(StorageError):
    """A write-once write found something at its location already; what is there was left untouched."""


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def validate_key(key: str, *, allow_empty: bool = False) -> str:
    """Return ``key`` if it is a safe relative object key, else raise :class:`StorageError`."""
    if not key:
        if allow_empty:
            return key
        raise StorageError("empty object key")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise StorageError(f"object key longer than {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise StorageError(f"object key {key[:80]!r} starts with '/'")
    if "\\" in key:
        raise StorageError(f"object key {key[:80]!r} contains a backslash")
    if any(unicodedata.category(ch) == "Cc" for ch in key):
        raise StorageError(f"object key {key[:80]!r} contains control characters")
    # Percent-decoded too: S3 event notifications URL-encode keys, and a tool downstream may decode again.
    if any(seg in ("..", ".") or unquote(seg) in ("..", ".") for seg in key.split("/")):
        raise StorageError(f"object key {key[:80]!r} has a '.' or '..' segment")
    return key


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def parse_s3_uri(uri: str, *, allow_empty_key: bool = False) -> S3Location:
    """Split ``s3://bucket/key``; malformed URIs and unsafe keys raise :class:`StorageError`."""
    if not is_s3(uri):
        raise StorageError(f"not an s3:// URI: {uri[:120]!r}")
    rest = uri[5:]
    bucket, _, key = rest.partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise StorageError(f"malformed bucket name in {uri[:120]!r}")
    validate_key(key, allow_empty=allow_empty_key)
    return S3Location(bucket, key)


def _local_path(uri: str) -> Path:
    if uri.startswith("file://"):
        uri = uri[7:]
    if "://" in uri:
        raise StorageError(f"unsupported location {uri[:120]!r}: use s3://bucket/key or a local path")
    if any(unicodedata.category(ch) == "Cc" for ch in uri):
        raise StorageError(f"path {uri[:80]!r} contains control characters")
    return Path(uri)


def join(base: str, *parts: str) -> str:
    """Join a base location and relative parts; each part is validated as a key."""
    for part in parts:
        validate_key(part.strip("/") if part.endswith("/") else part)
    rel = "/".join(p.strip("/") for p in parts if p)
    if is_s3(base):
        return base.rstrip("/") + "/" + rel if base.rstrip("/") != "s3:/" else base + rel
    return str(Path(_local_path(base), rel))


def parent(uri: str) -> str:
    """The folder that holds ``uri`` (with a trailing slash for S3)."""
    if is_s3(uri):
        return uri.rstrip("/").rsplit("/", 1)[0] + "/"
    return str(_local_path(uri.rstrip("/")).parent) + "/"


def basename(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class StoredObject:
    """The bytes of one read and the S3 version they came from (None: a bucket that keeps no versions, or a local
    file)."""

    data: bytes
    version_id: str | None


def read_object(uri: str, version_id: str | None = None) -> StoredObject:
    """The object's bytes, of ``version_id`` when given (else the current version), and the version read.

    A version that does not exist (never did, or a lifecycle rule expired it) is :class:`ObjectNotFound`, like a
    missing key: either way the bytes asked for are gone. Local files have no versions; asking for one is an error.
    """
    if is_s3(uri):
        loc = parse_s3_uri(uri)
        s3 = aws.client("s3")
        pinned = {"VersionId": version_id} if version_id else {}
        try:
            resp = s3.get_object(Bucket=loc.bucket, Key=loc.key, **pinned)
        except s3.exceptions.ClientError as exc:
            if aws.error_code(exc) in ("NoSuchKey", "NoSuchVersion", "404", "NotFound"):
                which = f" (version {version_id})" if version_id else ""
                raise ObjectNotFound(f"no such object: {uri}{which}") from None
            raise
        body: bytes = resp["Body"].read()
        version = resp.get("VersionId")
        return StoredObject(body, None if version in (None, "null") else str(version))
    if version_id:
        raise StorageError(f"{uri}: a local file has no versions (asked for version {version_id})")
    path = _local_path(uri)
    if not path.is_file():
        raise ObjectNotFound(f"no such file: {uri}")
    return StoredObject(path.read_bytes(), None)


def read_bytes(uri: str, version_id: str | None = None) -> bytes:
    """The object's bytes (of ``version_id`` when given); see :func:`read_object`."""
    return read_object(uri, version_id).data


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


# What S3 answers a conditional write (If-None-Match: *) that finds the key taken: 412 when an object is there, 409
# when another conditional write of the same key is in flight (real S3; moto answers 412 only).
_TAKEN = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")


def write_bytes(uri: str, data: bytes, *, content_type: str | None = None, if_none_match: bool = False) -> str:
    """Write ``data``; local parents are created. Returns ``uri``.

    ``if_none_match``: write once. When something is at ``uri`` already (or, on S3, another write-once write of the
    same key races this one) nothing is written and :class:`AlreadyExists` is raised; what is there stays as it was.
    """
    if is_s3(uri):
        loc = parse_s3_uri(uri)
        extra: dict[str, str] = {"ContentType": content_type} if content_type else {}
        if if_none_match:
            extra["IfNoneMatch"] = "*"
        s3 = aws.client("s3")
        try:
            s3.put_object(Bucket=loc.bucket, Key=loc.key, Body=data, **extra)
        except s3.exceptions.ClientError as exc:
            if if_none_match and (aws.error_code(exc) in _TAKEN or aws.http_status(exc) in (409, 412)):
                raise AlreadyExists(f"{uri} exists already: written once, never replaced") from None
            raise
        return uri
    path = _local_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    tmp.write_bytes(data)
    if not if_none_match:
        tmp.replace(path)  # atomic on one filesystem: a crash never leaves half a manifest behind
        return uri
    try:
        # a hard link is created only where no file is: the complete file appears at once, and an existing one
        # (written by another process a moment ago) is never replaced
        os.link(tmp, path)
    except FileExistsError:
        raise AlreadyExists(f"{uri} exists already: written once, never replaced") from None
    except OSError:
        _create_exclusively(path, data, uri)  # a filesystem without hard links
    finally:
        tmp.unlink(missing_ok=True)
    return uri


def _create_exclusively(path: Path, data: bytes, uri: str) -> None:
    """Write-once without a hard link: O_EXCL refuses an existing file (a reader may briefly see it partial)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise AlreadyExists(f"{uri} exists already: written once, never replaced") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def write_text(uri: str, text: str, *, content_type: str | None = None, if_none_match: bool = False) -> str:
    return write_bytes(uri, text.encode("utf-8"), content_type=content_type, if_none_match=if_none_match)


def write_file(uri: str, local_path: str | Path, *, content_type: str | None = None) -> str:
    """Copy a local file to ``uri`` without reading it into memory (multipart upload for big files)."""
    if is_s3(uri):
        loc = parse_s3_uri(uri)
        extra = {"ExtraArgs": {"ContentType": content_type}} if content_type else {}
        aws.client("s3").upload_file(str(local_path), loc.bucket, loc.key, **extra)
        return uri
    path = _local_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    import shutil

    shutil.copyfile(local_path, tmp)
    tmp.replace(path)
    return uri


def _not_found(exc: Exception) -> bool:
    """A HEAD's 404 (HEAD answers carry no body, so the code is the status)."""
    return aws.error_code(exc) in ("404", "NoSuchKey", "NotFound")


def exists(uri: str) -> bool:
    if is_s3(uri):
        loc = parse_s3_uri(uri)
        s3 = aws.client("s3")
        try:
            s3.head_object(Bucket=loc.bucket, Key=loc.key)
            return True
        except s3.exceptions.ClientError as exc:
            if _not_found(exc):
                return False
            raise
    return _local_path(uri).exists()


def _head_object(uri: str) -> dict[str, Any]:
    """S3's HEAD answer for ``uri``; :class:`ObjectNotFound` when the object is gone."""
    loc = parse_s3_uri(uri)
    s3 = aws.client("s3")
    try:
        head: dict[str, Any] = s3.head_object(Bucket=loc.bucket, Key=loc.key)
    except s3.exceptions.ClientError as exc:
        if _not_found(exc):
            raise ObjectNotFound(f"no such object: {uri}") from None
        raise
    return head


def last_modified(uri: str) -> float:
    """When the object or file was last written (seconds since the epoch); :class:`ObjectNotFound` when gone."""
    if is_s3(uri):
        return float(_head_object(uri)["LastModified"].timestamp())
    path = _local_path(uri)
    if not path.exists():
        raise ObjectNotFound(f"no such file: {uri}")
    return path.stat().st_mtime


@dataclass(frozen=True)
class ObjectHead:
    """What HEAD says of an S3 object: its user metadata (lower-case names), version and the headers a copy
    onto itself must carry over."""

    metadata: dict[str, str]
    version_id: str | None
    headers: dict[str, Any]


# what a copy would change unless given again: the headers MetadataDirective=REPLACE drops, the storage class
# (a copy is STANDARD by default; never an archive class: the copy must stay readable) and the object's own
# KMS key (a copy takes the bucket's default key)
_KEPT_HEADERS = ("ContentType", "ContentEncoding", "ContentDisposition", "ContentLanguage", "CacheControl",
                 "Expires")
_READABLE_STORAGE_CLASSES = ("STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "REDUCED_REDUNDANCY")


def object_head(uri: str) -> ObjectHead:
    """HEAD of an S3 object; raises :class:`ObjectNotFound` when it is gone."""
    if not is_s3(uri):
        raise StorageError(f"{uri}: not an S3 object")
    head = _head_object(uri)
    version = head.get("VersionId")
    headers: dict[str, Any] = {k: head[k] for k in _KEPT_HEADERS if head.get(k)}
    if head.get("StorageClass") in _READABLE_STORAGE_CLASSES:
        headers["StorageClass"] = head["StorageClass"]
    if head.get("ServerSideEncryption") in ("aws:kms", "aws:kms:dsse") and head.get("SSEKMSKeyId"):
        headers.update(ServerSideEncryption=head["ServerSideEncryption"], SSEKMSKeyId=head["SSEKMSKeyId"])
    return ObjectHead(metadata={str(k).lower(): str(v) for k, v in (head.get("Metadata") or {}).items()},
                      version_id=None if version in (None, "null") else str(version), headers=headers)


def bucket_versioned(bucket: str) -> bool:
    """True when ``bucket`` keeps object versions now (versioning ``Enabled``; not never-enabled or suspended)."""
    return bool(aws.client("s3").get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled")


def renew_object(uri: str, head: ObjectHead, metadata: dict[str, str]) -> str | None:
    """Copy the version ``head`` describes onto its own key with new user metadata: the same bytes as a new
    version, which S3 reports like an upload (``Object Created``). Returns the new version id; None when the
    bucket keeps no versions (then the copy has the old ETag and no version, and a deduplicating consumer
    cannot tell it from the first upload)."""
    loc = parse_s3_uri(uri)
    source: dict[str, str] = {"Bucket": loc.bucket, "Key": loc.key}
    if head.version_id:
        source["VersionId"] = head.version_id  # the bytes that were judged, even if the key changed since
    resp = aws.client("s3").copy_object(Bucket=loc.bucket, Key=loc.key, CopySource=source,
                                        MetadataDirective="REPLACE", Metadata=metadata, **head.headers)
    version = resp.get("VersionId")
    return None if version in (None, "null") else str(version)


def list_uris(prefix: str) -> Iterator[str]:
    """Every object under ``prefix`` (recursively), in lexical order."""
    if is_s3(prefix):
        loc = parse_s3_uri(prefix, allow_empty_key=True)
        paginator = aws.client("s3").get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=loc.bucket, Prefix=loc.key):
            for obj in page.get("Contents", []):
                yield f"s3://{loc.bucket}/{obj['Key']}"
        return
    root = _local_path(prefix)
    if root.is_file():
        yield str(root)
    elif root.is_dir():
        yield from sorted(str(p) for p in root.rglob("*") if p.is_file())


def iter_lines(uri: str) -> Iterator[str]:
    """Stream the non-empty lines of a text object without holding the whole object for local files."""
    if is_s3(uri):
        loc = parse_s3_uri(uri)
        s3 = aws.client("s3")
        try:
            body = s3.get_object(Bucket=loc.bucket, Key=loc.key)["Body"]
        except s3.exceptions.NoSuchKey:
            raise ObjectNotFound(f"no such object: {uri}") from None
        for raw in body.iter_lines():
            line = raw.decode("utf-8").strip()
            if line:
                yield line
        return
    path = _local_path(uri)
    if not path.is_file():
        raise ObjectNotFound(f"no such file: {uri}")
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line:
                yield line


def local_copy(uri: str, dest_dir: str | Path) -> Path:
    """A local file with the object's content (the file itself when ``uri`` is local)."""
    if not is_s3(uri):
        path = _local_path(uri)
        if not path.is_file():
            raise ObjectNotFound(f"no such file: {uri}")
        return path
    dest = Path(dest_dir) / basename(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(read_bytes(uri))
    return dest
