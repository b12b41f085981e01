"""Import a folder of frames into a local project: every file ends imported, duplicate, or quarantined with a reason.

The walk is recursive and does not follow a symbolic link to a folder it is already inside or has seen (a loop),
nor a link that does not resolve; both count as files, quarantined with the reason. Extensions are compared without
case. Each candidate is decoded exactly as an upload is (:func:`inference.image_io.decode_image`: EXIF rotation,
grayscale, 16-bit and palette images become RGB; truncated files, other formats and decompression bombs are
refused with the decoder's reason). Identical bytes are imported once: the others are duplicates of it, in this
import or an earlier one. Imported frames are copied under the project's incoming prefix, keeping their relative
path (a name already taken by other bytes gets the content hash appended). One report per import
(``<project>/imports/<id>.json``) lists every file's outcome; the counts always add up to the files seen.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from alp.local.project import ProjectPaths
from alp.settings import Settings

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
State = Literal["imported", "duplicate", "quarantined"]


class FileOutcome(BaseModel):
    path: str  # relative to the imported folder
    state: State
    reason: str | None = None  # why it was quarantined (the decoder's reason for bad bytes)
    detail: str | None = None
    sha256: str | None = None
    key: str | None = None  # where an imported frame lives, relative to the project's incoming folder
    duplicate_of: str | None = None  # the key of the frame with the same bytes


class ImportReport(BaseModel):
    import_id: str
    source: str
    files: int
    imported: int
    duplicate: int
    quarantined: int
    reasons: dict[str, int] = Field(default_factory=dict)
    outcomes: list[FileOutcome] = Field(default_factory=list)

    def counts(self) -> dict[str, object]:
        return {"files": self.files, "imported": self.imported, "duplicate": self.duplicate,
                "quarantined": self.quarantined, "reasons": self.reasons}


def walk_files(folder: Path) -> Iterator[tuple[Path, str | None]]:
    """Every file under ``folder`` (sorted, recursive) with None, or an entry that is not a usable file with the
    reason: a link that does not resolve, or a link to a folder it is inside or has walked already."""
    seen: set[tuple[int, int]] = set()

    def visit(directory: Path) -> Iterator[tuple[Path, str | None]]:
        info = directory.stat()
        seen.add((info.st_dev, info.st_ino))
        for entry in sorted(directory.iterdir(), key=lambda p: p.name):
            try:
                target = entry.stat()  # follows links
            except OSError as exc:
                yield entry, f"broken_link: {exc.strerror or exc}"
                continue
            if stat.S_ISDIR(target.st_mode):
                if (target.st_dev, target.st_ino) in seen:
                    yield entry, "symlink_loop: a link to a folder already walked"
                    continue
                yield from visit(entry)
            elif stat.S_ISREG(target.st_mode):
                yield entry, None
            else:
                yield entry, "not_a_file: a device, socket or pipe"

    yield from visit(folder)


def _key_for(relative: Path, sha: str, taken: dict[str, str]) -> str:
    """The frame's key under incoming: its relative path, made safe; another name when other bytes hold it."""
    parts = ["".join(c if c.isprintable() and c not in "\\" else "_" for c in part) for part in relative.parts]
    key = "/".join(p for p in parts if p not in ("", ".", ".."))
    if key in taken and taken[key] != sha:
        stem, dot, ext = key.rpartition(".")
        key = f"{stem}-{sha[:12]}{dot}{ext}" if dot else f"{key}-{sha[:12]}"
    return key


def previous_imports(paths: ProjectPaths) -> list[ImportReport]:
    if not paths.imports.is_dir():
        return []
    return [ImportReport.model_validate_json(p.read_text()) for p in sorted(paths.imports.glob("*.json"))]


def import_folder(folder: Path, paths: ProjectPaths, settings: Settings) -> ImportReport:
    """Import every file under ``folder`` into the project; returns (and writes) the report."""
    from inference.image_io import ImageRejected, decode_image

    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}: give --images a folder of frames")
    by_sha: dict[str, str] = {}  # content -> key, over every earlier import too
    taken: dict[str, str] = {}  # key -> content
    for report in previous_imports(paths):
        for o in report.outcomes:
            if o.state == "imported" and o.sha256 and o.key:
                by_sha[o.sha256], taken[o.key] = o.key, o.sha256
    outcomes: list[FileOutcome] = []
    for path, problem in walk_files(folder):
        relative = path.relative_to(folder)
        if problem is not None:
            reason, _, detail = problem.partition(": ")
            outcomes.append(FileOutcome(path=str(relative), state="quarantined", reason=reason, detail=detail))
            continue
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            outcomes.append(FileOutcome(path=str(relative), state="quarantined", reason="unsupported_extension",
                                        detail=f"{path.suffix or 'no extension'}: not one of "
                                               f"{', '.join(sorted(IMAGE_EXTENSIONS))}"))
            continue
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        if sha in by_sha:
            outcomes.append(FileOutcome(path=str(relative), state="duplicate", sha256=sha, duplicate_of=by_sha[sha]))
            continue
        try:
            decode_image(data, max_pixels=settings.inference.max_image_pixels,
                         min_side=settings.inference.min_image_side)
        except ImageRejected as exc:
            outcomes.append(FileOutcome(path=str(relative), state="quarantined", reason=exc.reason, detail=exc.detail,
                                        sha256=sha))
            continue
        key = _key_for(relative, sha, taken)
        target = paths.incoming / key
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        by_sha[sha], taken[key] = key, sha
        outcomes.append(FileOutcome(path=str(relative), state="imported", sha256=sha, key=key))
    states = Counter(o.state for o in outcomes)
    reasons = Counter(o.reason for o in outcomes if o.reason)
    report = ImportReport(
        import_id=datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ"), source=str(folder.resolve()), files=len(outcomes),
        imported=states["imported"], duplicate=states["duplicate"], quarantined=states["quarantined"],
        reasons=dict(sorted(reasons.items())), outcomes=outcomes)
    paths.imports.mkdir(parents=True, exist_ok=True)
    tmp = paths.imports / f".{report.import_id}.json.tmp"
    tmp.write_text(report.model_dump_json(indent=1))
    os.replace(tmp, paths.imports / f"{report.import_id}.json")  # a report is whole or absent
    return report


def project_counts(paths: ProjectPaths) -> dict[str, object]:
    """Files seen, imported, duplicate and quarantined (with reasons) over every import of the project."""
    reports = previous_imports(paths)
    reasons: Counter[str] = Counter()
    for r in reports:
        reasons.update(r.reasons)
    return {"imports": len(reports), "files": sum(r.files for r in reports),
            "imported": sum(r.imported for r in reports), "duplicate": sum(r.duplicate for r in reports),
            "quarantined": sum(r.quarantined for r in reports), "reasons": dict(sorted(reasons.items()))}


def report_json(report: ImportReport) -> str:
    return json.dumps(report.counts(), sort_keys=True)
