"""Per-keypoint visibility thresholds, fitted on the version's validation split at training time.

The seed's rule stays (main conf > main threshold: in view; then visible conf > additional threshold: visible,
else occluded; otherwise outside), but one pair of thresholds for all 17 points is a poor fit: a wrist and an
eye differ in how confident both models are when a point is hidden. After training, the new bundle predicts
the validation images labeled by people; each predicted person is paired with the labeled person whose box it
overlaps most (IoU >= 0.5; a box match, since a point-based match would depend on the thresholds being fitted);
per keypoint, the pair of thresholds on a grid that classifies the most labeled points right is kept, ties
going to the pair closest to the configured one. A keypoint with fewer than ``min_samples`` labeled points, or
with one class only, keeps the configured pair. The thresholds go into ``bundle.json`` and the engine uses them.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alp import storage
from alp.bundle import DESCRIPTOR_NAME, VisibilityThreshold, load_bundle, parse_descriptor
from alp.datasets import MODEL_KINDS, SOURCE_KEY, SPLIT_KEY
from alp.geometry import box_iou
from alp.manifest import ManifestLine, read_manifest
from alp.settings import Settings

log = logging.getLogger(__name__)

GRID: tuple[float, ...] = tuple(round(x, 2) for x in np.linspace(0.05, 0.95, 19))
MIN_SAMPLES = 30
MATCH_IOU = 0.5


@dataclass
class KeypointSamples:
    main: list[float] = field(default_factory=list)
    visible: list[float] = field(default_factory=list)
    truth: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class VisibilityFit:
    thresholds: dict[str, VisibilityThreshold]
    samples: dict[str, int]
    accuracy_configured: float | None
    accuracy_fitted: float | None

    def summary(self) -> dict[str, Any]:
        return {"samples": self.samples, "accuracy_configured": self.accuracy_configured,
                "accuracy_fitted": self.accuracy_fitted, "grid": [GRID[0], GRID[-1], len(GRID)]}


def _xyxy(bbox: Sequence[float] | None) -> tuple[float, float, float, float] | None:
    if bbox is None:
        return None
    x, y, w, h = bbox
    return (x, y, x + w, y + h)


def collect_samples(truth: Sequence[ManifestLine], predicted: Sequence[ManifestLine], names: Sequence[str],
                    kp_attr: str) -> dict[str, KeypointSamples]:
    """Per keypoint name: both models' confidences of each predicted person paired with a labeled one, and the
    labeled visibility."""
    samples = {name: KeypointSamples() for name in names}
    by_ref = {line.data.get("source-ref"): line for line in predicted}
    for t_line in truth:
        p_line = by_ref.get(t_line.data.get("source-ref"))
        t_kp, p_kp = t_line.keypoints(kp_attr), p_line.keypoints(kp_attr) if p_line is not None else None
        if t_kp is None or p_kp is None:
            continue
        truth_persons = t_kp[0].persons
        pairs = sorted(((box_iou(pb, tb), pi, ti)
                        for pi, p in enumerate(p_kp[0].persons) if (pb := _xyxy(p.bbox)) is not None
                        for ti, t in enumerate(truth_persons) if (tb := _xyxy(t.bbox)) is not None), reverse=True)
        used_p: set[int] = set()
        used_t: set[int] = set()
        for iou, pi, ti in pairs:
            if iou < MATCH_IOU or pi in used_p or ti in used_t:
                continue
            used_p.add(pi)
            used_t.add(ti)
            for pk, tk in zip(p_kp[0].persons[pi].keypoints, truth_persons[ti].keypoints, strict=True):
                if pk.score is None or tk.name not in samples:
                    continue
                s = samples[tk.name]
                s.main.append(pk.score)
                s.visible.append(pk.score_visible if pk.score_visible is not None else 0.0)
                s.truth.append(tk.v)
    return samples


def _correct(main: np.ndarray, visible: np.ndarray, truth: np.ndarray, t_main: float, t_add: float) -> int:
    v = np.where(main > t_main, np.where(visible > t_add, 2, 1), 0)
    return int((v == truth).sum())


def fit_keypoint(s: KeypointSamples, configured: tuple[float, float], min_samples: int = MIN_SAMPLES
                 ) -> tuple[VisibilityThreshold, int, int]:
    """The best pair on the grid for one keypoint, and the correct counts with the configured and the fitted
    pair. Too few samples, or one class only: the configured pair."""
    main, visible, truth = (np.asarray(a, dtype=np.float64) for a in (s.main, s.visible, s.truth))
    base = _correct(main, visible, truth, *configured) if len(truth) else 0
    if len(truth) < min_samples or len(set(truth.tolist())) < 2:
        return VisibilityThreshold(main=configured[0], additional=configured[1]), base, base
    best = (base, 0.0, configured)
    for t_main in GRID:
        for t_add in GRID:
            correct = _correct(main, visible, truth, t_main, t_add)
            distance = abs(t_main - configured[0]) + abs(t_add - configured[1])
            if (correct, -distance) > (best[0], -best[1]):
                best = (correct, distance, (t_main, t_add))
    return VisibilityThreshold(main=best[2][0], additional=best[2][1]), base, best[0]


def fit_thresholds(samples: dict[str, KeypointSamples], configured: tuple[float, float],
                   min_samples: int = MIN_SAMPLES) -> VisibilityFit:
    thresholds: dict[str, VisibilityThreshold] = {}
    base_total = fitted_total = count = 0
    for name, s in samples.items():
        thresholds[name], base, fitted = fit_keypoint(s, configured, min_samples)
        base_total += base
        fitted_total += fitted
        count += len(s.truth)
    return VisibilityFit(thresholds=thresholds, samples={n: len(s.truth) for n, s in samples.items()},
                         accuracy_configured=round(base_total / count, 6) if count else None,
                         accuracy_fitted=round(fitted_total / count, 6) if count else None)


def validation_lines(dataset_uri: str) -> list[ManifestLine]:
    """The version's validation records labeled by people."""
    lines = read_manifest(storage.join(dataset_uri.rstrip("/"), "manifest.jsonl"))
    return [line for line in lines if line.data.get(SPLIT_KEY) == "val"
            and (line.data.get(SOURCE_KEY) or {}).get("kind") not in MODEL_KINDS]


def fit_bundle_visibility(bundle_uri: str, dataset_uri: str, settings: Settings,
                          cache_dir: str | Path | None = None) -> VisibilityFit | None:
    """Fit the thresholds of the bundle at ``bundle_uri`` on the version's validation split and write them into
    its ``bundle.json``; ``None`` (the bundle unchanged) when the version has no validation records."""
    from inference.engine import InferenceEngine
    from inference.runner import predict_manifest

    truth = validation_lines(dataset_uri)
    if not truth:
        log.info("visibility thresholds: %s has no validation records labeled by people; configured ones kept",
                 dataset_uri)
        return None
    kp_attr = settings.labeling.keypoint_label_attribute
    inputs = [line.without(*settings.labeling.label_keys) for line in truth]
    with contextlib.ExitStack() as stack:
        cache = Path(cache_dir) if cache_dir is not None else Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="alp-visfit-")))
        loaded = load_bundle(bundle_uri, cache)
        with InferenceEngine(loaded, settings) as engine:
            predicted = list(predict_manifest(inputs, engine, settings))
    names = list(loaded.descriptor.keypoint_names)
    inf = settings.inference
    fit = fit_thresholds(collect_samples(truth, predicted, names, kp_attr), (inf.main_threshold,
                                                                              inf.additional_threshold))
    desc_uri = storage.join(bundle_uri.rstrip("/"), DESCRIPTOR_NAME)
    descriptor = parse_descriptor(storage.read_text(desc_uri))
    descriptor.visibility_thresholds = fit.thresholds
    descriptor.training = {**descriptor.training, "visibility_fit": fit.summary()}
    storage.write_text(desc_uri, descriptor.to_json(), content_type="application/json")
    log.info("visibility thresholds fitted on %d validation images: accuracy %s -> %s", len(truth),
             fit.accuracy_configured, fit.accuracy_fitted)
    return fit
