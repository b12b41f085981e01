"""``alp demo``: the whole active-learning loop on one machine (moto as AWS, a simulated workforce)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from alp.demo.runner import DemoOptions, run_demo_cli
    from alp.demo.state import DemoConfig

    overrides = {k: v for k, v in {
        "rounds": args.rounds, "pool": args.pool, "imgsz": args.imgsz, "epochs": args.epochs,
        "test_images": args.test_images, "seed_images": args.seed_images, "batch_images": args.batch_images,
        "width": args.width, "height": args.height, "seed": args.seed, "batch": args.batch,
        "human_share": args.human_share,
    }.items() if v is not None}
    config = DemoConfig(**overrides)
    options = DemoOptions(run_dir=Path(args.run_dir), fresh=args.fresh, config=config,
                          progress=not args.no_progress, threads=args.threads, workforce=args.workforce,
                          studio_port=args.studio_port,
                          studio_file=Path(args.studio_file).resolve() if args.studio_file else None)
    return run_demo_cli(options)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from alp.demo.state import DemoConfig

    def default(name: str) -> object:  # the help shows the config's own defaults, so the two never drift apart
        return DemoConfig.model_fields[name].default

    parser = subparsers.add_parser(
        "demo", help="run the whole active-learning loop locally (moto as AWS, simulated workforce)",
        description=(
            "Start moto on 127.0.0.1 as the embedded AWS with the stack's resources, generate a synthetic "
            "in-cabin pool and a frozen test set, label a random seed set, train/evaluate/register, then run "
            "upload -> EventBridge -> SQS -> batcher -> labeling pipeline -> training pipeline rounds and "
            "write a report. Re-running resumes; --fresh starts over. Everything goes under --run-dir."
        ),
    )
    parser.add_argument("--run-dir", default="demo-run", help="run folder (default ./demo-run)")
    parser.add_argument("--fresh", action="store_true", help="delete the run folder first and start over")
    parser.add_argument("--rounds", type=int, help=f"rounds after the cold start (default {default('rounds')})")
    parser.add_argument("--pool", type=int, help=f"synthetic pool size (default {default('pool')})")
    parser.add_argument("--imgsz", type=int, help=f"training/inference size, a multiple of 32 (default {default('imgsz')})")
    parser.add_argument("--epochs", type=int, help=f"epochs per model per round (default {default('epochs')})")
    parser.add_argument("--test-images", type=int, help=f"frozen test set size (default {default('test_images')})")
    parser.add_argument("--seed-images", type=int, help=f"round 0: random images labeled by people (default {default('seed_images')})")
    parser.add_argument("--batch-images", type=int, help="images uploaded per round (default: pool split evenly)")
    parser.add_argument("--width", type=int, help=f"synthetic image width (default {default('width')})")
    parser.add_argument("--height", type=int, help=f"synthetic image height (default {default('height')})")
    parser.add_argument("--batch", type=int, help=f"training batch size (default {default('batch')})")
    parser.add_argument("--seed", type=int, help=f"random seed of the pool and the seed set (default {default('seed')})")
    parser.add_argument("--human-share", type=float,
                        help="a fixed human budget per round as a share of the batch (e.g. 0.5): the images the "
                             "judgement is least sure of go to people, those its thresholds passed are auto-labeled, "
                             "and those it doubts beyond the budget wait for the next round (deferred); no separate "
                             "audit sample then; default 0 = the judgement thresholds alone")
    parser.add_argument("--threads", type=int, default=None, help="threads for training (torch) and inference (onnxruntime); default: every core")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--workforce", choices=("simulated", "studio"), default="simulated",
                        help="who labels: the simulated workforce (default), or people in a real Label Studio this "
                             "run starts on 127.0.0.1 (each round waits for them; use a small --pool, e.g. 40)")
    parser.add_argument("--studio-port", type=int, default=8080, help="--workforce studio: Label Studio's port")
    parser.add_argument("--studio-file", help="--workforce studio: the studio.json of a Label Studio already running "
                                              "(alp studio up) instead of one the run starts and stops")
    parser.set_defaults(func=_demo)
