"""Evaluate a bundle on the frozen test split and gate it against the champion.

The production inference engine (``inference/``: ONNX, the same decoding and visibility rule as the
labeling step) predicts every ``test`` image of the dataset version; :func:`alp.metrics.evaluate_manifests`
scores the predictions against the labels. The champion (the newest Approved bundle) is re-evaluated on
the same images, so both numbers come from one test set; when it cannot be (its schema differs, its
files fail their hash check) the metrics recorded in the registry are used and the report says so.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alp import registry, storage
from alp.bundle import DESCRIPTOR_NAME, BundleError, LoadedBundle, load_bundle, parse_descriptor
from alp.datasets import SOURCE_KEY
from alp.manifest import ManifestLine, read_manifest
from alp.settings import Settings
from training.gate import gate
from training.prepare import SPLIT_KEY

REPORT_FORMAT = 1


class EvaluationError(ValueError):
    """The bundle cannot be evaluated on this dataset version."""


def frozen_test_lines(dataset_uri: str) -> list[ManifestLine]:
    """The version's test records labeled by people. Auto labels are left out (versions merged before the
    split kept them out of the test share may hold some): scoring against them would reward a challenger
    for repeating the champion's predictions."""
    lines = read_manifest(storage.join(dataset_uri.rstrip("/"), "manifest.jsonl"))
    test = [line for line in lines if line.data.get(SPLIT_KEY) == "test"
            and (line.data.get(SOURCE_KEY) or {}).get("kind") != "auto"]
    if not test:
        raise EvaluationError(f"dataset {dataset_uri} has no test images labeled by people ({SPLIT_KEY} == 'test')")
    return test


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


def _champion_metrics(settings: Settings, challenger_id: str, truth: list[ManifestLine],
                      cache_dir: Path) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    champion = registry.latest_approved(settings)
    if champion is None:
        return None, {"bundle_id": None, "source": "none (cold start)"}
    info: dict[str, Any] = {"bundle_id": champion.bundle_id, "bundle_uri": champion.bundle_uri,
                            "dataset_version": champion.dataset_version}
    if champion.bundle_id == challenger_id:
        raise EvaluationError(f"bundle {challenger_id} is already the approved champion")
    try:
        loaded = registry.verify_registered(champion, cache_dir / "champion")
        metrics = evaluate_loaded(loaded, truth, settings)
        info["source"] = "re-evaluated on this test split"
        return metrics, info
    except (BundleError, storage.StorageError) as exc:
        info["source"] = "registry (could not re-evaluate)"
        info["warning"] = str(exc)[:500]
        return dict(champion.metrics), info


def metrics_plot_png(history: list[dict[str, Any]], headline: tuple[str, ...]) -> bytes:
    """A PNG of the headline metrics across registered bundles plus this challenger."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(history) + 2), 3.6), dpi=100)
    xs = list(range(len(history)))
    for name in headline:
        ys = [h["metrics"].get(name) for h in history]
        ax.plot(xs, [float("nan") if y is None else y for y in ys], marker="o", label=name)
    for x, h in zip(xs, history, strict=True):
        color = {"Approved": "tab:green", "Rejected": "tab:red"}.get(h["status"], "tab:blue")
        ax.axvline(x, color=color, alpha=0.15, linewidth=8)
    ax.set_xticks(xs, [h["label"] for h in history], rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("metric on the test split")
    ax.set_title("Bundles (green approved, red rejected, blue this challenger)", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def evaluate_and_gate(
    bundle_uri: str,
    dataset_uri: str,
    settings: Settings,
    *,
    report_uri: str | None = None,
    plot_uri: str | None = None,
    cache_dir: str | Path | None = None,
    update_descriptor: bool = True,
) -> dict[str, Any]:
    """Evaluate ``bundle_uri`` on the version's test split, gate it, write the report (and PNG)."""
    owned = cache_dir is None
    tmp = tempfile.TemporaryDirectory(prefix="alp-eval-") if owned else None
    cache = Path(tmp.name) if tmp else Path(cache_dir)  # type: ignore[arg-type]
    try:
        truth = frozen_test_lines(dataset_uri)
        loaded = load_bundle(bundle_uri, cache / "challenger")
        desc = loaded.descriptor
        metrics = evaluate_loaded(loaded, truth, settings)
        champion_metrics, champion_info = _champion_metrics(settings, desc.bundle_id, truth, cache)
    finally:
        if tmp:
            tmp.cleanup()
    headline = tuple(settings.training.gate_metrics)
    decision = gate(metrics, champion_metrics, settings.training.gate_tolerance, headline)
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "bundle_uri": bundle_uri,
        "bundle_id": desc.bundle_id,
        "dataset_uri": dataset_uri,
        "dataset_version": desc.dataset_version,
        "test_images": len(truth),
        "metrics": metrics,
        "champion": {**champion_info, "metrics": champion_metrics},
        "gate": decision.model_dump(mode="json"),
    }
    if update_descriptor:
        # Record the metrics in the bundle itself (registration hashes bundle.json afterwards).
        desc_uri = storage.join(bundle_uri.rstrip("/"), DESCRIPTOR_NAME)
        current = parse_descriptor(storage.read_text(desc_uri))
        current.metrics = {k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool)}
        storage.write_text(desc_uri, current.to_json(), content_type="application/json")
    if report_uri:
        plot_uri = plot_uri or (report_uri[: -len(".json")] + ".png" if report_uri.endswith(".json")
                                else report_uri + ".png")
        report["plot_uri"] = plot_uri
        storage.write_text(report_uri, json.dumps(report, indent=2, default=str), content_type="application/json")
    if plot_uri:
        history = [{"label": b.dataset_version or b.bundle_id, "status": b.status, "metrics": b.metrics}
                   for b in reversed(registry.list_bundles(settings))]
        history.append({"label": f"{desc.dataset_version or desc.bundle_id} (new)", "status": "challenger",
                        "metrics": metrics})
        storage.write_bytes(plot_uri, metrics_plot_png(history, headline), content_type="image/png")
    return report
