"""``alp prepare-training``: a dataset version -> the three YOLO datasets (head, pose main, pose visible).

The conversion is pure: one dataset version (by its manifest's content) and one set of settings give the same
prepared data. The output folder records the digest of those inputs (``inputs.json``, :mod:`alp.step_outputs`,
written after the conversion), and a run that finds a complete preparation of the same inputs returns it and
says so instead of converting again.
"""

from __future__ import annotations

import argparse
import json
import sys


def prepare_inputs(dataset_version: str, dataset_sha256: str, settings_sha256: str) -> dict[str, str]:
    """What prepared data is made from (pure). The whole settings, not only the sections the conversion reads
    today: a key that is too wide only converts again when an unrelated setting changed; a key that is too narrow
    would hand out data converted under other settings."""
    return {"dataset_version": dataset_version, "dataset_sha256": dataset_sha256, "settings_sha256": settings_sha256}


def _prepare(args: argparse.Namespace) -> int:
    from alp import step_outputs, storage
    from alp.settings import load_settings
    from alp.steps import TRAINING_PIPELINE
    from training.prepare import SUMMARY_NAME, PreparedSummary, dataset_version_of, prepare_training

    settings = load_settings()
    step = TRAINING_PIPELINE.step("Prepare").name
    version = dataset_version_of(args.dataset)
    inputs = prepare_inputs(version, step_outputs.content_sha256(storage.join(args.dataset.rstrip("/"),
                                                                               "manifest.jsonl")),
                            settings.sha256())
    stored = step_outputs.stored_output(args.out, step, step_outputs.digest(inputs))
    if stored is not None:
        print(f"prepare-training: reused the prepared data of dataset {version} at {args.out} "
              f"(inputs {stored.inputs_sha256[:12]}); nothing converted", file=sys.stderr)
        summary = PreparedSummary.model_validate_json(storage.read_text(storage.join(args.out, SUMMARY_NAME)))
    else:
        step_outputs.begin_output(args.out, step, inputs)
        summary = prepare_training(args.dataset, args.out, settings)
        step_outputs.finish_output(args.out, step, inputs)
    brief = {
        "dataset_version": summary.dataset_version,
        "out": args.out,
        "images": summary.counts,
        "instances": summary.instances,
        "test_images_held_out": summary.test_images_held_out,
        "val_from_train": summary.val_from_train,
        "skipped": len(summary.skipped),
        "reused": stored is not None,
    }
    print(json.dumps(brief, indent=None if args.json else 2))
    for item in summary.skipped[:20]:
        print(f"skipped {item.source_ref}: {item.reason}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("prepare-training", help="convert a dataset version into the three YOLO datasets")
    p.add_argument("--dataset", required=True, help="dataset version folder (datasets/vNNNN/), path or s3://")
    p.add_argument("--out", required=True, help="where the prepared data goes (path or s3:// prefix)")
    p.add_argument("--json", action="store_true", help="one-line JSON summary")
    p.set_defaults(func=_prepare)
