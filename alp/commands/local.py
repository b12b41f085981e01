"""``alp local``: a project on this machine from a folder of your own frames.

``up`` imports the frames, starts the project's runner (the deployed pipeline's steps against an embedded AWS)
and Label Studio, and returns with the URL once the first tasks are ready, prefilled by a zero-shot model until
the project has a champion of its own. Rounds advance as people finish their tasks. ``add`` imports more frames,
``status`` says where everything stands, ``export`` writes a dataset version as COCO or YOLO, ``down`` stops it
all; ``up`` again resumes where it was.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alp.commands import tcp_port

if TYPE_CHECKING:
    from alp.local.project import ProjectPaths
    from alp.settings import Settings


def _say(message: str) -> None:
    print(f"alp local: {message}", file=sys.stderr, flush=True)


def _print_import(report: Any) -> None:
    reasons = f" ({', '.join(f'{k} {v}' for k, v in report.reasons.items())})" if report.reasons else ""
    _say(f"{report.files} files: {report.imported} imported, {report.duplicate} duplicate, {report.quarantined} "
         f"quarantined{reasons}")
    for o in report.outcomes:
        if o.state == "quarantined":
            _say(f"  quarantined {o.path}: {o.reason}" + (f" ({o.detail})" if o.detail else ""))


def _up(args: argparse.Namespace) -> int:
    from alp.local.importer import import_folder
    from alp.local.lifecycle import (
        open_project,
        project_context,
        project_settings,
        runner_running,
        start_runner,
        wait_until_ready,
    )
    from alp.local.project import LocalConfig, read_config

    # what is asked of a project is checked before one is created
    if args.images and not Path(args.images).is_dir():
        raise FileNotFoundError(f"no such folder: {args.images}: give --images a folder of frames")
    if args.labels and not Path(args.labels).is_file():
        raise FileNotFoundError(f"no such file: {args.labels}: give --labels a COCO keypoints JSON file")
    paths, settings = project_context(Path(args.project_dir))
    if not args.images and read_config(paths) is None:
        raise FileNotFoundError(f"no local project in {paths.root} yet: give --images a folder of frames to start one")
    requested = LocalConfig(keypoint_schema=args.schema, studio_port=args.port, first_round_images=args.first_round,
                            round_images=args.round_images, train_imgsz=args.train_imgsz, epochs=args.epochs)
    config = open_project(paths, requested)
    settings = project_settings(settings, config)
    if args.images:
        _print_import(import_folder(Path(args.images), paths, settings))
    running = runner_running(paths)
    if args.labels:
        _stage_labels(Path(args.labels), paths, settings, running=running is not None)
    if running is not None:
        _say(f"the project's runner is already running (pid {running.pid}): {running.activity}")
        record = running
    else:
        pid = start_runner(paths, settings)
        _say(f"runner started (pid {pid}); its log: {paths.runner_log}")
        record = wait_until_ready(paths, pid, timeout_seconds=args.timeout_seconds, say=_say)
    url = record.studio_url or f"http://127.0.0.1:{config.studio_port}"
    _say(f"log in to Label Studio as the user in {paths.studio / 'studio.json'} (password there, mode 0600)")
    print(json.dumps({"url": url, "project": str(paths.root), "activity": record.activity}, sort_keys=True)
          if args.json else url)
    return 0


def _stage_labels(coco_file: Path, paths: ProjectPaths, settings: Settings, *, running: bool) -> None:
    from alp.local.labels import stage_labels
    from alp.local.project import ProjectError, read_state, save_state

    if running:
        raise ProjectError(f"the project's runner is running: `alp local down --project-dir {paths.root}` first, "
                           "then `up --labels` again")
    state = read_state(paths)
    if state.seeded:
        raise ProjectError(f"{paths.root} started from a --labels file already; export, edit and start a new project "
                           "to start from other labels")
    staged = stage_labels(coco_file, paths, settings)
    taken = sorted(state.batched & set(staged.frames))
    if taken:
        raise ProjectError(f"{len(taken)} frame(s) of {coco_file.name} went to a round already ({', '.join(taken[:3])})")
    state.seeded = staged.frames
    save_state(paths, state)
    _say(f"{coco_file.name}: {staged.images} labeled image(s), {staged.persons} person(s) (without a head box: "
         f"{staged.persons_without_head}): the first dataset version, as people's labels")


def _run(args: argparse.Namespace) -> int:
    from alp.local.lifecycle import project_context, run_foreground

    paths, settings = project_context(Path(args.project_dir))
    run_foreground(paths, settings, say=_say)
    return 0


def _down(args: argparse.Namespace) -> int:
    from alp.local.lifecycle import project_context, stop_runner
    from alp.studio.server import stop_server

    paths, _ = project_context(Path(args.project_dir))
    runner = stop_runner(paths, timeout_seconds=args.timeout_seconds)
    studio = stop_server(paths.studio)
    _say(f"runner {'stopped' if runner else 'was not running'}, Label Studio {'stopped' if studio else 'was not running'}"
         f" ({paths.root}); `alp local up --project-dir {args.project_dir}` resumes")
    return 0


def _add(args: argparse.Namespace) -> int:
    from alp.local.importer import import_folder, report_json
    from alp.local.lifecycle import project_context

    paths, settings = project_context(Path(args.project_dir))
    report = import_folder(Path(args.images), paths, settings)
    if args.json:
        print(report_json(report))
        return 0
    _print_import(report)
    print(paths.imports)
    return 0


def _status(args: argparse.Namespace) -> int:
    from alp.local.lifecycle import project_context, project_status

    paths, _ = project_context(Path(args.project_dir))
    if not paths.imports.is_dir() and not paths.config_file.is_file():
        raise FileNotFoundError(f"no local project in {paths.root}: `alp local up --images DIR --project-dir "
                                f"{args.project_dir}` creates one")
    status = project_status(paths)
    if args.json:
        print(json.dumps(status, sort_keys=True))
        return 0
    files, images = status["files"], status["images"]
    print(f"project {status['project']}")
    print(f"  files: {files['files']} in {files['imports']} import(s): {files['imported']} imported, "
          f"{files['duplicate']} duplicate, {files['quarantined']} quarantined {files['reasons'] or ''}".rstrip())
    print("  images: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in images.items()))
    for r in status["rounds"]:
        print(f"  round {r['round']}: {r['frames']} frames, {r['phase']}, routes {r['routes']}, proposals by "
              f"{r['bundle'] or '-'}" + (f", dataset {r['dataset_version']}, candidate {r['candidate']} "
                                         f"{'approved' if r['approved'] else 'rejected'}" if r['candidate'] else ""))
    champion = status["champion"]
    print(f"  champion: {champion['bundle_id']} (round {champion['round']}, gate {champion['gate']})" if champion
          else "  champion: none yet (proposals come from the zero-shot model)")
    print(f"  runner: {status['runner']['activity']}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from alp import storage
    from alp.coco import manifest_to_coco
    from alp.datasets import datasets_dir, image_key, list_versions, read_version
    from alp.local.lifecycle import project_buckets, project_context

    paths, settings = project_context(Path(args.project_dir))
    with project_buckets(paths, settings) as names:
        data_root = names.data_root
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
        name = storage.basename(version.rstrip("/"))
        if args.format == "coco":
            lines = read_version(version)
            coco = manifest_to_coco(lines, settings.schema_, settings.labeling.head_label_attribute,
                                    settings.labeling.keypoint_label_attribute, heads_as_category=True)
            _local_file_names(coco, paths, {line.source_ref: image_key(line) for line in lines})
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(coco))
            summary: dict[str, Any] = {"format": "coco", "version": name, "out": str(out),
                                       "images": len(coco["images"]), "annotations": len(coco["annotations"])}
        else:
            from training.prepare import prepare_training

            prepared = prepare_training(version, str(out), settings)
            summary = {"format": "yolo", "version": name, "out": str(out), "images": prepared.counts,
                       "skipped": len(prepared.skipped)}
    print(json.dumps(summary, sort_keys=True) if args.json else f"alp local: exported {name} as {args.format} to {out}")
    return 0


def _local_file_names(coco: dict[str, Any], paths: ProjectPaths, keys: dict[str, str]) -> None:
    """Each image's ``file_name`` relative to the project's frames folder (the imported path, folders kept), and
    ``alp_source_ref`` the frame on disk: the embedded bucket that held it is gone after the export. ``keys``: each
    line's upload key by its ``source-ref`` (a version's line names its pinned copy, whose name is a hash)."""
    prefix = paths.unlabeled_prefix
    for image in coco["images"]:
        key = keys.get(str(image.get("alp_source_ref", "")))
        if key is not None and key.startswith(prefix):
            name = key.removeprefix(prefix)
            image["file_name"] = name
            image["alp_source_ref"] = str(paths.incoming / name)



def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("local", help="a project on this machine from your own frames",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="local_command", metavar="SUBCOMMAND", required=True)

    def project_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--project-dir", default="alp-project", help="the project folder (default ./alp-project)")

    up = sub.add_parser("up", help="import frames, start Label Studio and the runner, print the URL when tasks are "
                                   "ready")
    up.add_argument("--images", help="folder of frames to import (walked recursively); optional on a restart")
    up.add_argument("--labels", help="COCO keypoints JSON of existing labels: the first dataset version")
    up.add_argument("--schema", choices=("incabin17", "coco17"), default="incabin17", help="keypoint schema of a new "
                                                                                          "project")
    up.add_argument("--port", type=tcp_port, default=8080, help="Label Studio's port on 127.0.0.1 (default 8080)")
    up.add_argument("--first-round", type=int, default=20, help="frames in round 0 (default 20)")
    up.add_argument("--round-images", type=int, default=50, help="frames per later round (default 50)")
    up.add_argument("--train-imgsz", type=int, default=320, help="training image size of a new project (default 320)")
    up.add_argument("--epochs", type=int, default=20, help="training epochs per round of a new project (default 20)")
    up.add_argument("--timeout-seconds", type=float, default=900.0, help="how long to wait for the first tasks")
    up.add_argument("--json", action="store_true", help="the URL and the project as one line of JSON")
    project_dir(up)
    up.set_defaults(func=_up)
    run = sub.add_parser("run", help="the project's runner in the foreground (what `up` starts in the background)")
    project_dir(run)
    run.set_defaults(func=_run)
    down = sub.add_parser("down", help="stop the runner and Label Studio; `up` resumes")
    down.add_argument("--timeout-seconds", type=float, default=60.0, help="how long the runner may take to stop")
    project_dir(down)
    down.set_defaults(func=_down)
    add = sub.add_parser("add", help="import a folder of frames: each file imported, duplicate or quarantined")
    add.add_argument("--images", required=True, help="folder of frames (walked recursively)")
    add.add_argument("--json", action="store_true", help="the counts as one line of JSON")
    project_dir(add)
    add.set_defaults(func=_add)
    status = sub.add_parser("status", help="files, images, rounds, the champion and the runner")
    status.add_argument("--json", action="store_true")
    project_dir(status)
    status.set_defaults(func=_status)
    export = sub.add_parser("export", help="a dataset version as COCO keypoints JSON or YOLO datasets")
    export.add_argument("--format", choices=("coco", "yolo"), required=True)
    export.add_argument("--out", required=True, help="the COCO JSON file, or the YOLO folder")
    export.add_argument("--version", help="vNNNN (default: the latest)")
    export.add_argument("--json", action="store_true")
    project_dir(export)
    export.set_defaults(func=_export)
