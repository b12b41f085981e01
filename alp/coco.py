"""COCO keypoint JSON: import, export and evaluation, and detection of which format a file holds.

Formats (as pycocotools takes them):

* ground truth: ``{"images": [...], "annotations": [...], "categories": [...]}``; a person annotation has
  ``keypoints`` ``[x1, y1, v1, ...]``, ``num_keypoints``, ``bbox`` ``[l, t, w, h]``, ``area``, ``iscrowd``;
* detections ("results"): a list of ``{"image_id", "category_id", "keypoints", "score"[, "bbox"]}``.

Export writes COCO's convention for points outside the image (``0, 0, 0``) and carries each person's head
box in a non-standard ``head_bbox`` field (pycocotools ignores unknown fields); boxes that no person points
at are not exported. On import a detection's third keypoint value becomes ``v`` when it is 0, 1 or 2
(visibility predictions) and 2 otherwise (COCO results often put a confidence there).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np

from alp import storage
from alp.manifest import (
    BoundingBoxLabel,
    BoxAnnotation,
    BoxMetadata,
    ImageSize,
    Keypoint,
    KeypointLabel,
    KeypointMetadata,
    ManifestError,
    ManifestLine,
    ObjectConfidence,
    PersonKeypoints,
    parse_lines,
)
from alp.metrics import (
    Boxes,
    EvaluationError,
    Persons,
    PreparedImage,
    evaluate_prepared,
)
from alp.schema import PRESETS, KeypointSchema, get_schema

InputKind = Literal["manifest", "coco_gt", "coco_results"]
PERSON_CATEGORY_ID = 1
HEAD_CATEGORY_ID = 2  # exports only: head boxes as a category of their own


# --- reading and format detection ---------------------------------------------------------------------


def _reject_constant(name: str) -> float:
    raise EvaluationError(f"non-finite number {name} in JSON input")


def detect_and_load(text: str, where: str = "input") -> tuple[InputKind, Any]:
    """Tell a COCO ground-truth file, a COCO detections list and a JSON Lines manifest apart by content."""
    stripped = text.strip()
    if not stripped:
        raise EvaluationError(f"{where} is empty")
    if stripped[0] == "[":
        try:
            data = json.loads(stripped, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            raise EvaluationError(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
            raise EvaluationError(f"{where}: a JSON list must hold COCO detections (objects)")
        return "coco_results", data
    if stripped[0] == "{":
        try:
            data = json.loads(stripped, parse_constant=_reject_constant)
        except json.JSONDecodeError:
            data = None  # several lines: a manifest
        if isinstance(data, dict) and "annotations" in data and "images" in data:
            return "coco_gt", data
        try:
            lines = list(parse_lines(line for line in stripped.splitlines() if line.strip()))
        except ManifestError as exc:
            raise EvaluationError(f"{where}: {exc}") from None
        return "manifest", lines
    raise EvaluationError(f"{where}: neither a JSON Lines manifest nor COCO JSON")


def load_input(uri: str) -> tuple[InputKind, Any]:
    return detect_and_load(storage.read_text(uri), uri)


# --- COCO -> arrays -----------------------------------------------------------------------------------


def _finite_list(values: Any, n: int | None, what: str) -> list[float]:
    if not isinstance(values, list) or (n is not None and len(values) != n):
        count = len(values) if isinstance(values, list) else type(values).__name__
        raise EvaluationError(f"{what}: expected {n} numbers, got {count}")
    for x in values:
        if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
            raise EvaluationError(f"{what}: {x!r} is not a finite number")
    return [float(x) for x in values]


def _keypoint_category(gt: dict[str, Any], schema: KeypointSchema) -> int:
    cats = [c for c in gt.get("categories") or [] if isinstance(c, dict) and c.get("keypoints")]
    if len(cats) > 1:
        raise EvaluationError("COCO ground truth has several keypoint categories; evaluate one at a time")
    if not cats:
        return PERSON_CATEGORY_ID
    if len(cats[0]["keypoints"]) != schema.num_keypoints:
        raise EvaluationError(f"COCO category {cats[0].get('name')!r} has {len(cats[0]['keypoints'])} keypoints; "
                              f"schema {schema.name} has {schema.num_keypoints}")
    return int(cats[0]["id"])


def infer_schema(gt: dict[str, Any]) -> KeypointSchema:
    """The preset whose point names equal the ground truth's keypoint category (for COCO input)."""
    for cat in gt.get("categories") or []:
        names = tuple(cat.get("keypoints") or ()) if isinstance(cat, dict) else ()
        for preset in PRESETS.values():
            if names == preset.names:
                return preset
    raise EvaluationError("cannot tell the keypoint schema from the COCO categories; pass --schema")


def prepare_coco(gt: dict[str, Any], dets: Sequence[dict[str, Any]], schema: KeypointSchema
                 ) -> tuple[list[PreparedImage], bool]:
    """Arrays per image (sorted image ids, as COCOeval); also whether the detections carry visibility."""
    if not isinstance(gt.get("images"), list) or not isinstance(gt.get("annotations"), list):
        raise EvaluationError("COCO ground truth needs 'images' and 'annotations' lists")
    if not gt["images"]:
        raise EvaluationError("COCO ground truth has no images")
    k = schema.num_keypoints
    kp_cat = _keypoint_category(gt, schema)
    image_ids = sorted({int(im["id"]) for im in gt["images"]})
    known = set(image_ids)
    gts: dict[int, list[dict[str, Any]]] = {i: [] for i in image_ids}
    for n, ann in enumerate(gt["annotations"]):
        where = f"ground-truth annotation {ann.get('id', n)}"
        if ann.get("image_id") not in known:
            raise EvaluationError(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
        _finite_list(ann.get("bbox"), 4, f"{where} bbox")
        if "keypoints" in ann:
            _finite_list(ann["keypoints"], 3 * k, f"{where} keypoints")
        gts[int(ann["image_id"])].append(ann)
    dts: dict[int, list[dict[str, Any]]] = {i: [] for i in image_ids}
    with_visibility = True
    for n, det in enumerate(dets):
        where = f"detection {n}"
        if det.get("image_id") not in known:
            raise EvaluationError(f"{where}: image_id {det.get('image_id')!r} is not in the ground truth")
        _finite_list([det.get("score")], 1, f"{where} score")
        if "keypoints" in det:
            kps = _finite_list(det["keypoints"], 3 * k, f"{where} keypoints")
            with_visibility &= all(v in (0.0, 1.0, 2.0) for v in kps[2::3])
        elif "bbox" not in det:
            raise EvaluationError(f"{where}: has neither 'keypoints' nor 'bbox'")
        if "bbox" in det:
            _finite_list(det["bbox"], 4, f"{where} bbox")
        dts[int(det["image_id"])].append(det)

    images = []
    for image_id in image_ids:
        g, d = gts[image_id], dts[image_id]
        images.append(PreparedImage(str(image_id), _coco_boxes(g, truth=True), _coco_boxes(d, truth=False),
                                    _coco_persons(g, kp_cat, k, truth=True), _coco_persons(d, kp_cat, k, truth=False)))
    return images, with_visibility and any("keypoints" in d for d in dets)


def _det_bbox(d: dict[str, Any]) -> list[float]:
    if "bbox" in d:
        return [float(x) for x in d["bbox"]]
    kps = np.asarray(d["keypoints"], dtype=np.float64)
    xs, ys = kps[0::3], kps[1::3]  # as pycocotools' loadRes does for keypoint-only results
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()), float(ys.max() - ys.min())]


def _coco_boxes(anns: Sequence[dict[str, Any]], *, truth: bool) -> Boxes:
    boxes = [_det_bbox(a) if not truth else [float(x) for x in a["bbox"]] for a in anns]
    xyxy = np.array([[b[0], b[1], b[0] + b[2], b[1] + b[3]] for b in boxes], dtype=np.float64).reshape(-1, 4)
    scores = np.array([1.0 if truth else float(a["score"]) for a in anns], dtype=np.float64)
    cats = np.array([int(a.get("category_id", PERSON_CATEGORY_ID)) for a in anns], dtype=int)
    crowd = np.array([bool(a.get("iscrowd", 0)) if truth else False for a in anns], dtype=bool)
    return Boxes(xyxy, scores, cats, crowd)


def _coco_persons(anns: Sequence[dict[str, Any]], kp_cat: int, k: int, *, truth: bool) -> Persons:
    people = [a for a in anns if int(a.get("category_id", PERSON_CATEGORY_ID)) == kp_cat and "keypoints" in a]
    n = len(people)
    if n == 0:
        return Persons.empty(k)
    kps = np.array([a["keypoints"] for a in people], dtype=np.float64).reshape(n, k, 3)
    v = np.clip(np.rint(kps[:, :, 2]), 0, 2).astype(int)
    # COCO ignores a person whose num_keypoints is 0 (whatever the points say), and crowds.
    ignore = np.array([int(a.get("num_keypoints", int((np.asarray(a["keypoints"][2::3]) > 0).sum()))) == 0
                       for a in people], dtype=bool) if truth else np.zeros(n, dtype=bool)
    boxes = np.array([a["bbox"] if truth else _det_bbox(a) for a in people], dtype=np.float64).reshape(n, 4)
    area = np.array([float(a["area"]) if truth and "area" in a else float(b[2] * b[3])
                     for a, b in zip(people, boxes, strict=True)])
    scores = np.array([1.0 if truth else float(a["score"]) for a in people])
    crowd = np.array([bool(a.get("iscrowd", 0)) if truth else False for a in people], dtype=bool)
    heads: list[tuple[float, float, float, float] | None] = []
    for a in people:
        hb = a.get("head_bbox")
        heads.append(None if hb is None else (hb[0], hb[1], hb[0] + hb[2], hb[1] + hb[3]))
    return Persons(kps[:, :, :2].copy(), v, boxes, area, scores, crowd, heads, ignore)


def evaluate_coco(gt: dict[str, Any], dets: Sequence[dict[str, Any]], schema: str | KeypointSchema | None = None
                  ) -> dict[str, Any]:
    """Metrics for COCO input: ``box_map50`` is the AP of the annotations' boxes (COCO ``bbox``),
    ``kpt_oks_map50``/``kpt_oks_map`` COCO ``keypoints`` AP; visibility only when every detection's third
    keypoint values are 0, 1 or 2."""
    sch = infer_schema(gt) if schema is None else (get_schema(schema) if isinstance(schema, str) else schema)
    images, with_visibility = prepare_coco(gt, dets, sch)
    result = evaluate_prepared(images, sch, visibility=with_visibility)
    result["input"] = "coco"
    return result


# --- manifest <-> COCO --------------------------------------------------------------------------------


def _flat_keypoints(person: PersonKeypoints) -> list[float]:
    out: list[float] = []
    for kp in person.keypoints:
        out += [0.0, 0.0, 0] if kp.v == 0 else [kp.x, kp.y, kp.v]
    return out


def _category(schema: KeypointSchema) -> dict[str, Any]:
    return {"id": PERSON_CATEGORY_ID, "name": "person", "supercategory": "person", "keypoints": list(schema.names),
            "skeleton": [[a + 1, b + 1] for a, b in schema.skeleton_idx]}


def manifest_to_coco(lines: Iterable[ManifestLine], schema: str | KeypointSchema = "incabin17",
                     head_attr: str = "head-boxes", kp_attr: str = "keypoints", *,
                     heads_as_category: bool = False) -> dict[str, Any]:
    """COCO keypoint ground truth from truth manifest lines (image ids 1..N in line order). With
    ``heads_as_category`` every head box is also an annotation of a second category, ``head`` (an export people's
    tools read as boxes), besides the ``head_bbox`` of the person it belongs to."""
    sch = get_schema(schema) if isinstance(schema, str) else schema
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, line in enumerate(lines, 1):
        kp = line.keypoints(kp_attr)
        bx = line.boxes(head_attr)
        size = kp[0].size if kp else (bx[0].size if bx else None)
        if size is None:
            raise EvaluationError(f"line {image_id}: no {kp_attr!r} or {head_attr!r} label to take the image size from")
        images.append({"id": image_id, "file_name": storage.basename(line.source_ref), "width": size.width,
                       "height": size.height, "alp_source_ref": line.source_ref})
        heads = bx[0].annotations if bx else []
        if heads_as_category:
            for h in heads:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": HEAD_CATEGORY_ID,
                                    "bbox": [h.left, h.top, h.width, h.height], "area": float(h.width * h.height),
                                    "iscrowd": 0})
        if kp is None:
            continue
        kp[0].check_schema(sch.names)
        for person in kp[0].persons:
            flat = _flat_keypoints(person)
            visible_n = sum(1 for p in person.keypoints if p.v > 0)
            bbox = person.bbox or _extent(person, heads)
            ann: dict[str, Any] = {"id": len(annotations) + 1, "image_id": image_id, "category_id": PERSON_CATEGORY_ID,
                                   "keypoints": flat, "num_keypoints": visible_n, "bbox": [float(x) for x in bbox],
                                   "area": float(bbox[2] * bbox[3]), "iscrowd": 0}
            if person.head_box_index is not None and person.head_box_index < len(heads):
                h = heads[person.head_box_index]
                ann["head_bbox"] = [h.left, h.top, h.width, h.height]
            annotations.append(ann)
    categories = [_category(sch)] + ([{"id": HEAD_CATEGORY_ID, "name": "head", "supercategory": "person"}]
                                     if heads_as_category else [])
    return {"images": images, "annotations": annotations, "categories": categories}


def _extent(person: PersonKeypoints, heads: Sequence[BoxAnnotation]) -> list[float]:
    pts = [(p.x, p.y) for p in person.keypoints if p.v > 0]
    if person.head_box_index is not None and person.head_box_index < len(heads):
        h = heads[person.head_box_index]
        pts += [(h.left, h.top), (h.left + h.width, h.top + h.height)]
    if not pts:
        return [0.0, 0.0, 0.0, 0.0]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def manifest_to_coco_results(pred_lines: Iterable[ManifestLine], gt: dict[str, Any],
                             schema: str | KeypointSchema = "incabin17", head_attr: str = "head-boxes",
                             kp_attr: str = "keypoints") -> list[dict[str, Any]]:
    """COCO detections from prediction manifest lines; images are found in ``gt`` by source-ref or file name.

    Keypoints carry the predicted ``v`` as their third value; the person's score is its own, else its head
    box's confidence, else 1.0.
    """
    sch = get_schema(schema) if isinstance(schema, str) else schema
    by_ref = {im.get("alp_source_ref"): im["id"] for im in gt["images"]}
    by_name = {im["file_name"]: im["id"] for im in gt["images"]}
    out: list[dict[str, Any]] = []
    for line in pred_lines:
        image_id = by_ref.get(line.source_ref, by_name.get(storage.basename(line.source_ref)))
        if image_id is None:
            raise EvaluationError(f"prediction for {line.source_ref} names no image of the ground truth")
        kp, bx = line.keypoints(kp_attr), line.boxes(head_attr)
        if kp is None:
            continue
        kp[0].check_schema(sch.names)
        confidences = [o.confidence for o in bx[1].objects] if bx else []
        for person in kp[0].persons:
            score = person.score
            if score is None and person.head_box_index is not None and person.head_box_index < len(confidences):
                score = confidences[person.head_box_index]
            flat: list[float] = []
            for p in person.keypoints:
                flat += [p.x, p.y, p.v]
            det: dict[str, Any] = {"image_id": image_id, "category_id": PERSON_CATEGORY_ID, "keypoints": flat,
                                   "score": 1.0 if score is None else float(score)}
            if person.bbox is not None:
                det["bbox"] = [float(x) for x in person.bbox]
            out.append(det)
    return out


def coco_to_manifest(gt: dict[str, Any], *, schema: str | KeypointSchema | None = None, image_prefix: str = "",
                     head_attr: str = "head-boxes", kp_attr: str = "keypoints",
                     dets: Sequence[dict[str, Any]] | None = None, job_name: str = "coco-import",
                     creation_date: str = "2024-01-01T00:00:00.000000") -> list[ManifestLine]:
    """Manifest lines from COCO ground truth (or, with ``dets``, from detections on its images).

    ``source-ref`` is ``image_prefix`` joined with each image's ``file_name``. Head boxes come from
    ``head_bbox`` fields when present; a person without one has no head box.
    """
    sch = infer_schema(gt) if schema is None else (get_schema(schema) if isinstance(schema, str) else schema)
    k = sch.num_keypoints
    kp_cat = _keypoint_category(gt, sch)
    source = list(dets) if dets is not None else gt.get("annotations") or []
    per_image: dict[int, list[dict[str, Any]]] = {int(im["id"]): [] for im in gt["images"]}
    for ann in source:
        if ann.get("image_id") not in per_image:
            raise EvaluationError(f"annotation for image_id {ann.get('image_id')!r}, which is not in 'images'")
        if int(ann.get("category_id", PERSON_CATEGORY_ID)) == kp_cat and "keypoints" in ann:
            _finite_list(ann["keypoints"], 3 * k, f"annotation {ann.get('id', '?')} keypoints")
            per_image[int(ann["image_id"])].append(ann)
    lines = []
    for im in gt["images"]:
        size = ImageSize(width=int(im["width"]), height=int(im["height"]), depth=3)
        ref = storage.join(image_prefix, im["file_name"]) if image_prefix else str(im["file_name"])
        boxes: list[BoxAnnotation] = []
        objects: list[ObjectConfidence] = []
        persons: list[PersonKeypoints] = []
        for ann in per_image[int(im["id"])]:
            flat = ann["keypoints"]
            kps = []
            for j, name in enumerate(sch.names):
                x, y, third = (float(flat[3 * j]), float(flat[3 * j + 1]), float(flat[3 * j + 2]))
                v = int(third) if third in (0.0, 1.0, 2.0) else 2
                kps.append(Keypoint(name=name, x=x, y=y, v=v))
            head_index = None
            if ann.get("head_bbox") is not None:
                hb = _finite_list(ann["head_bbox"], 4, "head_bbox")
                head_index = len(boxes)
                boxes.append(BoxAnnotation(class_id=0, left=hb[0], top=hb[1], width=hb[2], height=hb[3]))
                objects.append(ObjectConfidence(confidence=float(ann.get("score", 1.0))))
            bbox = ann.get("bbox") if "bbox" in ann else None
            persons.append(PersonKeypoints(keypoints=kps, head_box_index=head_index,
                                           bbox=[float(x) for x in bbox] if bbox is not None else None,
                                           score=float(ann["score"]) if "score" in ann else None))
        line = ManifestLine.for_image(ref)
        if boxes:
            line = line.with_boxes(head_attr, BoundingBoxLabel(image_size=[size], annotations=boxes),
                                   BoxMetadata(objects=objects, human_annotated="no" if dets else "yes",
                                               creation_date=creation_date, job_name=job_name))
        line = line.with_keypoints(kp_attr, KeypointLabel(image_size=[size], keypoint_schema=sch.name, persons=persons),
                                   KeypointMetadata(human_annotated="no" if dets else "yes",
                                                    creation_date=creation_date, job_name=job_name))
        lines.append(line)
    return lines


def evaluate_files(truth_uri: str, pred_uri: str, schema: str | None = None, head_attr: str = "head-boxes",
                   kp_attr: str = "keypoints") -> dict[str, Any]:
    """Evaluate two files of the same family (manifests, or COCO ground truth + detections)."""
    from alp.metrics import evaluate_manifests

    t_kind, t_data = load_input(truth_uri)
    p_kind, p_data = load_input(pred_uri)
    if t_kind == "manifest" and p_kind == "manifest":
        if schema is None:
            schema = _manifest_schema(t_data, kp_attr)
        return evaluate_manifests(t_data, p_data, schema, head_attr, kp_attr)
    if t_kind == "coco_gt" and p_kind == "coco_results":
        return evaluate_coco(t_data, p_data, schema)
    raise EvaluationError(f"truth is {t_kind.replace('_', ' ')} and predictions are {p_kind.replace('_', ' ')}: "
                          "pass two manifests, or COCO ground truth with a COCO detections list")


def _manifest_schema(lines: Sequence[ManifestLine], kp_attr: str) -> str:
    for line in lines:
        raw = line.data.get(kp_attr)
        if isinstance(raw, dict):
            name = raw.get("schema") or raw.get("keypoint_schema")
            if isinstance(name, str):
                get_schema(name)
                return name
    return "incabin17"
