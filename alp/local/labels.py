"""Labels a project starts with: a COCO keypoints file (``alp local up --labels``) becomes its first dataset version.

The file's images are found among the imported frames by their ``file_name`` (the path under the imported folder,
as COCO tools write it; a duplicate's path finds the frame it duplicates). Persons keep their keypoints and
visibility; head boxes come from each person's ``head_bbox`` (what ``alp local export`` writes). The labels are
people's (dataset kind ``seed``): they train the first model and are never replaced by the model's. ``up`` stages
them (``labels/seed.jsonl``, keyed by frame); the runner writes the version once the embedded AWS holds the frames.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from alp.coco import coco_to_manifest
from alp.local.importer import previous_imports
from alp.local.project import ProjectPaths
from alp.manifest import (
    BoundingBoxLabel,
    BoxMetadata,
    ManifestLine,
    read_manifest,
    utc_now_iso,
    write_manifest,
)
from alp.settings import Settings

SEED_FILE = "seed.jsonl"


class StagedLabels(BaseModel):
    images: int
    persons: int
    persons_without_head: int
    frames: list[str]


def _frame_of(paths: ProjectPaths) -> dict[str, str]:
    """Imported path (relative to its folder) -> the frame's key; a duplicate's path -> the frame it duplicates."""
    found: dict[str, str] = {}
    for report in previous_imports(paths):
        for o in report.outcomes:
            key = o.key if o.state == "imported" else o.duplicate_of if o.state == "duplicate" else None
            if key:
                found[o.path] = key
    return found


def stage_labels(coco_file: Path, paths: ProjectPaths, settings: Settings) -> StagedLabels:
    """Check the COCO file against the project (schema, frames) and stage its labels for the runner."""
    if not coco_file.is_file():
        raise FileNotFoundError(f"no such file: {coco_file}: give --labels a COCO keypoints JSON file")
    try:
        gt = json.loads(coco_file.read_text())
    except ValueError as exc:
        raise ValueError(f"{coco_file} is not JSON ({exc})") from None
    if not isinstance(gt, dict) or not isinstance(gt.get("images"), list):
        raise ValueError(f"{coco_file} is not a COCO file: no 'images' list")
    lines = coco_to_manifest(gt, schema=settings.schema_, head_attr=settings.labeling.head_label_attribute,
                             kp_attr=settings.labeling.keypoint_label_attribute,
                             job_name=f"labels:{coco_file.name}")
    frames = _frame_of(paths)
    missing = [line.source_ref for line in lines if line.source_ref not in frames]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) of {coco_file.name} are not among the imported frames "
                                f"(file_name is the path under the --images folder): {', '.join(missing[:3])}")
    head_attr, kp_attr = settings.labeling.head_label_attribute, settings.labeling.keypoint_label_attribute
    staged: list[ManifestLine] = []
    persons = without_head = 0
    for line in lines:
        kp = line.keypoints(kp_attr)
        if kp is not None:
            persons += len(kp[0].persons)
            without_head += sum(p.head_box_index is None for p in kp[0].persons)
        if line.boxes(head_attr) is None:  # an image without people (or without head boxes): none to learn there
            size = kp[0].size if kp else None
            meta = line.data.get(f"{kp_attr}-metadata", {})
            if size is not None:
                line = line.with_boxes(head_attr, BoundingBoxLabel(image_size=[size], annotations=[]),
                                       BoxMetadata(objects=[], human_annotated="yes",
                                                   creation_date=str(meta.get("creation-date") or utc_now_iso()),
                                                   job_name=f"labels:{coco_file.name}"))
        staged.append(line.with_fields(**{"source-ref": frames[line.source_ref]}))
    folder = paths.root / "labels"
    folder.mkdir(parents=True, exist_ok=True)
    write_manifest(str(folder / SEED_FILE), staged)
    return StagedLabels(images=len(staged), persons=persons, persons_without_head=without_head,
                        frames=sorted({frames[line.source_ref] for line in lines}))


def staged_lines(paths: ProjectPaths, unlabeled_uri: str) -> list[ManifestLine]:
    """The staged labels with each frame's ``source-ref`` in the unlabeled bucket (``unlabeled_uri`` ends in /)."""
    path = paths.root / "labels" / SEED_FILE
    if not path.is_file():
        return []
    return [line.with_fields(**{"source-ref": unlabeled_uri + line.source_ref}) for line in read_manifest(str(path))]
