"""Pinned pixels: a label always describes the bytes it was made on, for as long as the label lives.

A line names its image by ``source-ref``. Uploads live in the unlabeled bucket, where new bytes may be uploaded
under the same key (the old labels would then describe other pixels) and whose lifecycle expires noncurrent
versions (the Requeue round trip makes many; no lifecycle filter can say "except the versions a dataset
references"). So a dataset version never points there: every image entering a version is copied once into the
data bucket, content-addressed, at ``<data_root><images_prefix>sha256/<2 hex>/<sha256><extension>`` (write-once,
never expired), and the version's line names that copy. ``alp-object.sha256`` records the hash of the labeled
bytes, so every reader can check that the pixels it reads are those.

Where a pin comes from:

* Infer records, in its output lines' ``alp-object``, the sha256 of the bytes it read (and the version id it
  read, when the batch line had none). People label those lines, and the labeled lines keep ``alp-object``;
  Merge reads that version again and refuses the line when the bytes differ (:class:`PixelsChanged`) or are gone
  (:class:`PixelsMissing`).
* A line with no sha256 (a manifest made by hand, a seed set, a batch inferred before pins existed) is pinned at
  Merge with the bytes read then: nothing earlier recorded what was labeled.

Lines with no pin at all are dataset versions written before this module existed: readers accept them with a
warning, and :func:`verify_lines` reports them as ``unpinned`` (not ok).
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import re
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from pydantic import BaseModel, Field

from alp import storage
from alp.manifest import OBJECT_KEY, ManifestError, ManifestLine, ObjectIdentity
from alp.settings import Settings

log = logging.getLogger(__name__)

_EXTENSION = re.compile(r"^\.[a-z0-9]{1,10}$")
# images read (and copied) at once by `verify_lines` and a merge's pinning: S3 calls wait on the network, not the CPU
_COPY_ATTEMPTS = 5  # a conditional write racing another one still in flight (409): retried while it settles
PIXEL_WORKERS = 8

PixelState = Literal["ok", "changed", "missing", "unpinned"]


class PixelsError(ValueError):
    """The bytes of a line's image are not the ones its labels describe."""


class PixelsChanged(PixelsError):
    """The image's bytes differ from the pinned sha256."""


class PixelsMissing(PixelsError):
    """The image (or the version of it that was labeled) is gone."""


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_name(line: ManifestLine) -> str:
    """How people know the image: the uploaded object's key (``alp-object.key``), else the ``source-ref``."""
    obj = line.data.get(OBJECT_KEY)
    if isinstance(obj, dict) and isinstance(obj.get("key"), str):
        return str(obj["key"])
    return str(line.data.get("source-ref", "<inline>"))


def pinned_sha256(line: ManifestLine) -> str | None:
    """The sha256 the line's labels were made on; None for a line with no pin."""
    identity = line.object_identity()
    return identity.sha256 if identity is not None else None


def _reads_the_upload(line: ManifestLine, identity: ObjectIdentity | None) -> bool:
    """``source-ref`` is the object ``alp-object`` names (a batch line; not a dataset line, whose ``source-ref`` is
    its content-addressed copy): only then do version ids of the one belong to the other."""
    ref = line.data.get("source-ref")
    if identity is None or not isinstance(ref, str) or not storage.is_s3(ref):
        return False
    loc = storage.parse_s3_uri(ref)
    return (loc.bucket, loc.key) == (identity.bucket, identity.key)


def pinned_version(line: ManifestLine) -> str | None:
    """The S3 version of ``source-ref`` that was labeled: ``alp-object.version_id``, while ``source-ref`` is the
    object ``alp-object`` names."""
    identity = line.object_identity()
    if identity is None or not identity.version_id or not _reads_the_upload(line, identity):
        return None
    return identity.version_id


def with_read_pin(line: ManifestLine, sha256: str, version_id: str | None) -> ManifestLine:
    """``line`` with what its first read saw recorded in ``alp-object``: the bytes' sha256 and the version read
    (when the line named none). A pin already there is kept: it is what was labeled. Lines without ``alp-object``
    are returned as they are (Merge pins them)."""
    identity = line.object_identity()
    if identity is None or identity.sha256:
        return line
    version = identity.version_id or (version_id if _reads_the_upload(line, identity) else None)
    return line.with_model(OBJECT_KEY, identity.model_copy(update={"sha256": sha256, "version_id": version}))


def content_uri(data_root: str, settings: Settings, sha256: str, original_ref: str) -> str:
    """Where the copy of the bytes with ``sha256`` lives: ``<data_root><images_prefix>sha256/<2 hex>/<sha256><ext>``.
    The extension is the original's, lower-cased (tools downstream pick a decoder by it); an odd one is dropped."""
    base = storage.basename(original_ref)
    ext = "." + base.rsplit(".", 1)[1].lower() if "." in base else ""
    ext = ext if _EXTENSION.match(ext) else ""
    prefix = settings.storage.images_prefix.strip("/")
    return storage.join(data_root, prefix, "sha256", sha256[:2], sha256 + ext)


def _identity_of_plain_ref(ref: str, version_id: str | None) -> ObjectIdentity:
    """The identity of a line that carried none: its old ``source-ref`` stays the image's key, so records of the
    same image still merge (``alp.datasets.image_key``). A local file has no bucket."""
    if storage.is_s3(ref):
        loc = storage.parse_s3_uri(ref)
        return ObjectIdentity(bucket=loc.bucket, key=loc.key, version_id=version_id)
    return ObjectIdentity(bucket="", key=ref)


def _current(ref: str) -> storage.StoredObject | None:
    try:
        return storage.read_object(ref)
    except storage.ObjectNotFound:
        return None


def _current_if_same(ref: str, pin: str | None) -> storage.StoredObject | None:
    """The key's current object when it holds the pinned bytes: the labeled version expired, or the upload was
    put back under a new version id (a restarted local project), but the pixels are the same."""
    current = _current(ref) if pin else None
    return current if current is not None and sha256_of(current.data) == pin else None


def pin_copy(line: ManifestLine, data_root: str, settings: Settings, *,
             people_saw_current: bool = False) -> ManifestLine:
    """``line`` with its image copied, content-addressed, into the data root and ``source-ref`` naming the copy.

    Reads the labeled version of the image (``alp-object.version_id``, else the current object) and checks it
    against ``alp-object.sha256`` when the line has one; raises :class:`PixelsChanged` or :class:`PixelsMissing`
    (naming the image) when the labeled bytes cannot be had. The copy is written once: when it exists already,
    the same key means the same bytes (the key is their hash), and it is not read back. A copy someone replaced
    anyway is found by every reader, which checks the hash as it reads, and by ``alp datasets verify``.
    """
    ref = line.source_ref
    identity = line.object_identity()
    version = pinned_version(line)
    name = image_name(line)
    pin = identity.sha256 if identity is not None else None
    try:
        stored = storage.read_object(ref, version)
    except storage.ObjectNotFound as exc:
        same = _current_if_same(ref, pin) if version else None
        if same is None:  # the key's current bytes are not the labeled ones either (or nothing says which)
            raise PixelsMissing(f"{name}: the labeled image is gone ({exc})") from None
        stored = same
    sha = sha256_of(stored.data)
    if pin and pin != sha:
        raise PixelsChanged(f"{name}: the bytes at {ref} (sha256 {sha[:12]}...) are not the ones labeled (sha256 "
                            f"{pin[:12]}...): the upload was replaced after it was read for labeling")
    if people_saw_current and version and pin:
        # Ground Truth and Label Studio show people the key's current object, not a version: labels drawn on
        # bytes that replaced the pinned ones describe other pixels
        shown = _current(ref)
        if shown is not None and sha256_of(shown.data) != pin:
            raise PixelsChanged(f"{name}: the upload at {ref} was replaced while people labeled it (now sha256 "
                                f"{sha256_of(shown.data)[:12]}..., read for labeling {pin[:12]}...)")
    target = content_uri(data_root, settings, sha, ref)
    # AlreadyExists: the same hash, the same bytes; an earlier version (or a racing merge) copied them. S3 also
    # answers 409 to a conditional write racing another one still in flight, which may yet fail: the copy is
    # trusted once it is there.
    for _ in range(_COPY_ATTEMPTS):
        try:
            storage.write_bytes(target, stored.data, content_type=mimetypes.guess_type(target)[0], if_none_match=True)
            break
        except storage.AlreadyExists:
            if storage.exists(target):
                break
            time.sleep(1.0)
    else:
        raise storage.StorageError(f"{name}: the copy {target} could not be written (a concurrent write kept "
                                   "conflicting)")
    if identity is None:
        identity = _identity_of_plain_ref(ref, stored.version_id)
    elif not identity.version_id and _reads_the_upload(line, identity):
        identity = identity.model_copy(update={"version_id": stored.version_id})
    identity = identity.model_copy(update={"sha256": sha})
    return line.with_fields(**{"source-ref": target, OBJECT_KEY: identity.dump()})


def read_pinned(line: ManifestLine) -> bytes:
    """The bytes of the line's image, checked against its pin as they are read.

    Raises :class:`PixelsChanged` or :class:`PixelsMissing` for a pinned line whose bytes are not the labeled ones.
    A line with no pin (:func:`pinned_sha256` None) is read unchecked; a missing file then raises
    :class:`alp.storage.ObjectNotFound`, as any read does."""
    expected = pinned_sha256(line)
    ref = line.source_ref
    try:
        data = storage.read_bytes(ref)
    except storage.ObjectNotFound as exc:
        if expected is None:
            raise
        raise PixelsMissing(f"{image_name(line)}: the pinned copy {ref} is gone ({exc})") from None
    if expected is not None and sha256_of(data) != expected:
        raise PixelsChanged(f"{image_name(line)}: {ref} has sha256 {sha256_of(data)[:12]}..., the labels were made "
                            f"on {expected[:12]}...")
    return data


class PinnedImage(BaseModel):
    """One line's image in a :class:`PixelReport`."""

    key: str = Field(description="the uploaded object's key (alp-object.key), else the source-ref")
    source_ref: str


class PixelReport(BaseModel):
    """What :func:`verify_lines` found: every line's image read and checked against its pin."""

    lines: int
    ok: int
    changed: list[PinnedImage] = Field(default_factory=list)
    missing: list[PinnedImage] = Field(default_factory=list)
    unpinned: list[PinnedImage] = Field(default_factory=list, description="lines with no sha256 (written before "
                                                                            "pins): nothing to check them against")

    @property
    def all_ok(self) -> bool:
        return self.ok == self.lines

    def counts(self) -> dict[str, int]:
        return {"lines": self.lines, "ok": self.ok, "changed": len(self.changed), "missing": len(self.missing),
                "unpinned": len(self.unpinned)}


def pixel_state(line: ManifestLine) -> PixelState:
    """Whether the line's image holds the bytes its pin names."""
    if pinned_sha256(line) is None:
        return "unpinned"
    try:
        read_pinned(line)
    except PixelsMissing:
        return "missing"
    except PixelsChanged:
        return "changed"
    return "ok"


def verify_lines(lines: Iterable[ManifestLine], *, workers: int = PIXEL_WORKERS) -> PixelReport:
    """Read every line's image and compare it with its pin; the report lists what is not as labeled."""
    lines = list(lines)
    for line in lines:
        if not isinstance(line.data.get("source-ref"), str):
            raise ManifestError(f"a dataset line has inline 'source', not an image: {line!r}")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        states = list(pool.map(pixel_state, lines))
    found: dict[PixelState, list[PinnedImage]] = {"ok": [], "changed": [], "missing": [], "unpinned": []}
    for line, state in zip(lines, states, strict=True):
        found[state].append(PinnedImage(key=image_name(line), source_ref=line.source_ref))
    return PixelReport(lines=len(lines), ok=len(found["ok"]), changed=found["changed"], missing=found["missing"],
                       unpinned=found["unpinned"])


def describe_problems(report: PixelReport, limit: int = 20) -> str:
    """The changed and missing images of ``report``, the first ``limit`` of them named, for an error message."""
    problems = [f"{p.key} changed ({p.source_ref})" for p in report.changed]
    problems += [f"{p.key} missing ({p.source_ref})" for p in report.missing]
    more = f" and {len(problems) - limit} more" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more
