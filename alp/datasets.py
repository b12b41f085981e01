"""Dataset versions: immutable ``<data_root>datasets/vNNNN/`` folders that training reads.

A version holds every record of its parent plus what one batch (or one set of lines, e.g. the demo's seed
set) added: ``manifest.jsonl`` (one line per image: ``source-ref`` (the image's pinned copy), ``alp-object`` (the
upload it came from and the sha256 of its bytes), head boxes, keypoints, ``alp-source``, ``alp-split``) and ``dataset.json`` (parent, included batches, counts by source and split, content hashes,
labeling jobs, settings hash). No timestamps, sorted keys and lines: the same inputs give the same bytes.

* One image, one record: a human (or audit, or seed) label replaces an auto label of the same image, and a
  newer label of the same kind replaces an older one.
* The split is frozen: chosen by a hash of the image key with the split seed and fractions recorded in the
  first version, and never recomputed for a record already in a version.
* Merging a batch twice returns the version that already includes it.
* An automation-quality report per batch (from its audit items) is written beside the version.
* Pixels are pinned (:mod:`alp.pixels`): every new record's image is copied, content-addressed, into the data root
  and the record names the copy; a line whose image changed or vanished since it was read for labeling is set
  aside in the batch's ``merge/rejected.jsonl`` with the reason.
* Versions are write-once: every file is written only where nothing is (``dataset.json`` last), a version's number
  is one above the highest folder present, complete or not (a crash's incomplete folder is never listed and never
  written again), and a merge that loses the race for a number to another one moves on to the next. A merge waits
  for a version another merge is still writing before it reads its parent: building on the one before would leave
  that merge's records out of every later version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from alp import storage
from alp.geometry import Box, keypoint_area, match_boxes, oks
from alp.manifest import (
    OBJECT_KEY,
    KeypointLabel,
    ManifestError,
    ManifestLine,
    dumps_lines,
    read_manifest,
    read_manifest_if_present,
)
from alp.pixels import PIXEL_WORKERS, PixelsError, pin_copy
from alp.settings import Settings
from alp.statistics import wilson_interval
from alp.steps import DATA_ROOT_ENV

log = logging.getLogger(__name__)

SOURCE_KEY = "alp-source"
SPLIT_KEY = "alp-split"
MANIFEST_FILE = "manifest.jsonl"
DATASET_FILE = "dataset.json"
QUALITY_FILE = "automation-quality.json"
_VERSION = re.compile(r"^v(\d{4,})$")
REJECTED_KEY = "alp-merge-rejected"
# Numbers one merge tries: each lost race means another merge wrote a version meanwhile, so a handful is plenty.
VERSION_ATTEMPTS = 5
# A merge writes a version's files within seconds; an incomplete folder untouched for longer was left by a crash.
IN_PROGRESS_SECONDS = 120.0
POLL_SECONDS = 1.0

# mixed: people labeled some parts of the image (its head boxes, or some persons) and the model's labels of the
# others were accepted (per-part routing); like auto labels, such records only ever train
SourceKind = Literal["human", "auto", "audit", "seed", "mixed"]
Split = Literal["train", "val", "test"]
# a newer record replaces an older one of the same or a lower rank: people's labels are never replaced by a record
# holding the model's, so a test or val record never turns into one that could not be there
_RANK = {"auto": 0, "mixed": 1, "human": 2, "audit": 2, "seed": 2}
PEOPLE_KINDS: tuple[SourceKind, ...] = ("human", "audit", "seed")  # every label of the record is people's
MODEL_KINDS: tuple[SourceKind, ...] = ("auto", "mixed")  # some label of the record is the model's


class SplitRule(BaseModel):
    """The frozen split: recorded in every version and inherited from the parent, never from new settings."""

    model_config = ConfigDict(frozen=True)

    seed: str
    test_fraction: float = Field(ge=0.0, lt=1.0)
    val_fraction: float = Field(ge=0.0, lt=1.0)

    @classmethod
    def from_settings(cls, settings: Settings) -> SplitRule:
        return cls(seed=settings.labeling.split_seed, test_fraction=settings.labeling.test_split_fraction,
                   val_fraction=settings.labeling.val_split_fraction)

    def split_for(self, key: str, kind: SourceKind | None = None) -> Split:
        """The split of a new record. The test and val splits take only labels people made (``kind`` not
        ``auto``): a model's own labels there would have the gate judge each challenger by how well it repeats
        the champion's predictions (seen on the label-savings bench: candidates better on the bench's own test
        set were rejected), and ultralytics pick the epoch (best.pt) that agrees with the champion most. An
        auto label whose key falls in either share trains instead."""
        u = int(hashlib.sha256(f"{self.seed}|{key}".encode()).hexdigest()[:16], 16) / float(1 << 64)
        if u < self.test_fraction + self.val_fraction and kind in MODEL_KINDS:
            return "train"
        if u < self.test_fraction:
            return "test"
        if u < self.test_fraction + self.val_fraction:
            return "val"
        return "train"


class DatasetVersion(BaseModel):
    """``dataset.json``."""

    format_version: Literal[1] = 1
    version: str
    parent: str | None = None
    note: str = ""
    added_from: dict[str, Any] = Field(default_factory=dict)
    inputs_sha256: str
    batches: list[str] = Field(default_factory=list)
    labeling_jobs: list[str] = Field(default_factory=list)
    records: int = 0
    counts_by_source: dict[str, int] = Field(default_factory=dict)
    counts_by_split: dict[str, int] = Field(default_factory=dict)
    changes: dict[str, int] = Field(default_factory=dict)
    split: SplitRule
    content_sha256: dict[str, str] = Field(default_factory=dict)
    settings_sha256: str


@dataclass(frozen=True)
class MergeResult:
    uri: str
    created: bool
    version: DatasetVersion


# --- locations -------------------------------------------------------------------------------------------

def data_root_for(batch_dir: str) -> str:
    """``$ALP_DATA_ROOT`` if set, else the folder two levels above ``<data_root>batches/<id>/``."""
    root = os.environ.get(DATA_ROOT_ENV)
    if root:
        return root.rstrip("/") + "/"
    return storage.parent(storage.parent(batch_dir.rstrip("/") + "/"))


def datasets_dir(data_root: str, settings: Settings | None = None) -> str:
    prefix = (settings.storage.datasets_prefix if settings else "datasets/").strip("/")
    return storage.join(data_root, prefix).rstrip("/") + "/"


def _version_folders(data_root: str, settings: Settings | None) -> dict[str, set[str]]:
    """Every ``vNNNN`` folder under datasets/, complete or not, with the names of the files in it."""
    root = datasets_dir(data_root, settings)
    folders: dict[str, set[str]] = {}
    for uri in storage.list_uris(root):
        if not uri.startswith(root):
            continue
        parts = uri[len(root):].split("/")
        if len(parts) >= 2 and _VERSION.match(parts[0]):
            folders.setdefault(parts[0], set()).add("/".join(parts[1:]))
    return folders


def _number(name: str) -> int:
    return int(name[1:])


def list_versions(data_root: str, settings: Settings | None = None) -> list[str]:
    """URIs of the complete versions (those with a ``dataset.json``), oldest first."""
    root = datasets_dir(data_root, settings)
    found = [name for name, files in _version_folders(data_root, settings).items() if DATASET_FILE in files]
    return [root + v + "/" for v in sorted(found, key=_number)]


def latest_version(data_root: str, settings: Settings | None = None) -> str | None:
    versions = list_versions(data_root, settings)
    return versions[-1] if versions else None


def read_version(uri: str) -> list[ManifestLine]:
    return read_manifest(uri.rstrip("/") + "/" + MANIFEST_FILE)


def read_version_info(uri: str) -> DatasetVersion:
    return DatasetVersion.model_validate_json(storage.read_text(uri.rstrip("/") + "/" + DATASET_FILE))


# --- records ---------------------------------------------------------------------------------------------

def image_key(line: ManifestLine) -> str:
    """The image's identity: the uploaded object's key, else the ``source-ref`` without its bucket."""
    obj = line.data.get(OBJECT_KEY)
    if isinstance(obj, dict) and isinstance(obj.get("key"), str):
        return str(obj["key"])
    ref = line.source_ref
    return storage.parse_s3_uri(ref).key if storage.is_s3(ref) else ref


def version_record(line: ManifestLine, kind: SourceKind, batch: str | None, job: str | None,
                   settings: Settings, split: Split) -> ManifestLine:
    """A dataset line: the image, its two labels (validated), its source and split; nothing else."""
    head_attr, kp_attr = settings.labeling.head_label_attribute, settings.labeling.keypoint_label_attribute
    boxes = line.boxes(head_attr)
    if boxes is None:
        raise ManifestError(f"{line.data.get('source-ref')}: no {head_attr!r} label")
    keypoints = line.keypoints(kp_attr)
    if keypoints is not None:
        keypoints[0].check_schema(settings.schema_.names)
    data: dict[str, Any] = {"source-ref": line.source_ref}
    for key in (head_attr, f"{head_attr}-metadata", kp_attr, f"{kp_attr}-metadata", OBJECT_KEY):
        if key in line.data:
            data[key] = line.data[key]
    data[SOURCE_KEY] = {"kind": kind, "batch": batch, "job": job}
    data[SPLIT_KEY] = split
    return ManifestLine(data)


def _job_of(line: ManifestLine, attr: str) -> str | None:
    meta = line.data.get(f"{attr}-metadata")
    if isinstance(meta, dict) and meta.get("human-annotated", "yes") == "yes":
        job = meta.get("job-name") or meta.get("job_name")
        if isinstance(job, str) and job:
            return job.rsplit("/", 1)[-1]
    return None


def _source_kind(labeling: Any, people: bool, is_audit: bool) -> SourceKind:
    """``auto`` for the model's labels; for a labeled line ``mixed`` when ``alp-labeling.parts`` says some part
    kept the model's labels, else ``audit`` or ``human``."""
    if not people:
        return "auto"
    parts = labeling.get("parts") if isinstance(labeling, dict) else None
    if isinstance(parts, dict) and (parts.get("heads") == "model" or "model" in (parts.get("persons") or [])):
        return "mixed"
    return "audit" if is_audit else "human"


def merge_records(parent: list[ManifestLine], new: list[ManifestLine]) -> tuple[list[ManifestLine], dict[str, int]]:
    """Parent records plus new ones, one per image key: a human label beats an auto one, newer beats older
    at equal rank; a record keeps the split it already had."""
    by_key: dict[str, ManifestLine] = {image_key(line): line for line in parent}
    changes = {"added": 0, "replaced": 0, "kept": 0}
    for line in new:
        key = image_key(line)
        old = by_key.get(key)
        if old is None:
            by_key[key] = line
            changes["added"] += 1
        elif _RANK[line.data[SOURCE_KEY]["kind"]] >= _RANK[old.data[SOURCE_KEY]["kind"]]:
            by_key[key] = line.with_fields(**{SPLIT_KEY: old.data[SPLIT_KEY]})
            changes["replaced"] += 1
        else:
            changes["kept"] += 1
    return [by_key[k] for k in sorted(by_key)], changes


# --- writing a version -----------------------------------------------------------------------------------

def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _find_by_inputs(data_root: str, settings: Settings, inputs_sha: str, batch: str | None) -> str | None:
    for uri in reversed(list_versions(data_root, settings)):
        info = read_version_info(uri)
        if info.inputs_sha256 == inputs_sha or (batch is not None and batch in info.batches):
            return uri
    return None


class _NumberTaken(Exception):
    """Another merge wrote this version number's first file before this one."""


def _settled_folders(data_root: str, settings: Settings) -> dict[str, set[str]]:
    """The version folders once no other merge is writing one above the latest complete version: a version read
    as parent while another merge is still writing the next would leave that merge's records out of every later
    version. An incomplete folder nobody wrote to for :data:`IN_PROGRESS_SECONDS` was left by a crash: skipped."""
    deadline = time.time() + IN_PROGRESS_SECONDS
    while True:
        folders = _version_folders(data_root, settings)
        complete = [_number(n) for n, files in folders.items() if DATASET_FILE in files]
        latest = max(complete, default=0)
        root = datasets_dir(data_root, settings)
        writing = [name for name, files in folders.items() if DATASET_FILE not in files and _number(name) > latest
                   and time.time() - max(storage.last_modified(root + name + "/" + f) for f in files)
                   < IN_PROGRESS_SECONDS]
        if not writing or time.time() >= deadline:
            return folders
        log.info("datasets: %s is being written by another merge; waiting for it", ", ".join(sorted(writing)))
        time.sleep(POLL_SECONDS)


def _write_files(uri: str, files: dict[str, str], info_text: str) -> None:
    """The version's files, each write-once: the manifest first (whoever writes it holds the number), then the
    others, ``dataset.json`` last (a version without it is incomplete and is not listed)."""
    def write(name: str, text: str) -> None:
        storage.write_text(uri + name, text, if_none_match=True,
                           content_type="application/jsonl" if name.endswith(".jsonl") else "application/json")

    try:
        write(MANIFEST_FILE, files[MANIFEST_FILE])
    except storage.AlreadyExists:
        raise _NumberTaken(uri) from None
    for name, text in sorted(files.items()):
        if name != MANIFEST_FILE:
            write(name, text)
    write(DATASET_FILE, info_text)


def _write_version(data_root: str, settings: Settings, new_records: list[ManifestLine], *, inputs_sha: str,
                   note: str, added_from: dict[str, Any], batch: str | None, jobs: list[str],
                   extra_files: dict[str, str] | None = None) -> MergeResult:
    """The next version: the latest complete one plus ``new_records``, under the first free number."""
    for attempt in range(VERSION_ATTEMPTS):
        folders = _settled_folders(data_root, settings)
        # after a wait for another merge, or a lost number, the version just written may hold these very inputs
        # (the same batch merged twice at once: one version, not two)
        if attempt or folders:
            existing = _find_by_inputs(data_root, settings, inputs_sha, batch)
            if existing is not None:
                return MergeResult(uri=existing, created=False, version=read_version_info(existing))
        complete = sorted((n for n, files in folders.items() if DATASET_FILE in files), key=_number)
        parent_name = complete[-1] if complete else None
        parent_uri = datasets_dir(data_root, settings) + parent_name + "/" if parent_name else None
        parent_info = read_version_info(parent_uri) if parent_uri else None
        merged, changes = merge_records(read_version(parent_uri) if parent_uri else [], new_records)
        name = f"v{max((_number(n) for n in folders), default=0) + 1:04d}"
        uri = datasets_dir(data_root, settings) + name + "/"
        files = {MANIFEST_FILE: dumps_lines(merged), **(extra_files or {})}
        counts_by_source: dict[str, int] = {}
        counts_by_split: dict[str, int] = {"train": 0, "val": 0, "test": 0}
        for line in merged:
            kind = line.data[SOURCE_KEY]["kind"]
            counts_by_source[kind] = counts_by_source.get(kind, 0) + 1
            counts_by_split[line.data[SPLIT_KEY]] += 1
        info = DatasetVersion(
            version=name, parent=parent_name, note=note, added_from=added_from, inputs_sha256=inputs_sha,
            batches=sorted(set(parent_info.batches if parent_info else []) | ({batch} if batch else set())),
            labeling_jobs=sorted(set(parent_info.labeling_jobs if parent_info else []) | set(jobs)),
            records=len(merged), counts_by_source=dict(sorted(counts_by_source.items())),
            counts_by_split=counts_by_split, changes=changes,
            split=parent_info.split if parent_info else SplitRule.from_settings(settings),
            content_sha256={k: _sha(v) for k, v in sorted(files.items())}, settings_sha256=settings.sha256(),
        )
        try:
            _write_files(uri, files, json.dumps(info.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
        except _NumberTaken:
            log.info("datasets: %s was taken by another merge; trying the next number on the newer parent", name)
            continue
        log.info("datasets: wrote %s (%d records, %s)", uri, len(merged), changes)
        return MergeResult(uri=uri, created=True, version=info)
    raise storage.StorageError(f"no dataset version written under {datasets_dir(data_root, settings)}: other merges "
                               f"took {VERSION_ATTEMPTS} numbers in a row; run the merge again")


def _split_rule(data_root: str, settings: Settings) -> SplitRule:
    latest = latest_version(data_root, settings)
    return read_version_info(latest).split if latest else SplitRule.from_settings(settings)


def _pinned(records: list[ManifestLine], data_root: str, settings: Settings
            ) -> tuple[list[ManifestLine], list[tuple[int, Exception]]]:
    """``records`` with their pixels pinned (:func:`alp.pixels.pin_copy`), and the index and error of each record
    whose pixels could not be."""
    def attempt(record: ManifestLine) -> ManifestLine | Exception:
        try:
            # people labeled what their tool showed: the key's current object (checked against the pin too)
            kind = (record.data.get(SOURCE_KEY) or {}).get("kind")
            return pin_copy(record, data_root, settings, people_saw_current=kind in (*PEOPLE_KINDS, "mixed"))
        except (PixelsError, ManifestError, storage.StorageError) as exc:
            return exc  # anything else (access denied, an outage) fails the merge: it is no fault of the line

    with ThreadPoolExecutor(max_workers=PIXEL_WORKERS) as pool:
        outcomes = list(pool.map(attempt, records))
    pinned = [o for o in outcomes if isinstance(o, ManifestLine)]
    failed = [(i, o) for i, o in enumerate(outcomes) if isinstance(o, Exception)]
    return pinned, failed


def create_version_from_lines(lines: list[ManifestLine], data_root: str, settings: Settings,
                              source_kind: SourceKind = "seed", note: str = "") -> str:
    """A new version = the latest one plus ``lines`` (e.g. the demo's seed set); returns its URI.
    The same lines again (on the same parent) return the existing version. Every line's image is pinned; when some
    cannot be (changed since it was read, or gone) nothing is written and the error names them: these lines come
    from one hand (a seed set) and are not worth a version with holes."""
    rule = _split_rule(data_root, settings)
    head_attr = settings.labeling.head_label_attribute
    records = [version_record(line, source_kind, None, _job_of(line, head_attr), settings,
                              rule.split_for(image_key(line), source_kind)) for line in lines]
    records.sort(key=image_key)
    inputs_sha = _sha(f"lines|{source_kind}|{note}\n" + dumps_lines(records))
    existing = _find_by_inputs(data_root, settings, inputs_sha, None)
    if existing is not None:
        return existing
    pinned, failed = _pinned(records, data_root, settings)
    if failed:
        shown = "; ".join(str(exc) for _, exc in failed[:20])
        more = f" and {len(failed) - 20} more" if len(failed) > 20 else ""
        raise PixelsError(f"{len(failed)} of {len(records)} images cannot be pinned, no version written: {shown}{more}")
    jobs = sorted({r.data[SOURCE_KEY]["job"] for r in pinned if r.data[SOURCE_KEY]["job"]})
    return _write_version(data_root, settings, pinned, inputs_sha=inputs_sha, note=note,
                          added_from={"kind": "lines", "source_kind": source_kind, "lines": len(pinned)},
                          batch=None, jobs=jobs).uri


def batch_id(batch_dir: str) -> str:
    return storage.basename(batch_dir.rstrip("/"))


def merge_batch_result(batch_dir: str, settings: Settings, data_root: str | None = None) -> MergeResult:
    """Merge one batch's consolidated human and audit lines and its auto lines into a new version."""
    batch_dir = batch_dir.rstrip("/") + "/"
    data_root = data_root or data_root_for(batch_dir)
    batch = batch_id(batch_dir)
    for uri in reversed(list_versions(data_root, settings)):
        info = read_version_info(uri)
        if batch in info.batches:
            return MergeResult(uri=uri, created=False, version=info)
    labeled_uri = storage.join(batch_dir, "labeling", "labeled.jsonl")
    auto_uri = storage.join(batch_dir, "inference", "auto.jsonl")
    if not storage.exists(labeled_uri) and not storage.exists(auto_uri):
        raise FileNotFoundError(f"batch {batch_dir} has neither labeling/labeled.jsonl nor inference/auto.jsonl: "
                                "run the infer and label steps first")
    labeled = read_manifest_if_present(labeled_uri)
    auto = read_manifest_if_present(auto_uri)
    rule = _split_rule(data_root, settings)
    head_attr = settings.labeling.head_label_attribute
    records: dict[str, ManifestLine] = {}
    origins: dict[str, ManifestLine] = {}
    rejected: list[ManifestLine] = []
    jobs: set[str] = set()
    audit_lines = []
    # Auto first, people second: a human label of the same image replaces the auto one.
    for kind_lines, people in ((auto, False), (labeled, True)):
        for line in kind_lines:
            try:
                key = image_key(line)
                labeling = line.data.get("alp-labeling") if people else None
                is_audit = isinstance(labeling, dict) and bool(labeling.get("audit"))
                kind = _source_kind(labeling if people else None, people, is_audit)
                job = _job_of(line, head_attr) if people else None
                record = version_record(line, kind, batch, job, settings, rule.split_for(key, kind))
            except (ManifestError, storage.StorageError) as exc:
                rejected.append(line.with_fields(**{REJECTED_KEY: str(exc)[:300]}))
                continue
            if job:
                jobs.add(job)
            if isinstance(labeling, dict):
                jobs.update(j for j in (labeling.get("head_job"), labeling.get("keypoint_job")) if isinstance(j, str))
            if is_audit:
                audit_lines.append(line)
            records[key] = record
            origins[key] = line
    keys = sorted(records)
    inputs_sha = _sha(f"batch|{batch}\n" + dumps_lines(records[k] for k in keys))
    # Pixels last, once a record per image is chosen: only the record that stays is copied, and a line whose
    # pixels changed or vanished since Infer read them is set aside with the reason, never merged on other pixels.
    new_records, failed = _pinned([records[k] for k in keys], data_root, settings)
    rejected += [origins[keys[i]].with_fields(**{REJECTED_KEY: str(exc)[:300]}) for i, exc in failed]
    if rejected:
        storage.write_text(storage.join(batch_dir, "merge", "rejected.jsonl"), dumps_lines(rejected),
                           content_type="application/jsonl")
        log.warning("datasets: %d lines of batch %s rejected (see merge/rejected.jsonl)", len(rejected), batch)
    quality = automation_quality(audit_lines, settings, batch)
    return _write_version(
        data_root, settings, new_records, inputs_sha=inputs_sha, note=f"batch {batch}",
        added_from={"kind": "batch", "batch": batch, "human_lines": len(labeled), "auto_lines": len(auto),
                    "rejected": len(rejected)},
        batch=batch, jobs=sorted(jobs),
        extra_files={QUALITY_FILE: json.dumps(quality.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"},
    )


def merge_batch(batch_dir: str, settings: Settings, data_root: str | None = None) -> str:
    """``alp merge``'s work: the URI of the version that includes the batch (new or existing)."""
    return merge_batch_result(batch_dir, settings, data_root).uri


# --- automation quality ----------------------------------------------------------------------------------

class Proportion(BaseModel):
    agree: int
    total: int
    share: float | None
    ci95: tuple[float, float]

    @classmethod
    def of(cls, agree: int, total: int) -> Proportion:
        lo, hi = wilson_interval(agree, total)
        return cls(agree=agree, total=total, share=round(agree / total, 4) if total else None,
                   ci95=(round(lo, 4), round(hi, 4)))


class AutomationQuality(BaseModel):
    """How often what the model would have auto-labeled agrees with what people said (audit items)."""

    batch: str | None
    audit_items: int
    compared_items: int
    missing_model_labels: int
    box_iou_threshold: float = 0.5
    oks_threshold: float = 0.5
    boxes: Proportion = Field(description="human head boxes matched by a model box at IoU >= 0.5")
    box_precision: Proportion = Field(description="model head boxes matched by a human box")
    images_boxes_agree: Proportion
    persons_oks: Proportion = Field(description="human persons whose model person has OKS >= 0.5")
    visibility: Proportion = Field(description="keypoints of matched persons with the same visibility")
    images_fully_agree: Proportion


def automation_quality(audit_lines: list[ManifestLine], settings: Settings, batch: str | None = None,
                       iou_threshold: float = 0.5, oks_threshold: float = 0.5) -> AutomationQuality:
    """Agreement between the model's would-be labels (``alp-audit-model``) and the people's labels, per image.
    With per-part routing an audited image's other parts kept the model's labels and agree by construction; the
    per-part audited precision is :mod:`alp.audits`'s."""
    from alp.labeling.contracts import AUDIT_MODEL_KEY

    head_attr, kp_attr = settings.labeling.head_label_attribute, settings.labeling.keypoint_label_attribute
    sigmas = settings.schema_.sigmas
    box_match = human_boxes = model_boxes = 0
    img_box_ok = img_ok = compared = missing = 0
    person_ok = persons = vis_ok = vis_total = 0
    for line in audit_lines:
        model = line.data.get(AUDIT_MODEL_KEY)
        human_b = line.boxes(head_attr)
        if not isinstance(model, dict) or head_attr not in model or human_b is None:
            missing += 1
            continue
        model_line = ManifestLine({"source-ref": line.data.get("source-ref", "audit"), **model})
        try:
            model_b = model_line.boxes(head_attr)
            model_k = model_line.keypoints(kp_attr)
        except ManifestError:
            missing += 1
            continue
        if model_b is None:
            missing += 1
            continue
        compared += 1
        human_k = line.keypoints(kp_attr)
        hb = [Box(a.left, a.top, a.width, a.height) for a in human_b[0].annotations]
        mb = [Box(a.left, a.top, a.width, a.height) for a in model_b[0].annotations]
        matches = match_boxes(hb, mb, iou_threshold)
        box_match += len(matches)
        human_boxes += len(hb)
        model_boxes += len(mb)
        boxes_agree = len(matches) == len(hb) == len(mb)
        img_box_ok += boxes_agree
        all_persons_ok = boxes_agree
        h_persons = _persons_by_head(human_k[0] if human_k else None)
        m_persons = _persons_by_head(model_k[0] if model_k else None)
        pair = {i: j for i, j, _ in matches}
        for i, hp in sorted(h_persons.items()):
            persons += 1
            mp = m_persons.get(pair.get(i, -1))
            if mp is None:
                all_persons_ok = False
                continue
            gt = [(k.x, k.y, k.v) for k in hp.keypoints]
            gt_xy, gt_v = [(k.x, k.y) for k in hp.keypoints], [k.v for k in hp.keypoints]
            pred = [(k.x, k.y) for k in mp.keypoints]
            if len(gt) != len(pred):
                all_persons_ok = False
                continue
            area = (hp.bbox[2] * hp.bbox[3]) if hp.bbox else keypoint_area(gt, hb[i] if i < len(hb) else None)
            score = oks(gt_xy, gt_v, pred, area, sigmas) if any(g[2] > 0 for g in gt) else 1.0
            person_ok += score >= oks_threshold
            all_persons_ok = all_persons_ok and score >= oks_threshold
            for hk, mk in zip(hp.keypoints, mp.keypoints, strict=True):
                vis_total += 1
                vis_ok += hk.v == mk.v
        img_ok += all_persons_ok
    return AutomationQuality(
        batch=batch, audit_items=len(audit_lines), compared_items=compared, missing_model_labels=missing,
        box_iou_threshold=iou_threshold, oks_threshold=oks_threshold,
        boxes=Proportion.of(box_match, human_boxes), box_precision=Proportion.of(box_match, model_boxes),
        images_boxes_agree=Proportion.of(img_box_ok, compared), persons_oks=Proportion.of(person_ok, persons),
        visibility=Proportion.of(vis_ok, vis_total), images_fully_agree=Proportion.of(img_ok, compared),
    )


def _persons_by_head(label: KeypointLabel | None) -> dict[int, Any]:
    if label is None:
        return {}
    return {p.head_box_index: p for p in label.persons if p.head_box_index is not None}


def read_automation_quality(version_uri: str) -> AutomationQuality | None:
    uri = version_uri.rstrip("/") + "/" + QUALITY_FILE
    return AutomationQuality.model_validate_json(storage.read_text(uri)) if storage.exists(uri) else None

