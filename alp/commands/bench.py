"""``alp bench <name>``: the benchmarks, discovered from ``alp/benches``."""

from __future__ import annotations

import argparse

from alp.cli import _discover


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("bench", help="benchmarks (print JSON, compare against a baseline in the same run)")
    sub = parser.add_subparsers(dest="bench", metavar="BENCH")
    _discover("alp.benches", sub)
    parser.set_defaults(func=lambda args: parser.print_help() or 0)
