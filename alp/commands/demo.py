"""``alp demo``: the whole active-learning loop on one machine (placeholder until the demo lands)."""

from __future__ import annotations

import argparse


def _demo(args: argparse.Namespace) -> int:
    print(
        "alp demo will: start moto on 127.0.0.1 as the embedded AWS; create the stack's buckets, queue, rule\n"
        "and model package groups; generate a synthetic in-cabin pool; label a seed set with the local\n"
        "workforce; train, evaluate and register; then run upload -> batch -> infer -> judge -> label ->\n"
        "merge -> train -> gate rounds and write a report. Not implemented yet (see the Demo issue)."
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("demo", help="run the whole active-learning loop locally")
    parser.set_defaults(func=_demo)
