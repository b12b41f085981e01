"""``alp evaluate``: head-box AP, OKS keypoint AP and visibility accuracy of predictions against truth.

Inputs are manifests (JSON Lines) or COCO keypoint JSON (ground truth + detections list), told apart
by content.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def _summary(result: dict[str, Any]) -> str:
    def fmt(x: Any) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    return (f"images {result['images']}  persons {result['persons']}  predictions {result['predictions']}  "
            f"unmatched {result['unmatched']}\n"
            f"box mAP50 {fmt(result['box_map50'])}  kpt OKS mAP50 {fmt(result['kpt_oks_map50'])}  "
            f"kpt OKS mAP {fmt(result['kpt_oks_map'])}  visibility accuracy {fmt(result['visibility_accuracy'])}")


def _evaluate(args: argparse.Namespace) -> int:
    from alp.coco import evaluate_files
    from alp.settings import load_settings

    settings = load_settings()
    result = evaluate_files(args.truth, args.pred, args.schema,
                            head_attr=settings.labeling.head_label_attribute,
                            kp_attr=settings.labeling.keypoint_label_attribute)
    print(json.dumps(result, sort_keys=True) if args.json else _summary(result))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("evaluate", help="box AP, OKS AP and visibility accuracy (pycocotools-exact)")
    parser.add_argument("--truth", required=True, help="truth manifest or COCO ground-truth JSON (path or s3://)")
    parser.add_argument("--pred", required=True, help="prediction manifest or COCO detections JSON")
    parser.add_argument("--schema", choices=["incabin17", "coco17"], default=None,
                        help="keypoint schema (default: the truth's)")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    parser.set_defaults(func=_evaluate)
