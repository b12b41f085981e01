"""The demo's seams to the other parts of the project (synthetic data, inference, metrics, outputs).

Each function is a thin call into the part that owns the logic; keeping them here keeps the round
orchestration readable and shows in one place which files of the pipeline the demo reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alp import storage
from alp.machine.pipeline import INFERENCE_DIR, ROUTE_FILES
from alp.manifest import ManifestLine, read_manifest_if_present
from alp.settings import Settings
from inference.budget import DEFERRED_FILE


def generate(out_dir: Path, n: int, seed: int, hard_share: float, size: tuple[int, int], progress: bool) -> str:
    """A synthetic in-cabin set with truth labels; returns its manifest path."""
    from alp.synth import generate_dataset

    return str(generate_dataset(str(out_dir), n, seed, hard_share=hard_share, size=size, progress=progress))


def deferred_images(batch_dir: str) -> list[str]:
    """Base names of the images a human budget sent back to the queue (``inference/deferred.jsonl``)."""
    return [storage.basename(line.source_ref)
            for line in read_manifest_if_present(storage.join(batch_dir, INFERENCE_DIR, DEFERRED_FILE))]


def unlabeled_count(batch_dir: str) -> int:
    """Images the batch's labeling jobs left unlabeled (``labeling/unlabeled.jsonl``)."""
    from alp.requeue import SOURCES

    return len(read_manifest_if_present(storage.join(batch_dir, SOURCES["unlabeled"])))


def requeue_counts(batch_dir: str) -> tuple[int, int]:
    """(sent back, quarantined instead) by the batch's Requeue step (``requeue/summary.json``)."""
    from alp.requeue import read_summary

    summary = read_summary(batch_dir)
    return (len(summary.requeued), sum(summary.quarantined.values())) if summary else (0, 0)


def latest_dataset(data_root: str) -> str:
    from alp.datasets import latest_version

    uri = latest_version(data_root)
    if not uri:
        raise RuntimeError(f"the merge step wrote no dataset version under {data_root}")
    return str(uri)


def audit_agreement(version_uri: str) -> float | None:
    """Share of audited images where the model's would-be labels fully agree with the people's."""
    from alp.datasets import read_automation_quality

    quality = read_automation_quality(version_uri)
    if quality is None or not quality.compared_items:
        return None
    return quality.images_fully_agree.share


def score_bundle(bundle_uri: str, truth_lines: Sequence[ManifestLine], settings: Settings,
                 cache_dir: Path) -> dict[str, float]:
    """The bundle's predictions on ``truth_lines``' images, scored against their labels (the same
    evaluation the training pipeline's Evaluate step runs)."""
    from alp.bundle import load_bundle
    from training.evaluate import evaluate_loaded

    result = evaluate_loaded(load_bundle(bundle_uri, cache_dir), truth_lines, settings)
    return {k: float(v) for k, v in result.items() if isinstance(v, int | float)}


def overlay_lines(batch_dir: str) -> tuple[list[tuple[ManifestLine, str]], list[tuple[ManifestLine, str]]]:
    """Auto-labeled and human-routed lines of a batch, each with a caption naming its route and reason."""
    base = storage.join(batch_dir, INFERENCE_DIR)
    auto: list[tuple[ManifestLine, str]] = []
    human: list[tuple[ManifestLine, str]] = []
    for line in read_manifest_if_present(storage.join(base, ROUTE_FILES["auto"])):
        auto.append((line, _caption(line, "auto")))
    for line in read_manifest_if_present(storage.join(base, ROUTE_FILES["human"])):
        human.append((line, _caption(line, "human")))
    return auto, human


def _caption(line: ManifestLine, default_route: str) -> str:
    route = line.route()
    pre = line.preannotation()
    name = storage.basename(line.source_ref)
    kind: str
    if route is not None:
        score = f" score {route.score:.2f}" if route.score is not None else ""
        reason = route.reason
        kind = route.route
    elif pre is not None:
        score, reason, kind = "", pre.reason, pre.route
    else:
        score, reason, kind = "", "", default_route
    reason = reason.split(";")[0][:70]
    return f"{name}: {kind}{score}\n{reason}"
