"""``alp quantize-bundle``: an int8 copy of an fp32 bundle, and (optionally) what it costs in accuracy."""

from __future__ import annotations

import argparse
import json
import tempfile
from typing import Any

METRICS = ("box_map50", "box_map", "kpt_oks_map50", "kpt_oks_map", "visibility_accuracy")


def _quantize(args: argparse.Namespace) -> int:
    from alp import storage
    from alp.bundle import load_bundle
    from alp.datasets import SPLIT_KEY
    from alp.manifest import ManifestLine
    from alp.settings import load_settings
    from training.evaluate import evaluate_loaded
    from training.quantize import quantize_bundle

    settings = load_settings()
    lines = [ManifestLine.parse(t) for t in storage.iter_lines(args.calibration)]
    # A dataset version's manifest carries each line's split: calibrate on training images only.
    images = [line.source_ref for line in lines if line.data.get(SPLIT_KEY, "train") == "train"]
    if args.compare_on:
        truth_refs = {ManifestLine.parse(t).source_ref for t in storage.iter_lines(args.compare_on)}
        overlap = truth_refs.intersection(images)
        if overlap:
            raise ValueError(f"{len(overlap)} calibration image(s) are also in --compare-on (e.g. "
                             f"{sorted(overlap)[0]}): calibrating on the evaluation set would flatter int8")
    with tempfile.TemporaryDirectory(prefix="alp-quantize-") as cache:
        desc = quantize_bundle(args.bundle, args.out, images, max_images=args.max_images, cache_dir=cache,
                               limits=settings.inference)
        result: dict[str, Any] = {"bundle_id": desc.bundle_id, "out": args.out,
                                  "calibration_images": desc.models["head"].calibration_images}
        if args.compare_on:
            truth = [ManifestLine.parse(t) for t in storage.iter_lines(args.compare_on)]
            for name, uri in (("fp32", args.bundle), ("int8", args.out)):
                metrics = evaluate_loaded(load_bundle(uri, cache), truth, settings)
                result[name] = {k: metrics.get(k) for k in METRICS}
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"wrote {result['bundle_id']} to {args.out} ({result['calibration_images']} calibration images)")
        if args.compare_on:
            for key in METRICS:
                a, b = result["fp32"][key], result["int8"][key]
                delta = f"{b - a:+.4f}" if a is not None and b is not None else "n/a"
                print(f"  {key:20s} fp32 {a}  int8 {b}  ({delta})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("quantize-bundle", help="int8 copy of an fp32 bundle (static, calibrated)")
    p.add_argument("--bundle", required=True, help="fp32 bundle folder or s3:// prefix (hash-checked)")
    p.add_argument("--calibration", required=True,
                   help="manifest whose images calibrate: training images (a dataset version's train split)")
    p.add_argument("--out", required=True, help="where the int8 bundle goes (folder or s3:// prefix)")
    p.add_argument("--max-images", type=int, default=64, help="calibration images used (default 64)")
    p.add_argument("--compare-on", help="truth manifest: evaluate fp32 and int8 on it and print both")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_quantize)
