"""``alp steps``: list and run the declared pipeline steps (what each CodeBuild action runs)."""

from __future__ import annotations

import argparse
import json

from alp.steps import PIPELINES, run_step, variables_from_env


def _list(args: argparse.Namespace) -> int:
    out = {
        name: [{"name": s.name, "argv": ["alp", *s.argv], "description": s.description} for s in spec.steps]
        for name, spec in PIPELINES.items()
    }
    print(json.dumps(out, indent=2))
    return 0


def _run(args: argparse.Namespace) -> int:
    spec = PIPELINES[args.pipeline]
    variables = {} if args.var else variables_from_env(spec)
    for item in args.var or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--var expects KEY=VALUE, got {item!r}")
        variables[key] = value
    return run_step(args.pipeline, args.step, variables)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("steps", help="list or run the declared pipeline steps")
    sub = parser.add_subparsers(dest="steps_command", metavar="ACTION", required=True)
    p_list = sub.add_parser("list", help="print the step declaration as JSON")
    p_list.set_defaults(func=_list)
    p_run = sub.add_parser("run", help="run one step (variables from the environment or --var)")
    p_run.add_argument("pipeline", choices=sorted(PIPELINES))
    p_run.add_argument("step")
    p_run.add_argument("--var", action="append", help="KEY=VALUE, e.g. batch_manifest=s3://... (repeatable)")
    p_run.set_defaults(func=_run)
