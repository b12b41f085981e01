"""A local project's life: create or reopen it, start its runner in the background, wait for the first tasks,
stop everything, and say where it stands.

``up`` returns once people have tasks (or nothing waits for them); the runner goes on in its own process
group, writing ``runner.log``. ``down`` stops it with SIGTERM (it finishes the copy of the AWS state under way
and exits; the step under way runs again on the next start), then the project's Label Studio.
"""

from __future__ import annotations

import subprocess  # nosec B404: the runner is this interpreter running alp, with arguments built here
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alp.local.project import (
    LocalConfig,
    ProjectError,
    ProjectPaths,
    read_config,
    read_state,
    write_json_atomically,
)
from alp.local.runner import (
    LocalRunner,
    RunnerRecord,
    pending_frames,
    read_runner,
    runner_environment,
)
from alp.processes import alive, stop_group
from alp.resources import ResourceNames
from alp.settings import Settings

READY_TIMEOUT_SECONDS = 900.0


def project_settings(base: Settings, config: LocalConfig) -> Settings:
    """What every step of the project reads: the user's settings with the local backends (people in the
    project's Label Studio, training on this machine) and the project's sizes."""
    return base.with_overrides({
        "keypoint_schema": config.keypoint_schema,
        "labeling.backend": "label-studio",
        "labeling.studio.hosted": False,
        "training.backend": "local",
        "training.imgsz": config.train_imgsz,
        "training.epochs": config.epochs,
        # The Evaluate step measures every candidate on the test split: ultralytics' per-epoch validation
        # would only slow each round.
        "training.validate_every_epoch": False,
        "trigger.batching_window_seconds": 0,
    })


def open_project(paths: ProjectPaths, requested: LocalConfig) -> LocalConfig:
    """The project's config: created from ``requested``, or the saved one (a different schema is refused: the
    labels made so far follow the saved one)."""
    saved = read_config(paths)
    if saved is None:
        paths.root.mkdir(parents=True, exist_ok=True)
        write_json_atomically(paths.config_file, requested.model_dump_json(indent=1))
        return requested
    if saved.keypoint_schema != requested.keypoint_schema:
        raise ProjectError(f"{paths.root} labels keypoints of schema {saved.keypoint_schema}, not "
                           f"{requested.keypoint_schema}: use another --project-dir for another schema")
    return saved


def runner_running(paths: ProjectPaths) -> RunnerRecord | None:
    record = read_runner(paths)
    return record if record is not None and alive(record.pid) else None


def start_runner(paths: ProjectPaths, settings: Settings) -> int:
    """The runner in the background, in its own session (a closed terminal does not stop it); returns its pid."""
    write_json_atomically(paths.settings_file, settings.to_json())
    argv = [sys.executable, "-m", "alp", "--settings", str(paths.settings_file), "local", "run",
            "--project-dir", str(paths.root)]
    with paths.runner_log.open("ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,  # nosec B603
                                   start_new_session=True, cwd=paths.root)
    write_json_atomically(paths.runner_file, RunnerRecord(pid=process.pid).model_dump_json(indent=1))
    return process.pid


def wait_until_ready(paths: ProjectPaths, pid: int, *, timeout_seconds: float = READY_TIMEOUT_SECONDS,
                     say: Callable[[str], None]) -> RunnerRecord:
    """Until the runner says people have tasks (or nothing waits for them); its activity lines on the way."""
    deadline = time.monotonic() + timeout_seconds
    last = ""
    while time.monotonic() < deadline:
        record = read_runner(paths)
        if record is not None and record.pid == pid:
            if record.activity != last:
                say(record.activity)
                last = record.activity
            if record.error:
                raise RuntimeError(f"the project's runner stopped: {record.error}; its log: {paths.runner_log}")
            if record.tasks_ready:
                return record
        if not alive(pid):
            raise RuntimeError(f"the project's runner exited while starting; the end of its log ({paths.runner_log}):"
                               f" {_log_tail(paths.runner_log)}")
        time.sleep(0.5)
    raise TimeoutError(f"the project's runner has no tasks ready after {timeout_seconds:.0f} s (it goes on); "
                       f"`alp local status` says what it does, {paths.runner_log} holds its log")


def _log_tail(path: Path, lines: int = 3) -> str:
    if not path.is_file():
        return "(no log)"
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])


def stop_runner(paths: ProjectPaths, *, timeout_seconds: float = 60.0) -> bool:
    """SIGTERM to the runner, SIGKILL after ``timeout_seconds``; False when none was running."""
    record = runner_running(paths)
    return record is not None and stop_group(record.pid, timeout_seconds=timeout_seconds)


def run_foreground(paths: ProjectPaths, settings: Settings, *, say: Callable[[str], None]) -> None:
    """The runner in this process until SIGTERM or Ctrl-C: the zero-shot bundle first (built once, verified each
    start), then the rounds."""
    from alp.machine.signals import sigterm_as_interrupt

    config = read_config(paths)
    if config is None:
        raise ProjectError(f"no local project in {paths.root}: `alp local up --images DIR --project-dir "
                           f"{paths.root}` creates one")
    stop = threading.Event()
    with sigterm_as_interrupt(), runner_environment(paths, settings):
        settings = with_zero_shot(paths, settings, config, say=say)
        write_json_atomically(paths.settings_file, settings.to_json())
        LocalRunner(paths, config, settings, say=say).run(stop)


def with_zero_shot(paths: ProjectPaths, settings: Settings, config: LocalConfig, *,
                   say: Callable[[str], None]) -> Settings:
    """The settings naming the project's zero-shot bundle (and the sha256 of its bundle.json), which proposes
    round 0's labels while there is no champion."""
    from alp.bundle import DESCRIPTOR_NAME, sha256_file
    from training.zero_shot import build_zero_shot_bundle

    say(f"zero-shot bundle for {config.keypoint_schema} at {config.zero_shot_imgsz} px (built once)")
    folder = build_zero_shot_bundle(paths.models / "zero-shot", settings.schema_, imgsz=config.zero_shot_imgsz,
                                    config_dir=paths.work / "ultralytics")
    return settings.with_overrides({"inference.zero_shot_bundle": str(folder),
                                    "inference.zero_shot_bundle_sha256": sha256_file(folder / DESCRIPTOR_NAME)})


def project_context(project_dir: Path) -> tuple[ProjectPaths, Settings]:
    """The project's paths and settings: its ``settings.json`` once it has one, else the settings this command
    read (a project not started yet)."""
    from alp.settings import load_settings, parse_settings

    settings = load_settings()
    paths = ProjectPaths.of(project_dir, settings)
    if paths.settings_file.is_file():
        settings = parse_settings(paths.settings_file.read_text())
        paths = ProjectPaths.of(project_dir, settings)
    return paths, settings


@contextmanager
def project_buckets(paths: ProjectPaths, settings: Settings) -> Iterator[ResourceNames]:
    """The project's buckets and registry, restored into a short-lived embedded AWS to read from (an export while
    the runner works, or after ``down``); the runner's own copy is never written."""
    from alp import aws
    from alp.local.runner import restore_frames
    from alp.machine import embedded

    if not (paths.mirror / embedded.REGISTRY_FILE).is_file():
        raise FileNotFoundError(f"no pipeline state in {paths.root} yet: `alp local up` runs the first round")
    server = embedded.EmbeddedAws.start()
    try:
        with embedded.aws_environment(server.endpoint, settings.region):
            names = ResourceNames.from_settings(settings, embedded.account_id())
            s3 = aws.client("s3")
            where = {} if settings.region == "us-east-1" else {
                "CreateBucketConfiguration": {"LocationConstraint": settings.region}}
            for bucket in embedded.mirrored_buckets(names):
                s3.create_bucket(Bucket=bucket, **where)
            embedded.restore_state(settings, names, paths.mirror)
            restore_frames(paths, names)
            yield names
    finally:
        server.stop()


def project_status(paths: ProjectPaths) -> dict[str, Any]:
    """Files, images, rounds, the champion and the runner, as one record."""
    from alp.local.importer import project_counts

    state = read_state(paths)
    images = {"auto_labeled": 0, "human_labeled": 0, "waiting_for_people": 0, "quarantined": 0, "queued": 0}
    for r in state.rounds:
        if not r.routes:
            continue
        people = r.routes.get("human", 0) + r.routes.get("audit", 0)
        images["quarantined"] += r.routes.get("quarantine", 0)
        if r.phase == "labeling":
            images["waiting_for_people"] += people
        else:
            images["auto_labeled"] += r.routes.get("auto", 0)
            images["human_labeled"] += people
    images["queued"] = len(pending_frames(paths, state)) + sum(len(r.frames) for r in state.rounds if not r.routes)
    champion = next((r for r in reversed(state.rounds) if r.approved), None)
    record = read_runner(paths)
    running_now = record is not None and alive(record.pid)
    if record is None:
        activity = "not running (`alp local up` starts it)"
    elif running_now:
        activity = record.activity
    else:  # stopped by `down`, a kill or an error: what it did last says which
        activity = f"not running (`alp local up` resumes); last: {record.activity}"
    return {
        "project": str(paths.root),
        "files": project_counts(paths),
        "images": images,
        "rounds": [{"round": r.round, "frames": len(r.frames), "phase": r.phase, "bundle": r.bundle,
                    "routes": r.routes, "dataset_version": r.dataset_version, "candidate": r.candidate_bundle_id,
                    "approved": r.approved} for r in state.rounds],
        "champion": None if champion is None else {"bundle_id": champion.candidate_bundle_id, "round": champion.round,
                                                   "dataset_version": champion.dataset_version,
                                                   "gate": champion.gate},
        "runner": {"running": running_now, "pid": record.pid if record is not None and running_now else None,
                   "activity": activity, "error": record.error if record is not None else None,
                   "studio_url": record.studio_url if record is not None and running_now else None},
    }
