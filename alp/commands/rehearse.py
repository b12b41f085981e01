"""``alp rehearse``: run the synthesized stack under its own IAM before anyone's first ``cdk deploy``."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def _rehearse(args: argparse.Namespace) -> int:
    from alp.rehearsal.run import run_rehearsal

    variants = tuple(args.variant) if args.variant else None
    cdk_out = Path(args.cdk_out).resolve() if args.cdk_out else None
    if cdk_out is not None and not (cdk_out / "manifest.json").is_file():
        raise ValueError(f"--cdk-out {cdk_out} is not a cdk.out folder (no manifest.json); run `make synth`")
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="alp-rehearsal-"))
    result = run_rehearsal(work.resolve(), variants=variants, cdk_out=cdk_out, rounds=args.rounds)
    report = json.dumps(result.as_json(), indent=1, sort_keys=True)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(report + "\n")
    if args.json:
        print(json.dumps(result.as_json(), sort_keys=True))
    else:
        for v in result.variants:
            print(f"{v.variant}: {'ok' if v.ok else 'FAILED'} ({sum(s.ok for s in v.steps)} steps ran, {v.seconds:.0f}s; "
                  f"denied: {len(v.denied)}; log {v.log})")
            for d in v.denied:
                print(f"  denied: {d}")
            if v.error:
                print(f"  error: {v.error}")
    if not result.ok:
        print("alp rehearse: the stack would fail in a real account (see above)", file=sys.stderr)
    return 0 if result.ok else 1


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "rehearse", help="run one short round on the synthesized stack, every step under its own role",
        description="Synthesize the stack (or read --cdk-out), create it in an embedded AWS on 127.0.0.1, and "
                    "run one cold-start round and one round with a model through both pipelines, Lambdas "
                    "included, each step with the credentials of the role the template gives it and IAM "
                    "enforced. Variants: the YOLO head detector, the Rekognition Custom Labels head detector "
                    "(answered by botocore's Stubber) and a batch large enough for SageMaker Processing. Exits "
                    "1 on any denied call, naming the step, the role, the action and the resource.")
    parser.add_argument("--cdk-out", help="a synthesized cdk.out folder to rehearse (default: synthesize now)")
    parser.add_argument("--variant", action="append", choices=("yolo", "rekognition", "processing"),
                        help="run only this variant (repeatable; default: all three, or those a --cdk-out stack can run)")
    parser.add_argument("--rounds", type=int, choices=(1, 2), default=2,
                        help="1: the cold start only; 2 (default): and a round with the trained model")
    parser.add_argument("--work-dir", help="folder for the images and the step logs (default: a new temp folder)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    parser.add_argument("--json-out", help="also write the JSON report to this file")
    parser.set_defaults(func=_rehearse)
