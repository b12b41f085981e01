"""Evaluate a bundle on the frozen test split and gate it against the champion.

The production inference engine (``inference/``: ONNX, the same decoding and visibility rule as the
labeling step) predicts every ``test`` image of the dataset version; :func:`alp.metrics.evaluate_manifests`
scores the predictions against the labels. The champion (the newest Approved bundle) is re-evaluated on
the same images, so both numbers come from one test set; when it cannot be (its schema differs, its
files fail their hash check) the metrics recorded in the registry are used and the report says so.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from alp import registry, storage
from alp.bundle import (
    DESCRIPTOR_NAME,
    BundleDescriptor,
    BundleError,
    LoadedBundle,
    load_bundle,
    parse_descriptor,
)
from alp.datasets import MODEL_KINDS, SOURCE_KEY
from alp.manifest import ManifestLine, read_manifest
from alp.pixels import describe_problems, verify_lines
from alp.settings import Settings
from training.gate import GateDecision, gate
from training.prepare import SPLIT_KEY

log = logging.getLogger(__name__)

REPORT_FORMAT = 1


class EvaluationError(ValueError):
    """The bundle cannot be evaluated on this dataset version."""


def frozen_test_lines(dataset_uri: str) -> list[ManifestLine]:
    """The version's test records labeled by people. Auto labels are left out (versions merged before the
    split kept them out of the test share may hold some): scoring against them would reward a challenger
    for repeating the champion's predictions."""
    lines = read_manifest(storage.join(dataset_uri.rstrip("/"), "manifest.jsonl"))
    test = [line for line in lines if line.data.get(SPLIT_KEY) == "test"
            and (line.data.get(SOURCE_KEY) or {}).get("kind") not in MODEL_KINDS]
    if not test:
        raise EvaluationError(f"dataset {dataset_uri} has no test images labeled by people ({SPLIT_KEY} == 'test')")
    # The same bytes uploaded under two keys are two records naming one pinned copy: the image is scored once
    # (the first record's labels), or the metrics would see one image described twice.
    unique: dict[str, ManifestLine] = {}
    for line in test:
        unique.setdefault(line.source_ref, line)
    if len(unique) < len(test):
        log.warning("evaluate: %d test records of %s name an image another test record names (the same bytes "
                    "under two keys); each image is scored once", len(test) - len(unique), dataset_uri)
    return list(unique.values())


def check_test_pixels(truth: Sequence[ManifestLine], dataset_uri: str) -> None:
    """Refuse the evaluation when a test image is not the one its labels were made on: a gate decided on other
    pixels would judge the challenger against labels that no longer describe its input. Images of a version
    written before pixels were pinned cannot be checked: accepted, with a warning."""
    report = verify_lines(truth)
    if report.changed or report.missing:
        raise EvaluationError(
            f"dataset {dataset_uri}: {len(report.changed)} test image(s) changed and {len(report.missing)} missing "
            f"since they were labeled; refusing to evaluate on other pixels ({describe_problems(report)})")
    if report.unpinned:
        log.warning("evaluate: %d test image(s) of %s have no pinned sha256 (a version written before pixels were "
                    "pinned): read unchecked", len(report.unpinned), dataset_uri)


# AP integrates the whole precision-recall curve, so evaluation scores every detection down to this
# confidence (as COCO and ultralytics' val do); the operating threshold would cut the curve off and report
# 0.0 for a young model whose detections are right but not yet confident.
EVALUATION_CONF_THRESHOLD = 0.001


def evaluate_loaded(bundle: LoadedBundle, truth: Sequence[ManifestLine], settings: Settings) -> dict[str, Any]:
    """Metrics of a verified bundle on ``truth`` (the inference engine predicts, alp.metrics scores)."""
    from alp.metrics import evaluate_manifests
    from inference.engine import InferenceEngine
    from inference.onnx_models import MAX_DETECTIONS
    from inference.runner import predict_manifest

    settings = settings.with_overrides({"inference.box_conf_threshold": EVALUATION_CONF_THRESHOLD,
                                        "inference.max_detections": MAX_DETECTIONS})

    # Strip the truth first: a line the engine cannot read must not pass its true labels on as predictions.
    inputs = [line.without(*settings.labeling.label_keys) for line in truth]
    with InferenceEngine(bundle, settings) as engine:
        preds = list(predict_manifest(inputs, engine, settings))
    # Lines go in as objects: at the evaluation threshold a young model's prediction line can exceed the
    # 100 KB limit that applies to manifest lines read from files.
    metrics: dict[str, Any] = evaluate_manifests(
        list(truth), preds, settings.schema_,
        settings.labeling.head_label_attribute, settings.labeling.keypoint_label_attribute,
    )
    return metrics


class ChampionReport(BaseModel):
    """The champion a challenger was gated against, and where its metrics came from."""

    bundle_id: str | None = None
    bundle_uri: str | None = None
    dataset_version: str | None = None
    source: str
    warning: str | None = None  # why the champion could not be re-evaluated on this test split
    metrics: dict[str, Any] | None = None


class EvaluationReport(BaseModel):
    """``report.json``: the challenger's metrics on the frozen test split, the champion's, and the gate.

    Written by the Evaluate step (:func:`write_evaluation_report`) and read by the Register step, the demo's
    rounds and ``alp evaluate-bundle`` (:func:`read_evaluation_report`). ``metrics`` is
    :func:`alp.metrics.evaluate_manifests`' result as it stands.
    """

    format: int = REPORT_FORMAT
    created_at: str
    bundle_uri: str
    bundle_id: str
    dataset_uri: str
    dataset_version: str | None = None
    test_images: int
    metrics: dict[str, Any]
    champion: ChampionReport
    gate: GateDecision
    plot_uri: str | None = None

    @property
    def approved(self) -> bool:
        return self.gate.approved

    def to_json(self, *, indent: int | None = 2) -> str:
        # default=str: a metric value that is not plain JSON is written as text rather than failing the step
        return json.dumps(self.model_dump(mode="python"), indent=indent, default=str)

    @classmethod
    def parse(cls, text: str, *, source: str = "the report") -> EvaluationReport:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise EvaluationError(f"{source} is not an evaluation report with a gate decision ({exc.error_count()} "
                                  "problem(s)): run `alp evaluate-bundle --report` first") from None


def write_evaluation_report(uri: str, report: EvaluationReport) -> str:
    """Write ``report`` as ``report.json`` at ``uri``; returns the URI."""
    return storage.write_text(uri, report.to_json(), content_type="application/json")


def read_evaluation_report(uri: str) -> EvaluationReport:
    """The report :func:`write_evaluation_report` wrote at ``uri``."""
    return EvaluationReport.parse(storage.read_text(uri), source=uri)


def _champion_metrics(settings: Settings, challenger_id: str, truth: list[ManifestLine],
                      cache_dir: Path) -> ChampionReport:
    champion = registry.latest_approved(settings)
    if champion is None:
        return ChampionReport(source="none (cold start)")
    if champion.bundle_id == challenger_id:
        raise EvaluationError(f"bundle {challenger_id} is already the approved champion")
    known = ChampionReport(bundle_id=champion.bundle_id, bundle_uri=champion.bundle_uri,
                           dataset_version=champion.dataset_version, source="re-evaluated on this test split")
    try:
        loaded = registry.verify_registered(champion, cache_dir / "champion")
        return known.model_copy(update={"metrics": evaluate_loaded(loaded, truth, settings)})
    except (BundleError, storage.StorageError) as exc:
        return known.model_copy(update={"source": "registry (could not re-evaluate)", "warning": str(exc)[:500],
                                        "metrics": dict(champion.metrics)})


@dataclass(frozen=True)
class PlotPoint:
    """One bundle on the metrics plot."""

    label: str
    status: str  # Approved, Rejected, or challenger
    metrics: Mapping[str, Any]


def metrics_plot_png(history: Sequence[PlotPoint], headline: tuple[str, ...]) -> bytes:
    """A PNG of the headline metrics across registered bundles plus this challenger."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(history) + 2), 3.6), dpi=100)
    xs = list(range(len(history)))
    for name in headline:
        ys = [h.metrics.get(name) for h in history]
        ax.plot(xs, [float("nan") if y is None else y for y in ys], marker="o", label=name)
    for x, h in zip(xs, history, strict=True):
        color = {"Approved": "tab:green", "Rejected": "tab:red"}.get(h.status, "tab:blue")
        ax.axvline(x, color=color, alpha=0.15, linewidth=8)
    ax.set_xticks(xs, [h.label for h in history], rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("metric on the test split")
    ax.set_title("Bundles (green approved, red rejected, blue this challenger)", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _measure(bundle_uri: str, dataset_uri: str, settings: Settings,
             cache_dir: str | Path | None) -> tuple[BundleDescriptor, int, dict[str, Any], ChampionReport]:
    """The challenger's descriptor, the test images, and both bundles' metrics on them."""
    with contextlib.ExitStack() as stack:
        cache = Path(cache_dir) if cache_dir is not None else Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="alp-eval-")))
        truth = frozen_test_lines(dataset_uri)
        check_test_pixels(truth, dataset_uri)
        loaded = load_bundle(bundle_uri, cache / "challenger")
        metrics = evaluate_loaded(loaded, truth, settings)
        champion = _champion_metrics(settings, loaded.descriptor.bundle_id, truth, cache)
    return loaded.descriptor, len(truth), metrics, champion


def _record_metrics_in_descriptor(bundle_uri: str, metrics: Mapping[str, Any]) -> None:
    """The metrics in the bundle itself (registration hashes bundle.json afterwards)."""
    desc_uri = storage.join(bundle_uri.rstrip("/"), DESCRIPTOR_NAME)
    current = parse_descriptor(storage.read_text(desc_uri))
    current.metrics = {k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool)}
    storage.write_text(desc_uri, current.to_json(), content_type="application/json")


def _plot_beside(report_uri: str) -> str:
    return (report_uri[: -len(".json")] if report_uri.endswith(".json") else report_uri) + ".png"


def _write_plot(plot_uri: str, report: EvaluationReport, settings: Settings) -> None:
    """The headline metrics of every registered bundle and of this challenger, as a PNG."""
    history = [PlotPoint(b.dataset_version or b.bundle_id, b.status, b.metrics)
               for b in reversed(registry.list_bundles(settings))]
    history.append(PlotPoint(f"{report.dataset_version or report.bundle_id} (new)", "challenger", report.metrics))
    png = metrics_plot_png(history, tuple(settings.training.gate_metrics))
    storage.write_bytes(plot_uri, png, content_type="image/png")


def evaluate_and_gate(bundle_uri: str, dataset_uri: str, settings: Settings, *, report_uri: str | None = None,
                      plot_uri: str | None = None, cache_dir: str | Path | None = None,
                      update_descriptor: bool = True) -> EvaluationReport:
    """Evaluate ``bundle_uri`` on the version's test split, gate it, write the report (and PNG).

    Args:
        report_uri: where to write ``report.json`` (:func:`write_evaluation_report`); None writes none.
        plot_uri: the metrics PNG; default beside the report.
        cache_dir: where the bundles are unpacked; default a temp folder, removed after.
        update_descriptor: record the metrics in the bundle's ``bundle.json`` too.
    """
    desc, test_images, metrics, champion = _measure(bundle_uri, dataset_uri, settings, cache_dir)
    decision = gate(metrics, champion.metrics, settings.training.gate_tolerance,
                    tuple(settings.training.gate_metrics))
    if report_uri and not plot_uri:
        plot_uri = _plot_beside(report_uri)
    report = EvaluationReport(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"), bundle_uri=bundle_uri,
        bundle_id=desc.bundle_id, dataset_uri=dataset_uri, dataset_version=desc.dataset_version,
        test_images=test_images, metrics=metrics, champion=champion, gate=decision,
        plot_uri=plot_uri if report_uri else None)
    if update_descriptor:
        _record_metrics_in_descriptor(bundle_uri, metrics)
    if report_uri:
        write_evaluation_report(report_uri, report)
    if plot_uri:
        _write_plot(plot_uri, report, settings)
    return report
