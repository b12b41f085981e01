"""``alp prepare-training``: a dataset version -> the three YOLO datasets (head, pose main, pose visible)."""

from __future__ import annotations

import argparse
import json


def _prepare(args: argparse.Namespace) -> int:
    from alp.settings import load_settings
    from training.prepare import prepare_training

    settings = load_settings()
    summary = prepare_training(args.dataset, args.out, settings)
    brief = {
        "dataset_version": summary.dataset_version,
        "out": args.out,
        "images": summary.counts,
        "instances": summary.instances,
        "test_images_held_out": summary.test_images_held_out,
        "val_from_train": summary.val_from_train,
        "skipped": len(summary.skipped),
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
