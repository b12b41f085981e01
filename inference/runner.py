"""The batch runner behind ``alp infer-batch``: stream a batch manifest, predict, judge, write the routes.

Outputs under ``--out`` (one shard writes them under ``shard-IIIII-of-NNNNN/``; a merge writes the top
level), every line keeping the input order:

* ``auto.jsonl``: batch line + head boxes under ``labeling.head_label_attribute`` and keypoints under
  ``labeling.keypoint_label_attribute`` (``human-annotated: "no"``, per-box confidences, ``job-name``
  ``auto-<bundle_id>``) + ``alp-route``;
* ``human.jsonl``: human *and* audit items: batch line + ``alp-preannotation`` (route, reason, head boxes,
  persons with keypoint visibility and both models' scores, bundle id) + ``alp-route``;
* ``audit_model.jsonl``: for each audit item, what the model would have auto-labeled: exactly the line
  ``auto.jsonl`` would hold (kept apart from ``human.jsonl`` so a labeling job's own label attributes
  never collide with the model's); the automation-quality report compares it with the people's answer;
* ``quarantine.jsonl``: batch line + ``alp-quarantine`` (reason, stage ``infer``, detail) + ``alp-route``;
* ``summary.json``: counts per route and reason, bundle id, the invariant, and ``timings``.

Every routed line's ``alp-object`` also pins the bytes that were read (their sha256, and the version read when the
batch line named none): whatever people and the model label describes those pixels, and Merge checks them
(:mod:`alp.pixels`).

A re-run over the same batch writes byte-identical files (``summary.json`` except its ``timings``): the
creation date comes from the batch line's ``alp-object.event_time`` (else the bundle's creation time),
never from the clock, and the audit draw hashes the image key with a seed. Memory stays flat: lines
stream in, at most ``inference.batch_size`` decoded images are alive at once, and outputs are spooled to
disk and uploaded at the end. The invariant ``inputs = auto + human + audit + quarantine`` is checked
before ``summary.json`` is written; a violation raises and writes no summary.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pydantic import BaseModel, ConfigDict, Field

from alp import storage
from alp.manifest import (
    MAX_LINE_CHARS,
    OBJECT_KEY,
    PREANNOTATION_KEY,
    QUARANTINE_KEY,
    ROUTE_KEY,
    ROUTES,
    ImageSize,
    ManifestError,
    ManifestLine,
    QuarantineInfo,
    RouteInfo,
    part_counts,
)
from alp.pixels import pinned_version, sha256_of, with_read_pin
from alp.settings import Settings
from inference.engine import ImagePrediction, InferenceEngine
from inference.image_io import DecodedImage, ImageRejected, decode_image
from inference.judgement import Evidence, InputRejected, ModelFailed, NoModel, RouteDecision, route_image
from inference.labels import normalize_creation_date, preannotation, with_prediction_labels
from inference.sharding import shard_dir, shard_of

OUTPUT_FILES: dict[str, str] = {
    "auto": "auto.jsonl",
    "human": "human.jsonl",
    "audit_model": "audit_model.jsonl",
    "quarantine": "quarantine.jsonl",
}
SUMMARY_FILE = "summary.json"
STAGE = "infer"
_FLUSH_PENDING = 64  # bound on buffered (mostly rejected) lines between model calls


class InvariantViolation(RuntimeError):
    """Inputs and routed outputs do not add up: an image would have been lost."""


class BatchSummary(BaseModel):
    """``summary.json``."""

    model_config = ConfigDict(extra="forbid")

    manifest: str
    bundle_id: str | None
    cold_start: bool
    head_backend: str | None
    zero_shot: bool = False  # the bundle is zero-shot: every readable image went to people, prefilled
    shard_index: int = 0
    shard_count: int = 1
    inputs: int
    routes: dict[str, int]
    human_reasons: dict[str, int] = Field(default_factory=dict)
    # per part (the head-box task, each person's keypoint task): "heads.auto", "persons.human", ...
    parts: dict[str, int] = Field(default_factory=dict)
    # the judgement's thresholds and audit seed this batch was routed with
    judgement: dict[str, float | str | bool | None] = Field(default_factory=dict)
    quarantine_reasons: dict[str, int] = Field(default_factory=dict)
    invariant: str
    files: dict[str, str]
    timings: dict[str, float] = Field(default_factory=dict)

    def check_invariant(self) -> None:
        routed = sum(self.routes.get(r, 0) for r in ROUTES)
        if routed != self.inputs:
            raise InvariantViolation(f"{self.inputs} inputs but {routed} routed lines ({self.routes})")

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


@dataclass
class ImageResult:
    """One batch line after inference and judgement."""

    line: ManifestLine
    key: str
    decision: RouteDecision
    prediction: ImagePrediction | None = None
    size: ImageSize | None = None
    rejected: InputRejected | None = None


def judgement_record(settings: Settings) -> dict[str, float | str | bool | None]:
    """The judgement settings a batch was routed with, for its ``summary.json``."""
    j = settings.judgement
    return {"box_threshold": j.box_threshold, "keypoint_threshold": j.keypoint_threshold,
            "heads_score_threshold": j.heads_score_threshold, "person_score_threshold": j.person_score_threshold,
            "part_routing": j.part_routing, "audit_fraction": j.audit_fraction, "audit_seed": j.audit_seed}


@dataclass
class StageTimes:
    read_s: float = 0.0
    decode_s: float = 0.0
    model_s: float = 0.0
    batch_ms: list[float] = field(default_factory=list)

    def as_dict(self, total_s: float, images: int) -> dict[str, float]:
        return {
            "total_s": round(total_s, 3), "read_s": round(self.read_s, 3), "decode_s": round(self.decode_s, 3),
            "model_s": round(self.model_s, 3),
            "model_batch_ms_median": round(statistics.median(self.batch_ms), 2) if self.batch_ms else 0.0,
            "images_per_s": round(images / total_s, 2) if total_s > 0 else 0.0,
        }


def line_key(line: ManifestLine) -> str:
    """The image's stable identity: its ``source-ref`` (the inline text for lines without one)."""
    ref = line.data.get("source-ref")
    if isinstance(ref, str):
        return ref
    return str(line.data.get("source", ""))


def parse_batch_lines(texts: Iterable[str]) -> Iterator[tuple[ManifestLine, InputRejected | None]]:
    """Lenient parsing: a malformed line becomes an inline-``source`` line bound for quarantine."""
    for n, text in enumerate(texts, 1):
        try:
            line = ManifestLine.parse(text)
        except ManifestError as exc:
            yield ManifestLine({"source": text[:1000]}), InputRejected("bad_manifest_line", f"line {n}: {exc}")
            continue
        if not isinstance(line.data.get("source-ref"), str):
            yield line, InputRejected("no_source_ref", "the line has inline 'source', not an image 'source-ref'")
        else:
            yield line, None


def _read(source_ref: str, version_id: str | None) -> storage.StoredObject | InputRejected:
    try:
        return storage.read_object(source_ref, version_id)
    except storage.ObjectNotFound as exc:
        return InputRejected("missing_object", str(exc))
    except storage.StorageError as exc:
        return InputRejected("bad_location", str(exc))
    except Exception as exc:  # S3 access denied, throttling beyond retries, I/O errors: keep the batch going
        return InputRejected("read_error", f"{type(exc).__name__}: {exc}")


def _decode(data: bytes, settings: Settings) -> DecodedImage | InputRejected:
    try:
        return decode_image(data, max_pixels=settings.inference.max_image_pixels,
                            min_side=settings.inference.min_image_side)
    except ImageRejected as exc:
        return InputRejected(exc.reason, exc.detail)


def load_image(source_ref: str, settings: Settings, times: StageTimes | None = None) -> DecodedImage | InputRejected:
    """Read and decode one image; every failure becomes an :class:`InputRejected`."""
    return load_line_image(ManifestLine.for_image(source_ref), settings, times)[1]


def load_line_image(line: ManifestLine, settings: Settings, times: StageTimes | None = None
                    ) -> tuple[ManifestLine, DecodedImage | InputRejected]:
    """Read and decode the line's image: the version the batch line names (``alp-object.version_id``), else the
    current one. Returns the line with that first read pinned in its ``alp-object`` (the bytes' sha256 and the
    version read): the labels made from here on describe exactly those bytes, and Merge checks them
    (:mod:`alp.pixels`). Every failure becomes an :class:`InputRejected`."""
    t0 = time.perf_counter()
    try:
        version = pinned_version(line)
    except (ManifestError, storage.StorageError) as exc:
        # a malformed alp-object: no pin could be recorded on it, and Merge would refuse its labels anyway
        return line, InputRejected("bad_manifest_line", str(exc))
    stored = _read(line_key(line), version)
    identity = line.object_identity()
    if isinstance(stored, InputRejected) and stored.reason == "missing_object" and version and identity:
        # The batched version is gone (expired, or the upload put back under a new version id when a local project
        # restarted): the key's current bytes are what this first read sees, and what it pins.
        stored = _read(line_key(line), None)
        line = line.with_model(OBJECT_KEY, identity.model_copy(update={"version_id": None}))
    t1 = time.perf_counter()
    if isinstance(stored, InputRejected):
        if times is not None:
            times.read_s += t1 - t0
        return line, stored
    pinned = with_read_pin(line, sha256_of(stored.data), stored.version_id)
    try:
        return pinned, _decode(stored.data, settings)
    finally:
        del stored
        if times is not None:
            times.read_s += t1 - t0
            times.decode_s += time.perf_counter() - t1


def _predict_isolated(engine: InferenceEngine, images: list[DecodedImage], refs: list[str | None],
                      times: StageTimes) -> list[ImagePrediction | ModelFailed]:
    t0 = time.perf_counter()
    try:
        preds: list[ImagePrediction | ModelFailed] = list(engine.predict_decoded(images, refs))
    except Exception as exc:  # one bad image must not fail its neighbours: retry them one by one
        if len(images) == 1:
            preds = [ModelFailed(f"{type(exc).__name__}: {exc}"[:500])]
        else:
            preds = []
            for im, ref in zip(images, refs, strict=True):
                preds.extend(_predict_isolated(engine, [im], [ref], times))
            return preds
    elapsed = time.perf_counter() - t0
    times.model_s += elapsed
    times.batch_ms.append(elapsed * 1000)
    return preds


def iter_results(items: Iterable[tuple[ManifestLine, InputRejected | None]], engine: InferenceEngine | None,
                 settings: Settings, times: StageTimes | None = None) -> Iterator[ImageResult]:
    """Predict and judge each line, in input order, holding at most one model batch of images."""
    times = times if times is not None else StageTimes()
    names = engine.keypoint_names if engine is not None else settings.schema_.names
    pending: list[tuple[ManifestLine, str, DecodedImage | InputRejected]] = []

    def flush() -> Iterator[ImageResult]:
        decoded = [(i, o) for i, (_, _, o) in enumerate(pending) if isinstance(o, DecodedImage)]
        preds: dict[int, ImagePrediction | ModelFailed] = {}
        if engine is not None and decoded:
            images = [o for _, o in decoded]
            refs: list[str | None] = [pending[i][1] for i, _ in decoded]
            preds = dict(zip([i for i, _ in decoded], _predict_isolated(engine, images, refs, times), strict=True))
        for i, (line, key, outcome) in enumerate(pending):
            if isinstance(outcome, InputRejected):
                yield ImageResult(line, key, route_image(key, outcome, settings.judgement), rejected=outcome)
                continue
            size = ImageSize(width=outcome.width, height=outcome.height, depth=3)
            result = preds.get(i)
            evidence: Evidence
            if engine is None:
                evidence = NoModel()
            elif isinstance(result, ModelFailed) or result is None:
                evidence = result or ModelFailed("no prediction returned")
            else:
                evidence = result.evidence(names)
            prediction = result if isinstance(result, ImagePrediction) else None
            yield ImageResult(line, key, route_image(key, evidence, settings.judgement), prediction, size)
        pending.clear()

    batch_size = settings.inference.batch_size
    for line, rejected in items:
        key = line_key(line)
        outcome: DecodedImage | InputRejected
        if rejected is None:
            line, outcome = load_line_image(line, settings, times)
        else:
            outcome = rejected
        pending.append((line, key, outcome))
        n_images = sum(isinstance(o, DecodedImage) for _, _, o in pending)
        if n_images >= batch_size or len(pending) >= _FLUSH_PENDING:
            yield from flush()
    if pending:
        yield from flush()


def creation_date_for(line: ManifestLine, fallback: str) -> str:
    """Not the wall clock: the upload's event time, else a per-batch constant, so re-runs match byte for byte."""
    obj = line.data.get("alp-object")
    if isinstance(obj, dict) and isinstance(obj.get("event_time"), str):
        return normalize_creation_date(obj["event_time"])
    return normalize_creation_date(fallback)


def _reason_code(reason: str) -> str:
    return reason.split(":", 1)[0].strip() or reason


def result_lines(result: ImageResult, settings: Settings, *, bundle_id: str | None,
                 fallback_date: str) -> dict[str, ManifestLine]:
    """The output line(s) of one result, keyed by output file (``auto``, ``human``, ``audit_model``, ...)."""
    d = result.decision
    route_info = RouteInfo(route=d.route, reason=d.reason,
                           score=None if d.score is None else round(d.score, 6), bundle_id=bundle_id)
    line = result.line.with_model(ROUTE_KEY, route_info)
    if d.route == "quarantine":
        rej = result.rejected or InputRejected(_reason_code(d.reason), d.reason)
        info = QuarantineInfo(reason=rej.reason, stage=STAGE, detail=rej.detail or None)
        return {"quarantine": line.with_model(QUARANTINE_KEY, info)}
    names = settings.schema_.names
    if d.route == "auto":
        if result.prediction is None or bundle_id is None:
            raise InvariantViolation(f"{result.key}: routed auto without a model prediction")
        date = creation_date_for(result.line, fallback_date)
        if d.parts is not None:  # the part scores, for a later audit draw (at least judgement.min_audits a batch)
            line = line.with_model(ROUTE_KEY, route_info.model_copy(update={"parts": d.parts}))
        return {"auto": with_prediction_labels(line, result.prediction, settings, bundle_id=bundle_id,
                                               creation_date=date, confidence=d.score)}
    pre = preannotation(result.prediction, route=d.route, reason=d.reason, keypoint_names=names,
                        bundle_id=bundle_id, size=result.size, parts=d.parts)
    out = {"human": line.with_model(PREANNOTATION_KEY, pre)}
    if d.route == "audit" and result.prediction is not None and bundle_id is not None:
        date = creation_date_for(result.line, fallback_date)
        out["audit_model"] = with_prediction_labels(line, result.prediction, settings, bundle_id=bundle_id,
                                                    creation_date=date, confidence=d.score)
    return out


class SpooledOutputs:
    """The output files, spooled to local disk and copied to their destination at the end."""

    def __init__(self, out_uri: str, names: dict[str, str] = OUTPUT_FILES):
        self.out_uri = out_uri
        self.names = names
        self._dir = tempfile.TemporaryDirectory(prefix="alp-infer-")
        self._files: dict[str, IO[str]] = {
            k: open(Path(self._dir.name) / v, "w", encoding="utf-8") for k, v in names.items()  # noqa: SIM115
        }

    def write(self, kind: str, line: ManifestLine) -> None:
        text = line.to_json()
        if len(text) > MAX_LINE_CHARS:
            raise ManifestError(f"output line for {line_key(line)[:100]} is longer than {MAX_LINE_CHARS} characters")
        self._files[kind].write(text + "\n")

    def commit(self) -> dict[str, str]:
        uris = {}
        for kind, fh in self._files.items():
            fh.close()
            uris[kind] = storage.write_file(storage.join(self.out_uri, self.names[kind]), fh.name,
                                            content_type="application/jsonl")
        self._dir.cleanup()
        return uris

    def discard(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._dir.cleanup()


def run_batch(manifest_uri: str, out_uri: str, settings: Settings, *, engine: InferenceEngine | None,
              shard_index: int = 0, shard_count: int = 1, progress: bool = False) -> BatchSummary:
    """Infer, judge and route one batch manifest (or one shard of it); ``engine`` None = cold start."""
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard index {shard_index} is not in [0, {shard_count})")
    dest = out_uri if shard_count == 1 else shard_dir(out_uri, shard_index, shard_count)
    t_start = time.perf_counter()
    times = StageTimes()
    bundle_id = engine.bundle_id if engine is not None else None
    fallback_date = engine.bundle.descriptor.created_at if engine is not None else "1970-01-01T00:00:00"
    counts: Counter[str] = Counter()
    human_reasons: Counter[str] = Counter()
    quarantine_reasons: Counter[str] = Counter()
    parts: Counter[str] = Counter()
    inputs = 0

    def my_share() -> Iterator[tuple[ManifestLine, InputRejected | None]]:
        nonlocal inputs
        for line, rejected in parse_batch_lines(storage.iter_lines(manifest_uri)):
            if shard_count > 1 and shard_of(line_key(line), shard_count) != shard_index:
                continue
            inputs += 1
            yield line, rejected

    outputs = SpooledOutputs(dest)
    try:
        if engine is not None:
            engine.open()
        for result in iter_results(my_share(), engine, settings, times):
            for kind, line in result_lines(result, settings, bundle_id=bundle_id,
                                           fallback_date=fallback_date).items():
                outputs.write(kind, line)
                if kind in ("auto", "human"):
                    parts.update(part_counts(line, settings.labeling.keypoint_label_attribute))
            route = result.decision.route
            counts[route] += 1
            if route == "quarantine" and result.rejected is not None:
                quarantine_reasons[result.rejected.reason] += 1
            elif route == "human":
                for failure in result.decision.failures or (result.decision.reason,):
                    human_reasons[_reason_code(failure)] += 1
            if progress and sum(counts.values()) % 100 == 0:
                print(f"infer-batch: {sum(counts.values())} images routed", file=sys.stderr)
        summary = BatchSummary(
            manifest=manifest_uri, bundle_id=bundle_id, cold_start=engine is None,
            head_backend=engine.head_backend if engine is not None else None,
            zero_shot=engine is not None and engine.zero_shot is not None,
            shard_index=shard_index, shard_count=shard_count, inputs=inputs,
            routes={r: counts.get(r, 0) for r in ROUTES},
            human_reasons=dict(sorted(human_reasons.items())), parts=dict(sorted(parts.items())),
            judgement=judgement_record(settings),
            quarantine_reasons=dict(sorted(quarantine_reasons.items())),
            invariant="", files={k: v for k, v in OUTPUT_FILES.items()},
        )
        summary.check_invariant()
        summary.invariant = f"inputs {inputs} = " + " + ".join(f"{r} {counts.get(r, 0)}" for r in ROUTES)
    except BaseException:
        outputs.discard()
        raise
    finally:
        if engine is not None:
            engine.close()
    outputs.commit()
    summary.timings = times.as_dict(time.perf_counter() - t_start, inputs)
    storage.write_text(storage.join(dest, SUMMARY_FILE), summary.to_json(), content_type="application/json")
    return summary


def predict_manifest(lines: Iterable[ManifestLine], engine: InferenceEngine, settings: Settings, *,
                     creation_date: str | None = None) -> Iterator[ManifestLine]:
    """Prediction manifest lines for evaluation: every readable image gets the model's labels (whatever
    its route) plus ``alp-route``; unreadable ones get ``alp-quarantine``. Input order is kept."""
    fallback = creation_date or engine.bundle.descriptor.created_at
    items = ((line, None if isinstance(line.data.get("source-ref"), str)
              else InputRejected("no_source_ref", "inline 'source' line")) for line in lines)
    for result in iter_results(items, engine, settings):
        d = result.decision
        route_info = RouteInfo(route=d.route, reason=d.reason,
                               score=None if d.score is None else round(d.score, 6), bundle_id=engine.bundle_id)
        line = result.line.with_model(ROUTE_KEY, route_info)
        if result.prediction is not None:
            yield with_prediction_labels(line, result.prediction, settings, bundle_id=engine.bundle_id,
                                         creation_date=creation_date_for(result.line, fallback),
                                         confidence=d.score)
        else:
            rej = result.rejected or InputRejected(_reason_code(d.reason), d.reason)
            yield line.with_model(QUARANTINE_KEY, QuarantineInfo(reason=rej.reason, stage=STAGE,
                                                                  detail=rej.detail or None))


def verify_zero_shot_bundle(uri: str, descriptor_sha256: str | None) -> str:
    """``uri`` if its ``bundle.json`` has the recorded sha256 and describes a zero-shot bundle.

    The settings' hash stands in for the registry's record: a zero-shot bundle is never registered (nothing to
    approve: its proposals are never accepted without people), so without the hash a rewritten ``bundle.json``
    (naming other model files, or dropping ``zero_shot`` so its labels could be auto-accepted) would go unnoticed.
    """
    from alp.bundle import DESCRIPTOR_NAME, BundleError, BundleHashMismatch, parse_descriptor, sha256_bytes

    if not descriptor_sha256:
        raise BundleError(f"inference.zero_shot_bundle {uri} has no inference.zero_shot_bundle_sha256 (the sha256 of "
                          "its bundle.json, recorded when it was built); refusing to run it")
    data = storage.read_bytes(storage.join(uri.rstrip("/"), DESCRIPTOR_NAME))
    actual = sha256_bytes(data)
    if actual != descriptor_sha256.lower():
        raise BundleHashMismatch(
            f"zero-shot bundle {uri}: bundle.json has sha256 {actual[:12]}..., inference.zero_shot_bundle_sha256 "
            f"records {descriptor_sha256[:12]}...; refusing to load it"
        )
    if parse_descriptor(data.decode("utf-8")).zero_shot is None:
        raise BundleError(f"inference.zero_shot_bundle {uri} is not a zero-shot bundle (bundle.json has no "
                          "zero_shot); a trained bundle runs only once approved in the registry")
    return uri


def resolve_bundle_uri(settings: Settings, explicit: str | None) -> str | None:
    """``--bundle`` when given, else the registry's latest approved bundle, else the zero-shot bundle
    (``inference.zero_shot_bundle``); None means cold start.

    A registered bundle's ``bundle.json`` is checked against the hash recorded at registration here, the
    zero-shot bundle's against ``inference.zero_shot_bundle_sha256``; the engine then checks every model file
    against ``bundle.json`` before opening it.
    """
    if explicit:
        return explicit
    from alp import registry

    champion = registry.latest_approved(settings)
    if champion is None:
        inf = settings.inference
        if inf.zero_shot_bundle:
            return verify_zero_shot_bundle(inf.zero_shot_bundle, inf.zero_shot_bundle_sha256)
        return None
    registry.verify_descriptor(champion)
    return champion.bundle_uri
