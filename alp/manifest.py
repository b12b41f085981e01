"""Ground Truth augmented-manifest lines, typed.

A line is a JSON object with ``source-ref`` (an S3 URI or path) or ``source`` (inline), plus label
attributes and their ``<attr>-metadata``. Two label kinds are used:

* head boxes: Ground Truth's built-in bounding-box output (``groundtruth/object-detection``), pixels,
  ``image_size`` a one-element list;
* keypoints: a custom task (Ground Truth has no keypoint task type); the content is this project's
  :class:`KeypointLabel` with COCO's visibility ``v`` (0 outside / not labeled, 1 occluded, 2 visible).

Both the documented and the observed spellings are parsed (``job-name``/``job_name``,
``creation-date``/``creation_date``, ``groundtruth/custom``/``groundTruth/custom``); lines are written with
the spellings real Ground Truth outputs show. The pipeline's own keys on a line start with ``alp-``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_LINE_CHARS = 100_000
BOX_TYPE = "groundtruth/object-detection"
CUSTOM_TYPE = "groundtruth/custom"
_CUSTOM_TYPES = {"groundtruth/custom", "groundTruth/custom"}

# Keys the pipeline adds to lines (Ground Truth passes unknown keys through untouched).
OBJECT_KEY = "alp-object"            # batch manifests: the uploaded object's identity
PREANNOTATION_KEY = "alp-preannotation"  # human-labeling input: the model's proposal and the route reason
ROUTE_KEY = "alp-route"              # every routed line: route, reason, score
QUARANTINE_KEY = "alp-quarantine"    # quarantined lines: reason and stage
GOLD_KEY = "alp-gold"                # gold items mixed into labeling jobs (known labels)

Route = Literal["auto", "human", "audit", "quarantine"]
ROUTES: tuple[Route, ...] = ("auto", "human", "audit", "quarantine")


class ManifestError(ValueError):
    """A manifest line is not valid; the message says which field and why."""


def utc_now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError("must be a finite number")
    return v


class ImageSize(_Model):
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    depth: int = Field(3, ge=1, le=4)


class BoxAnnotation(_Model):
    class_id: int = Field(0, ge=0)
    left: float
    top: float
    width: float = Field(ge=0)
    height: float = Field(ge=0)

    _check = field_validator("left", "top", "width", "height")(_finite)

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.left, self.top, self.left + self.width, self.top + self.height)


class BoundingBoxLabel(_Model):
    """Ground Truth's bounding-box label content (pixels)."""

    image_size: list[ImageSize] = Field(min_length=1, max_length=1)
    annotations: list[BoxAnnotation] = Field(default_factory=list)

    @property
    def size(self) -> ImageSize:
        return self.image_size[0]


class ObjectConfidence(_Model):
    confidence: float = Field(ge=0.0, le=1.0)


class LabelMetadata(_Model):
    """Fields every ``<attr>-metadata`` carries; unknown extra fields are ignored on parse."""

    type: str
    human_annotated: Literal["yes", "no"] = Field(
        "yes", validation_alias=AliasChoices("human-annotated", "human_annotated"), serialization_alias="human-annotated"
    )
    creation_date: str = Field(
        default_factory=utc_now_iso,
        validation_alias=AliasChoices("creation-date", "creation_date"),
        serialization_alias="creation-date",
    )
    job_name: str = Field(
        "", validation_alias=AliasChoices("job-name", "job_name"), serialization_alias="job-name"
    )
    confidence: float | None = Field(None, ge=0.0, le=1.0)


class BoxMetadata(LabelMetadata):
    type: str = BOX_TYPE
    objects: list[ObjectConfidence] = Field(default_factory=list)
    class_map: dict[str, str] = Field(
        default_factory=lambda: {"0": "head"},
        validation_alias=AliasChoices("class-map", "class_map"),
        serialization_alias="class-map",
    )

    @field_validator("type")
    @classmethod
    def _box_type(cls, v: str) -> str:
        if v != BOX_TYPE:
            raise ValueError(f"expected {BOX_TYPE!r}")
        return v


class Keypoint(_Model):
    """One keypoint in pixels. ``v``: 0 outside / not labeled, 1 occluded, 2 visible (COCO)."""

    name: str
    x: float
    y: float
    v: int = Field(ge=0, le=2)
    score: float | None = Field(None, ge=0.0, le=1.0, description="main pose model confidence")
    score_visible: float | None = Field(None, ge=0.0, le=1.0, description="visible-only model confidence")

    _check = field_validator("x", "y")(_finite)


class PersonKeypoints(_Model):
    keypoints: list[Keypoint]
    head_box_index: int | None = Field(None, ge=0, description="index into the head-box annotations")
    bbox: list[float] | None = Field(None, min_length=4, max_length=4, description="person box l,t,w,h")
    score: float | None = Field(None, ge=0.0, le=1.0)

    @field_validator("bbox")
    @classmethod
    def _bbox(cls, v: list[float] | None) -> list[float] | None:
        if v is not None:
            for x in v:
                _finite(x)
            if v[2] < 0 or v[3] < 0:
                raise ValueError("bbox width and height must be >= 0")
        return v


class KeypointLabel(_Model):
    """The custom keypoint label: persons with their keypoints in the schema's order."""

    image_size: list[ImageSize] = Field(min_length=1, max_length=1)
    keypoint_schema: str = Field("incabin17", validation_alias=AliasChoices("schema", "keypoint_schema"),
                                 serialization_alias="schema")
    persons: list[PersonKeypoints] = Field(default_factory=list)

    @property
    def size(self) -> ImageSize:
        return self.image_size[0]

    def check_schema(self, names: Iterable[str]) -> None:
        """Raise :class:`ManifestError` unless every person has exactly the schema's points, in order."""
        expected = list(names)
        for i, person in enumerate(self.persons):
            got = [k.name for k in person.keypoints]
            if got != expected:
                raise ManifestError(
                    f"person {i}: expected {len(expected)} keypoints {expected[:3]}..., got {len(got)} {got[:3]}..."
                )


class KeypointMetadata(LabelMetadata):
    type: str = CUSTOM_TYPE

    @field_validator("type")
    @classmethod
    def _custom_type(cls, v: str) -> str:
        if v not in _CUSTOM_TYPES:
            raise ValueError(f"expected one of {sorted(_CUSTOM_TYPES)}")
        return CUSTOM_TYPE


class ScoredBox(_Model):
    left: float
    top: float
    width: float = Field(ge=0)
    height: float = Field(ge=0)
    score: float = Field(ge=0.0, le=1.0)
    label: str = "head"

    _check = field_validator("left", "top", "width", "height")(_finite)


PartRoute = Literal["auto", "human", "audit"]
SCORE_FAILURES = ("low_box", "low_keypoints")  # the judgement's checks a score threshold decides


class PartDecision(_Model):
    """The route of one part of an image: its head-box task, or one person's keypoint task."""

    route: PartRoute
    score: float | None = None
    reason: str = ""
    # drawn for the blind sample (judgement.audit_fraction of every part, confident or not): people label it
    # without the model's proposal, so its outcome is an unbiased check of the model at its score
    blind: bool = False

    @property
    def structural(self) -> bool:
        """A check other than a score failed (heads and persons do not pair up, a pose model missed the person):
        no score threshold would let the part through."""
        codes = [f.split(":", 1)[0].strip() for f in self.reason.split("; ")] if self.route == "human" else []
        return any(code not in SCORE_FAILURES for code in codes)


class PartRoutes(_Model):
    """Per-part routes of an image the model labeled: the head-box task (all head boxes of the image, which also
    catches missed heads) and one keypoint task per person, in the order of :attr:`PreAnnotation.persons`.
    Only the parts routed ``human`` or ``audit`` become tasks; the others keep the model's labels."""

    heads: PartDecision
    persons: list[PartDecision] = Field(default_factory=list)

    @property
    def for_people(self) -> bool:
        return self.heads.route != "auto" or any(p.route != "auto" for p in self.persons)


class PreAnnotation(_Model):
    """What the model proposes for an image sent to people, and why it was sent. ``parts``: which of its parts
    people label (absent: all of them)."""

    route: Literal["human", "audit"]
    reason: str
    image_size: ImageSize | None = None
    boxes: list[ScoredBox] = Field(default_factory=list)
    persons: list[PersonKeypoints] = Field(default_factory=list)
    bundle_id: str | None = None
    parts: PartRoutes | None = None

    def blind(self, person: int | None) -> bool:
        """People label this part (the head boxes: ``person`` None) without the model's proposal: an audit, or a
        doubtful part drawn for the blind sample."""
        if self.parts is None:
            return self.route == "audit"
        if person is None:
            decision = self.parts.heads
        elif person < len(self.parts.persons):
            decision = self.parts.persons[person]
        else:
            return self.route == "audit"
        return decision.route == "audit" or decision.blind

    def part_route(self, person: int | None) -> PartRoute:
        """The route of the head-box part (``person`` None) or of one person's part; all parts are people's
        when the image was routed whole."""
        if self.parts is None:
            return self.route
        if person is None:
            return self.parts.heads.route
        return self.parts.persons[person].route if person < len(self.parts.persons) else self.route


class RouteInfo(_Model):
    route: Route
    reason: str = ""
    score: float | None = None
    bundle_id: str | None = None
    parts: PartRoutes | None = None  # an auto line's per-part routes and scores (a line for people: its proposal's)


class ObjectIdentity(_Model):
    """The uploaded object behind a batch entry: exactly-once batching keys on (key, version or ETag)."""

    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None
    event_time: str | None = None
    # the sha256 of the exact bytes first read (by Infer; by Merge for a line Infer did not pin): the pixels the
    # labels describe, checked by every later reader (alp/pixels.py)
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")

    @property
    def identity(self) -> str:
        return f"{self.bucket}/{self.key}#{self.version_id or self.etag or ''}"


class QuarantineInfo(_Model):
    reason: str
    stage: str
    detail: str | None = None


class ManifestLine:
    """One manifest line: the raw mapping plus typed accessors. Unknown keys pass through untouched."""

    __slots__ = ("data",)

    def __init__(self, data: dict[str, Any]):
        if "source-ref" not in data and "source" not in data:
            raise ManifestError("manifest line has neither 'source-ref' nor 'source'")
        ref = data.get("source-ref")
        if ref is not None and (not isinstance(ref, str) or not ref):
            raise ManifestError("'source-ref' must be a non-empty string")
        self.data = data

    # --- parse / serialize -------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str | bytes) -> ManifestLine:
        if len(text) > MAX_LINE_CHARS:
            raise ManifestError(f"manifest line longer than {MAX_LINE_CHARS} characters")
        try:
            # NaN/Infinity are not JSON (json.loads accepts them; writing the line back would then fail), and
            # deep nesting must not exhaust the parser's recursion.
            data = json.loads(text, parse_constant=_refuse_constant)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise ManifestError(f"manifest line is not JSON: {reason}") from None
        except ValueError as exc:  # _refuse_constant
            raise ManifestError(f"manifest line is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ManifestError(f"manifest line is a JSON {type(data).__name__}, not an object")
        return cls(data)

    @classmethod
    def for_image(cls, source_ref: str, **extra: Any) -> ManifestLine:
        return cls({"source-ref": source_ref, **extra})

    def to_json(self) -> str:
        """Compact, key-sorted JSON: the same line always serializes to the same bytes."""
        return json.dumps(self.data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ManifestLine) and self.data == other.data

    def __repr__(self) -> str:
        return f"ManifestLine({self.to_json()[:200]})"

    # --- identity ----------------------------------------------------------------------------------
    @property
    def source_ref(self) -> str:
        ref = self.data.get("source-ref")
        if not isinstance(ref, str):
            raise ManifestError("line has inline 'source', not 'source-ref'")
        return ref

    # --- typed accessors ---------------------------------------------------------------------------
    def _get(self, attr: str, label_cls: type[_Model], meta_cls: type[_Model]) -> tuple[Any, Any] | None:
        if attr not in self.data:
            return None
        try:
            label = label_cls.model_validate(self.data[attr])
            meta = meta_cls.model_validate(self.data.get(f"{attr}-metadata") or {})
        except ValidationError as exc:
            raise ManifestError(f"label {attr!r}: {_first_error(exc)}") from None
        return label, meta

    def boxes(self, attr: str) -> tuple[BoundingBoxLabel, BoxMetadata] | None:
        return self._get(attr, BoundingBoxLabel, BoxMetadata)

    def keypoints(self, attr: str) -> tuple[KeypointLabel, KeypointMetadata] | None:
        return self._get(attr, KeypointLabel, KeypointMetadata)

    def _typed(self, key: str, cls: type[Any]) -> Any:
        if key not in self.data:
            return None
        try:
            return cls.model_validate(self.data[key])
        except ValidationError as exc:
            raise ManifestError(f"{key!r}: {_first_error(exc)}") from None

    def preannotation(self) -> PreAnnotation | None:
        return self._typed(PREANNOTATION_KEY, PreAnnotation)  # type: ignore[no-any-return]

    def route(self) -> RouteInfo | None:
        return self._typed(ROUTE_KEY, RouteInfo)  # type: ignore[no-any-return]

    def object_identity(self) -> ObjectIdentity | None:
        return self._typed(OBJECT_KEY, ObjectIdentity)  # type: ignore[no-any-return]

    def quarantine(self) -> QuarantineInfo | None:
        return self._typed(QUARANTINE_KEY, QuarantineInfo)  # type: ignore[no-any-return]

    # --- builders (return new lines; a line is never mutated in place) -----------------------------
    def with_fields(self, **fields: Any) -> ManifestLine:
        return ManifestLine({**self.data, **fields})

    def with_label(self, attr: str, label: _Model, meta: _Model) -> ManifestLine:
        return ManifestLine({**self.data, attr: label.dump(), f"{attr}-metadata": meta.dump()})

    def with_boxes(self, attr: str, label: BoundingBoxLabel, meta: BoxMetadata) -> ManifestLine:
        return self.with_label(attr, label, meta)

    def with_keypoints(self, attr: str, label: KeypointLabel, meta: KeypointMetadata) -> ManifestLine:
        return self.with_label(attr, label, meta)

    def with_model(self, key: str, model: _Model) -> ManifestLine:
        return ManifestLine({**self.data, key: model.dump()})

    def without(self, *keys: str) -> ManifestLine:
        return ManifestLine({k: v for k, v in self.data.items() if k not in keys})


def part_counts(line: ManifestLine, keypoint_attribute: str) -> Counter[str]:
    """How many parts of a routed line each route has, as ``heads.<route>`` and ``persons.<route>``: an auto line's
    parts are all the model's; a line for people says per part (all people's when it was routed whole)."""
    counts: Counter[str] = Counter()
    route = line.route()
    if route is None or route.route == "quarantine":
        return counts
    if route.route == "auto":
        kps = line.keypoints(keypoint_attribute)
        counts["heads.auto"] += 1
        counts["persons.auto"] += len(kps[0].persons) if kps is not None else 0
        return counts
    pre = line.preannotation()
    if pre is None:
        counts[f"heads.{route.route}"] += 1
        return counts
    counts[f"heads.{pre.part_route(None)}"] += 1
    for i in range(len(pre.persons)):
        counts[f"persons.{pre.part_route(i)}"] += 1
    return counts


def auto_share(parts: dict[str, int], kind: str) -> float | None:
    """Of a batch's parts of ``kind`` (``heads`` or ``persons``, counted by :func:`part_counts`), the share the
    model's labels were accepted for; None without any."""
    total = sum(v for k, v in parts.items() if k.startswith(f"{kind}."))
    return parts.get(f"{kind}.auto", 0) / total if total else None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number (JSON has no NaN or Infinity)")


def _first_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    return f"{loc}: {e['msg']}" if loc else e["msg"]


def parse_lines(lines: Iterable[str]) -> Iterator[ManifestLine]:
    """Parse lines strictly (the first bad line raises, naming its number)."""
    for n, text in enumerate(lines, 1):
        try:
            yield ManifestLine.parse(text)
        except ManifestError as exc:
            raise ManifestError(f"line {n}: {exc}") from None


def dumps_lines(lines: Iterable[ManifestLine]) -> str:
    """JSON Lines text for ``lines`` (trailing newline included when non-empty)."""
    out = "\n".join(line.to_json() for line in lines)
    return out + "\n" if out else ""


def read_manifest(uri: str) -> list[ManifestLine]:
    from alp import storage

    return list(parse_lines(storage.iter_lines(uri)))


def read_manifest_if_present(uri: str) -> list[ManifestLine]:
    """The manifest's lines, or none when a step wrote no such file (an empty route is not written)."""
    from alp import storage

    return read_manifest(uri) if storage.exists(uri) else []


def write_manifest(uri: str, lines: Iterable[ManifestLine]) -> str:
    from alp import storage

    return storage.write_text(uri, dumps_lines(lines), content_type="application/jsonl")
