"""The evaluation ruler: head-box AP, OKS keypoint AP and three-state visibility accuracy.

AP follows COCO's ``COCOeval`` step by step, so numbers agree with pycocotools (a test checks it within
1e-3): detections sorted by score (stable), at most 100 boxes / 20 persons per image, greedy matching
against not-yet-matched ground truth at each threshold, crowd and ignored objects handled as COCO does,
101-point interpolated precision, the mean over categories that have ground truth. Keypoint similarity is
COCO's OKS with the schema's sigmas; only labeled points (v > 0) count, the area is the person box's, and
a person with no labeled point is ignored (a detection matched to it is neither a hit nor a miss).

Manifest input (:func:`evaluate_manifests`): prediction lines are matched to truth lines by ``source-ref``,
and when the prefixes differ (predictions written elsewhere) by the file's basename, which must then be
unique in the truth. A prediction for an image that is not in the truth is an error, not a silent skip.

Visibility accuracy compares predicted ``v`` with true ``v`` over all points of matched persons. Persons are
matched greedily by descending person score: first by OKS >= 0.5, then the rest by head-box IoU >= 0.5
(a person whose points are all far off can still be matched through its head box). Unmatched persons do
not enter the accuracy; they are counted in ``unmatched``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from alp.geometry import iou_matrix
from alp.manifest import KeypointLabel, ManifestError, ManifestLine
from alp.schema import VISIBILITY_NAMES, KeypointSchema, get_schema
from alp.storage import basename

FloatArray = NDArray[np.float64]
BOX_MAX_DETS = 100  # COCO's bbox AP@0.5 uses maxDets=100
KPT_MAX_DETS = 20  # COCO's keypoint AP uses maxDets=20
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
VIS_CLASSES = (2, 1, 0)  # visible, occluded, outside (the JSON lists classes in this order)
MATCH_THRESHOLD = 0.5


class EvaluationError(ValueError):
    """The inputs cannot be evaluated; the message says which item and why."""


# --- COCO-style AP core ---------------------------------------------------------------------------------


@dataclass
class ImageEval:
    """One image and category: ``similarity`` is (detections, ground truths) in the given orders."""

    scores: FloatArray
    similarity: FloatArray
    gt_ignore: NDArray[np.bool_]
    gt_crowd: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))


@dataclass
class _Matched:
    scores: FloatArray
    matched: NDArray[np.bool_]  # (T, D)
    dt_ignore: NDArray[np.bool_]  # (T, D)
    n_gt: int  # not ignored


def _match_image(img: ImageEval, thresholds: FloatArray, max_dets: int) -> _Matched | None:
    n_dt, n_gt = len(img.scores), len(img.gt_ignore)
    if n_dt == 0 and n_gt == 0:
        return None
    crowd = img.gt_crowd if len(img.gt_crowd) == n_gt else np.zeros(n_gt, dtype=bool)
    d_order = np.argsort(-img.scores, kind="mergesort")[:max_dets]
    g_order = np.argsort(img.gt_ignore.astype(np.int8), kind="mergesort")
    sim = img.similarity.reshape(n_dt, n_gt)[d_order][:, g_order] if n_dt and n_gt else np.zeros((len(d_order), n_gt))
    g_ign, g_crowd = img.gt_ignore[g_order], crowd[g_order]
    t_count, d_count = len(thresholds), len(d_order)
    matched = np.zeros((t_count, d_count), dtype=bool)
    dt_ignore = np.zeros((t_count, d_count), dtype=bool)
    for ti, t in enumerate(thresholds):
        gt_taken = np.zeros(n_gt, dtype=bool)
        for di in range(d_count):
            best, m = min(float(t), 1 - 1e-10), -1
            for gi in range(n_gt):
                if gt_taken[gi] and not g_crowd[gi]:
                    continue
                if m > -1 and not g_ign[m] and g_ign[gi]:
                    break  # gts are sorted regular-first: a regular match beats any ignored one
                if sim[di, gi] < best:
                    continue
                best, m = float(sim[di, gi]), gi
            if m == -1:
                continue
            dt_ignore[ti, di] = g_ign[m]
            matched[ti, di] = True
            gt_taken[m] = True
    return _Matched(img.scores[d_order], matched, dt_ignore, int(np.count_nonzero(~g_ign)))


def average_precision(images: Sequence[ImageEval], thresholds: FloatArray, max_dets: int) -> FloatArray | None:
    """COCO AP at each threshold for one category (None when it has no ground truth that counts)."""
    results = [r for r in (_match_image(img, thresholds, max_dets) for img in images) if r is not None]
    n_gt = sum(r.n_gt for r in results)
    if n_gt == 0:
        return None
    scores = np.concatenate([r.scores for r in results]) if results else np.zeros(0)
    order = np.argsort(-scores, kind="mergesort")
    matched = np.concatenate([r.matched for r in results], axis=1)[:, order]
    ignored = np.concatenate([r.dt_ignore for r in results], axis=1)[:, order]
    tps = np.cumsum(matched & ~ignored, axis=1).astype(float)
    fps = np.cumsum(~matched & ~ignored, axis=1).astype(float)
    ap = np.zeros(len(thresholds))
    for ti in range(len(thresholds)):
        tp, fp = tps[ti], fps[ti]
        recall = tp / n_gt
        precision = tp / (fp + tp + np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
        idx = np.searchsorted(recall, RECALL_THRESHOLDS, side="left")
        q = np.zeros(len(RECALL_THRESHOLDS))
        valid = idx < len(precision)
        q[valid] = precision[idx[valid]]
        ap[ti] = q.mean()
    return ap


def mean_ap(per_category: Iterable[FloatArray | None]) -> FloatArray | None:
    aps = [a for a in per_category if a is not None]
    return np.mean(np.stack(aps), axis=0) if aps else None


# --- similarities -------------------------------------------------------------------------------------


def box_similarity(dets_xyxy: FloatArray, gts_xyxy: FloatArray, gt_crowd: NDArray[np.bool_] | None = None) -> FloatArray:
    """IoU (D, G); against a crowd box COCO divides by the detection's area instead of the union."""
    iou = iou_matrix(dets_xyxy, gts_xyxy)
    if gt_crowd is not None and gt_crowd.any() and len(dets_xyxy) and len(gts_xyxy):
        d, g = np.asarray(dets_xyxy).reshape(-1, 4), np.asarray(gts_xyxy).reshape(-1, 4)
        lt = np.maximum(d[:, None, :2], g[None, :, :2])
        rb = np.minimum(d[:, None, 2:], g[None, :, 2:])
        wh = np.clip(rb - lt, 0, None)
        inter = wh[..., 0] * wh[..., 1]
        area_d = (d[:, 2] - d[:, 0]) * (d[:, 3] - d[:, 1])
        with np.errstate(invalid="ignore", divide="ignore"):
            crowd_iou = np.where(area_d[:, None] > 0, inter / area_d[:, None], 0.0)
        iou[:, gt_crowd] = crowd_iou[:, gt_crowd]
    return iou


def oks_matrix(det_xy: FloatArray, gt_xy: FloatArray, gt_v: NDArray[np.int_], gt_area: FloatArray,
               gt_box_ltwh: FloatArray, sigmas: Sequence[float]) -> FloatArray:
    """OKS (D, G) exactly as pycocotools' ``computeOks`` (including its rule for unlabeled ground truth:
    the distance to a box twice the ground truth's size)."""
    det_xy = np.asarray(det_xy, dtype=np.float64).reshape(-1, len(sigmas), 2)
    gt_xy = np.asarray(gt_xy, dtype=np.float64).reshape(-1, len(sigmas), 2)
    n_d, n_g = len(det_xy), len(gt_xy)
    out = np.zeros((n_d, n_g))
    if n_d == 0 or n_g == 0:
        return out
    variances = (np.asarray(sigmas, dtype=np.float64) * 2) ** 2
    for gi in range(n_g):
        labeled = np.asarray(gt_v[gi]) > 0
        if labeled.any():
            dx = det_xy[:, :, 0] - gt_xy[gi, :, 0]
            dy = det_xy[:, :, 1] - gt_xy[gi, :, 1]
        else:
            left, top, w, h = (float(v) for v in gt_box_ltwh[gi])
            x0, x1, y0, y1 = left - w, left + w * 2, top - h, top + h * 2
            xd, yd = det_xy[:, :, 0], det_xy[:, :, 1]
            dx = np.maximum(0.0, x0 - xd) + np.maximum(0.0, xd - x1)
            dy = np.maximum(0.0, y0 - yd) + np.maximum(0.0, yd - y1)
        e = (dx**2 + dy**2) / variances / (float(gt_area[gi]) + np.spacing(1)) / 2
        if labeled.any():
            e = e[:, labeled]
        out[:, gi] = np.sum(np.exp(-e), axis=1) / e.shape[1]
    return out


# --- persons and boxes per image ------------------------------------------------------------------------


@dataclass
class Persons:
    """Persons of one image as arrays: xy (N, K, 2), v (N, K), person boxes, areas, scores, head boxes."""

    xy: FloatArray
    v: NDArray[np.int_]
    box_ltwh: FloatArray
    area: FloatArray
    scores: FloatArray
    crowd: NDArray[np.bool_]
    head_xyxy: list[tuple[float, float, float, float] | None]
    ignore: NDArray[np.bool_]  # COCO's rule: no labeled point (or num_keypoints == 0), or a crowd

    @classmethod
    def empty(cls, k: int) -> Persons:
        return cls(np.zeros((0, k, 2)), np.zeros((0, k), dtype=int), np.zeros((0, 4)), np.zeros(0), np.zeros(0),
                   np.zeros(0, dtype=bool), [], np.zeros(0, dtype=bool))

    def __len__(self) -> int:
        return len(self.scores)


@dataclass
class Boxes:
    xyxy: FloatArray
    scores: FloatArray
    class_ids: NDArray[np.int_]
    crowd: NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.scores)


def _check_finite(values: Iterable[float], what: str) -> None:
    for x in values:
        if not isinstance(x, int | float) or isinstance(x, bool) or not math.isfinite(x):
            raise EvaluationError(f"{what}: {x!r} is not a finite number")


# --- visibility -----------------------------------------------------------------------------------------


def _greedy(sim: FloatArray, scores: FloatArray, free_gt: NDArray[np.bool_], free_dt: NDArray[np.bool_],
            threshold: float) -> list[tuple[int, int]]:
    pairs = []
    for di in np.argsort(-scores, kind="mergesort"):
        if not free_dt[di]:
            continue
        cand = np.where(free_gt, sim[di], -1.0)
        if cand.size == 0:
            continue
        gi = int(np.argmax(cand))
        if cand[gi] >= threshold:
            pairs.append((int(di), gi))
            free_gt[gi] = False
            free_dt[di] = False
    return pairs


def match_persons(truth: Persons, pred: Persons, sigmas: Sequence[float]) -> tuple[list[tuple[int, int]], int]:
    """(pred, truth) pairs for visibility: OKS >= 0.5 first, then head-box IoU >= 0.5; returns the pairs and
    how many came from the head-box fallback."""
    free_gt = np.ones(len(truth), dtype=bool)
    free_dt = np.ones(len(pred), dtype=bool)
    if len(truth) == 0 or len(pred) == 0:
        return [], 0
    labeled = (truth.v > 0).any(axis=1)
    sim = oks_matrix(pred.xy, truth.xy, truth.v, truth.area, truth.box_ltwh, sigmas)
    sim[:, ~labeled] = -1.0
    pairs = _greedy(sim, pred.scores, free_gt, free_dt, MATCH_THRESHOLD)
    head_sim = np.full((len(pred), len(truth)), -1.0)
    for di, hb in enumerate(pred.head_xyxy):
        for gi, gb in enumerate(truth.head_xyxy):
            if hb is not None and gb is not None:
                head_sim[di, gi] = iou_matrix(np.array([hb]), np.array([gb]))[0, 0]
    extra = _greedy(head_sim, pred.scores, free_gt, free_dt, MATCH_THRESHOLD)
    return pairs + extra, len(extra)


def visibility_report(confusion: NDArray[np.int_]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall and the confusion matrix (rows truth, columns prediction,
    both in the order visible, occluded, outside)."""
    total = int(confusion.sum())
    per_class: dict[str, dict[str, float | int | None]] = {}
    for i, code in enumerate(VIS_CLASSES):
        tp = int(confusion[i, i])
        predicted, actual = int(confusion[:, i].sum()), int(confusion[i, :].sum())
        per_class[VISIBILITY_NAMES[code]] = {
            "precision": tp / predicted if predicted else None,
            "recall": tp / actual if actual else None,
            "support": actual,
        }
    return {
        "accuracy": float(np.trace(confusion)) / total if total else None,
        "classes": [VISIBILITY_NAMES[c] for c in VIS_CLASSES],
        "confusion": confusion.tolist(),
        "per_class": per_class,
        "keypoints": total,
    }


def _confusion_add(confusion: NDArray[np.int_], truth_v: NDArray[np.int_], pred_v: NDArray[np.int_]) -> None:
    row = {c: i for i, c in enumerate(VIS_CLASSES)}
    for t, p in zip(truth_v.tolist(), pred_v.tolist(), strict=True):
        confusion[row[int(t)], row[int(p)]] += 1


# --- the evaluation over prepared images ----------------------------------------------------------------


@dataclass
class PreparedImage:
    key: str
    truth_boxes: Boxes
    pred_boxes: Boxes
    truth_persons: Persons
    pred_persons: Persons


def evaluate_prepared(images: Sequence[PreparedImage], schema: KeypointSchema, *,
                      visibility: bool = True) -> dict[str, Any]:
    """Every metric over images already parsed into arrays (both input formats end here)."""
    sigmas = schema.sigmas
    k = schema.num_keypoints
    classes = sorted({int(c) for im in images for c in im.truth_boxes.class_ids}
                     | {int(c) for im in images for c in im.pred_boxes.class_ids})
    box_aps = []
    for cls in classes:
        per_image = []
        for im in images:
            g, d = im.truth_boxes, im.pred_boxes
            gm, dm = g.class_ids == cls, d.class_ids == cls
            sim = box_similarity(d.xyxy[dm], g.xyxy[gm], g.crowd[gm])
            per_image.append(ImageEval(d.scores[dm], sim, g.crowd[gm].copy(), g.crowd[gm]))
        box_aps.append(average_precision(per_image, IOU_THRESHOLDS, BOX_MAX_DETS))
    box_ap = mean_ap(box_aps)

    kpt_images = []
    confusion = np.zeros((3, 3), dtype=np.int64)
    matched_oks = matched_head = 0
    unmatched_truth = unmatched_pred = 0
    for im in images:
        t, p = im.truth_persons, im.pred_persons
        sim = oks_matrix(p.xy, t.xy, t.v, t.area, t.box_ltwh, sigmas)
        kpt_images.append(ImageEval(p.scores, sim, t.ignore | t.crowd, t.crowd))
        pairs, by_head = match_persons(t, p, sigmas)
        matched_oks += len(pairs) - by_head
        matched_head += by_head
        unmatched_truth += len(t) - len(pairs)
        unmatched_pred += len(p) - len(pairs)
        if visibility:
            for di, gi in pairs:
                _confusion_add(confusion, t.v[gi], p.v[di])
    kpt_ap = average_precision(kpt_images, IOU_THRESHOLDS, KPT_MAX_DETS)
    vis = visibility_report(confusion) if visibility else None

    def _num(x: float | None) -> float | None:
        return None if x is None else round(float(x), 6)

    return {
        "schema": schema.name,
        "box_map50": _num(box_ap[0]) if box_ap is not None else None,
        "box_map": _num(float(box_ap.mean())) if box_ap is not None else None,
        "kpt_oks_map50": _num(kpt_ap[0]) if kpt_ap is not None else None,
        "kpt_oks_map": _num(float(kpt_ap.mean())) if kpt_ap is not None else None,
        "visibility_accuracy": _num(vis["accuracy"]) if vis else None,
        "visibility": vis,
        "images": len(images),
        "persons": sum(len(im.truth_persons) for im in images),
        "predictions": sum(len(im.pred_persons) for im in images),
        "head_boxes": sum(len(im.truth_boxes) for im in images),
        "head_predictions": sum(len(im.pred_boxes) for im in images),
        "matched": {"oks": matched_oks, "head_box": matched_head},
        "unmatched": unmatched_truth,
        "unmatched_predictions": unmatched_pred,
        "k": k,
    }


# --- manifest input ------------------------------------------------------------------------------------


def _line_boxes(line: ManifestLine, attr: str, *, prediction: bool, where: str) -> Boxes:
    got = line.boxes(attr)
    if got is None:
        return Boxes(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=int), np.zeros(0, dtype=bool))
    label, meta = got
    n = len(label.annotations)
    if prediction and meta.objects and len(meta.objects) != n:
        raise EvaluationError(f"{where}: {n} boxes but {len(meta.objects)} confidences in {attr}-metadata.objects")
    # Without per-box confidences every box scores 1.0 (ties keep the file's order, as COCO's stable sort does).
    scores = [o.confidence for o in meta.objects] if (prediction and meta.objects) else [1.0] * n
    _check_finite(scores, f"{where}: box confidence")
    xyxy = np.array([a.xyxy for a in label.annotations], dtype=np.float64).reshape(-1, 4)
    return Boxes(xyxy, np.array(scores, dtype=np.float64), np.array([a.class_id for a in label.annotations], dtype=int),
                 np.zeros(n, dtype=bool))


def _line_persons(line: ManifestLine, attr: str, schema: KeypointSchema, boxes: Boxes, *, where: str) -> Persons:
    got = line.keypoints(attr)
    if got is None:
        return Persons.empty(schema.num_keypoints)
    label: KeypointLabel = got[0]
    if label.keypoint_schema != schema.name:
        raise EvaluationError(f"{where}: keypoints use schema {label.keypoint_schema!r}, evaluating {schema.name!r}")
    try:
        label.check_schema(schema.names)
    except ManifestError as exc:
        raise EvaluationError(f"{where}: {exc}") from None
    n, k = len(label.persons), schema.num_keypoints
    xy = np.zeros((n, k, 2))
    v = np.zeros((n, k), dtype=int)
    box = np.zeros((n, 4))
    area = np.zeros(n)
    scores = np.ones(n)
    heads: list[tuple[float, float, float, float] | None] = []
    for i, person in enumerate(label.persons):
        for j, kp in enumerate(person.keypoints):
            xy[i, j] = (kp.x, kp.y)
            v[i, j] = kp.v
        head = None
        if person.head_box_index is not None:
            if person.head_box_index >= len(boxes):
                raise EvaluationError(f"{where}: person {i} points at head box {person.head_box_index}, "
                                      f"the line has {len(boxes)}")
            head = tuple(float(c) for c in boxes.xyxy[person.head_box_index])
        heads.append(head)  # type: ignore[arg-type]
        if person.bbox is not None:
            box[i] = person.bbox
        else:  # the extent of the labeled points and the head box
            pts = [tuple(p) for p in xy[i][v[i] > 0]]
            if head is not None:
                pts += [(head[0], head[1]), (head[2], head[3])]
            if pts:
                arr = np.array(pts)
                box[i] = (arr[:, 0].min(), arr[:, 1].min(), np.ptp(arr[:, 0]), np.ptp(arr[:, 1]))
        area[i] = box[i, 2] * box[i, 3]
        if person.score is not None:
            scores[i] = person.score
        elif head is not None and person.head_box_index is not None:
            scores[i] = boxes.scores[person.head_box_index]
    return Persons(xy, v, box, area, scores, np.zeros(n, dtype=bool), heads, (v > 0).sum(axis=1) == 0)


def _index_truth(lines: Sequence[ManifestLine]) -> tuple[dict[str, int], dict[str, int | None]]:
    by_ref: dict[str, int] = {}
    by_name: dict[str, int | None] = {}
    for i, line in enumerate(lines):
        try:
            ref = line.source_ref
        except ManifestError as exc:
            raise EvaluationError(f"truth line {i + 1}: {exc}") from None
        if ref in by_ref:
            raise EvaluationError(f"truth lines {by_ref[ref] + 1} and {i + 1} both describe {ref}")
        by_ref[ref] = i
        name = basename(ref)
        by_name[name] = None if name in by_name else i  # None marks an ambiguous basename
    return by_ref, by_name


def _as_lines(lines: Iterable[ManifestLine | str | dict[str, Any]], what: str) -> list[ManifestLine]:
    out: list[ManifestLine] = []
    for n, item in enumerate(lines, 1):
        try:
            if isinstance(item, ManifestLine):
                out.append(item)
            elif isinstance(item, str):
                out.append(ManifestLine.parse(item))
            else:
                out.append(ManifestLine(dict(item)))
        except ManifestError as exc:
            raise EvaluationError(f"{what} line {n}: {exc}") from None
    return out


def evaluate_manifests(truth_lines: Iterable[ManifestLine | str | dict[str, Any]],
                       pred_lines: Iterable[ManifestLine | str | dict[str, Any]],
                       schema: str | KeypointSchema = "incabin17", head_attr: str = "head-boxes",
                       kp_attr: str = "keypoints") -> dict[str, Any]:
    """Evaluate prediction manifest lines against truth manifest lines; returns the metrics JSON.

    Every truth line is an image of the evaluation (an image without predictions counts its objects as
    missed). Raises :class:`EvaluationError` for an empty truth, a prediction for an unknown image, two
    predictions for the same image, non-finite numbers or a wrong number of keypoints.
    """
    sch = get_schema(schema) if isinstance(schema, str) else schema
    truth = _as_lines(truth_lines, "truth")
    preds = _as_lines(pred_lines, "prediction")
    if not truth:
        raise EvaluationError("the truth manifest is empty")
    by_ref, by_name = _index_truth(truth)
    pred_for: dict[int, ManifestLine] = {}
    for n, line in enumerate(preds, 1):
        try:
            ref = line.source_ref
        except ManifestError as exc:
            raise EvaluationError(f"prediction line {n}: {exc}") from None
        idx = by_ref.get(ref)
        if idx is None:
            name = basename(ref)
            if name not in by_name:
                raise EvaluationError(f"prediction line {n}: image {ref} is not in the truth")
            idx = by_name[name]
            if idx is None:
                raise EvaluationError(f"prediction line {n}: {name} names several truth images; use full source-refs")
        if idx in pred_for:
            raise EvaluationError(f"prediction line {n}: a second prediction for {truth[idx].source_ref}")
        pred_for[idx] = line
    prepared = []
    for i, t_line in enumerate(truth):
        where_t = f"truth line {i + 1}"
        try:
            t_boxes = _line_boxes(t_line, head_attr, prediction=False, where=where_t)
            t_persons = _line_persons(t_line, kp_attr, sch, t_boxes, where=where_t)
            p_line = pred_for.get(i)
            if p_line is None:
                p_boxes = Boxes(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=int), np.zeros(0, dtype=bool))
                p_persons = Persons.empty(sch.num_keypoints)
            else:
                where_p = f"prediction for {t_line.source_ref}"
                p_boxes = _line_boxes(p_line, head_attr, prediction=True, where=where_p)
                p_persons = _line_persons(p_line, kp_attr, sch, p_boxes, where=where_p)
        except ManifestError as exc:
            raise EvaluationError(str(exc)) from None
        prepared.append(PreparedImage(t_line.source_ref, t_boxes, p_boxes, t_persons, p_persons))
    result = evaluate_prepared(prepared, sch)
    result["input"] = "manifest"
    return result
