"""``alp synth-data``: synthetic in-cabin images with exact truth, written as a Ground Truth manifest."""

from __future__ import annotations

import argparse
import json


def _synth(args: argparse.Namespace) -> int:
    from alp import storage
    from alp.settings import load_settings
    from alp.synth import generate_dataset

    settings = load_settings()
    manifest = generate_dataset(args.out, args.n, args.seed, hard_share=args.hard_share,
                                size=(args.width, args.height), settings=settings,
                                progress=not args.quiet, preview=args.preview)
    out = {"manifest": manifest, "images": args.n, "seed": args.seed}
    if args.preview:
        out["preview"] = storage.join(args.out, "preview.png")
    print(json.dumps(out))
    return 0


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "synth-data", help="generate synthetic in-cabin images with exact head boxes, keypoints and visibility"
    )
    parser.add_argument("--n", type=_positive, required=True, help="number of images")
    parser.add_argument("--seed", type=_seed, default=0, help="same seed, same bytes (default 0)")
    parser.add_argument("--out", required=True, help="output folder or s3://bucket/prefix")
    parser.add_argument("--hard-share", type=_fraction, default=0.3,
                        help="share of hard scenes: small heads, occlusion, out of frame, dark, blur (default 0.3)")
    parser.add_argument("--width", type=_positive, default=640)
    parser.add_argument("--height", type=_positive, default=480)
    parser.add_argument("--preview", action="store_true", help="also write preview.png with the truth drawn")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_synth)
