"""``alp local``: a project on this machine from a folder of your own frames (import, status, export so far)."""

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


def _export(args: argparse.Namespace) -> int:
    from alp import storage
    from alp.coco import manifest_to_coco
    from alp.datasets import datasets_dir, list_versions, read_version
    from alp.local.project import ProjectPaths
    from alp.settings import load_settings

    settings = load_settings()
    paths = ProjectPaths.of(Path(args.project_dir), settings)
    data_root = str(paths.data) + "/"
    versions = list_versions(data_root, settings)
    if args.version:
        version = datasets_dir(data_root, settings) + args.version.strip("/") + "/"
        if version not in versions:
            raise FileNotFoundError(f"no dataset version {args.version} in {paths.root}: it has "
                                    f"{', '.join(storage.basename(v.rstrip('/')) for v in versions) or 'none yet'}")
    elif versions:
        version = versions[-1]
    else:
        raise FileNotFoundError(f"no dataset version in {paths.root} yet: people's labels of a first round make one")
    out = Path(args.out)
    if args.format == "coco":
        coco = manifest_to_coco(read_version(version), settings.schema_,
                                settings.labeling.head_label_attribute, settings.labeling.keypoint_label_attribute,
                                heads_as_category=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(coco))
        summary = {"format": "coco", "version": storage.basename(version.rstrip("/")), "out": str(out),
                   "images": len(coco["images"]), "annotations": len(coco["annotations"])}
    else:
        from training.prepare import prepare_training

        prepared = prepare_training(version, str(out), settings)
        summary = {"format": "yolo", "version": storage.basename(version.rstrip("/")), "out": str(out),
                   "images": prepared.counts, "skipped": len(prepared.skipped)}
    print(json.dumps(summary, sort_keys=True) if args.json else f"alp local: exported {summary['version']} as "
          f"{args.format} to {out}")
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
    export = sub.add_parser("export", help="a dataset version as COCO keypoints JSON or YOLO datasets")
    export.add_argument("--format", choices=("coco", "yolo"), required=True)
    export.add_argument("--out", required=True, help="the COCO JSON file, or the YOLO folder")
    export.add_argument("--version", help="vNNNN (default: the latest)")
    export.add_argument("--project-dir", default="alp-project")
    export.add_argument("--json", action="store_true")
    export.set_defaults(func=_export)
