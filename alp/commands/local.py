"""``alp local``: a project on this machine from a folder of your own frames (import and status so far)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _add(args: argparse.Namespace) -> int:
    from alp.local.importer import import_folder, report_json
    from alp.local.project import ProjectPaths
    from alp.settings import load_settings

    settings = load_settings()
    paths = ProjectPaths.of(Path(args.project_dir), settings)
    report = import_folder(Path(args.images), paths, settings)
    if args.json:
        print(report_json(report))
        return 0
    print(f"alp local: {report.files} files: {report.imported} imported, {report.duplicate} duplicate, "
          f"{report.quarantined} quarantined" + (f" ({', '.join(f'{k} {v}' for k, v in report.reasons.items())})"
                                                 if report.reasons else ""), file=sys.stderr)
    for o in report.outcomes:
        if o.state == "quarantined":
            print(f"  quarantined {o.path}: {o.reason}" + (f" ({o.detail})" if o.detail else ""), file=sys.stderr)
    print(paths.imports)
    return 0


def _status(args: argparse.Namespace) -> int:
    from alp.local.importer import project_counts
    from alp.local.project import ProjectPaths
    from alp.settings import load_settings

    paths = ProjectPaths.of(Path(args.project_dir), load_settings())
    if not paths.imports.is_dir():
        raise FileNotFoundError(f"no local project in {paths.root}: import frames with `alp local add --images DIR "
                                f"--project-dir {args.project_dir}` first")
    counts = project_counts(paths)
    if args.json:
        print(json.dumps(counts, sort_keys=True))
    else:
        print(f"project {paths.root}: {counts['files']} files in {counts['imports']} import(s): {counts['imported']} "
              f"imported, {counts['duplicate']} duplicate, {counts['quarantined']} quarantined {counts['reasons']}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("local", help="a project on this machine from your own frames")
    sub = parser.add_subparsers(dest="local_command", metavar="SUBCOMMAND", required=True)
    add = sub.add_parser("add", help="import a folder of frames: each file imported, duplicate or quarantined")
    add.add_argument("--images", required=True, help="folder of frames (walked recursively)")
    add.add_argument("--project-dir", default="alp-project", help="the project folder (default ./alp-project)")
    add.add_argument("--json", action="store_true", help="the counts as one line of JSON")
    add.set_defaults(func=_add)
    status = sub.add_parser("status", help="what the project's imports hold")
    status.add_argument("--project-dir", default="alp-project")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)
