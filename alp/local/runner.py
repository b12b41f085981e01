"""The local project's runner: the deployed pipeline's rounds on this machine, with people in Label Studio.

One process (``alp local run``, started in the background by ``alp local up``) holds the embedded AWS: the
stack as synthesized, created in moto (:mod:`alp.machine.embedded`, as ``alp demo`` does), restored from the
project's ``aws/`` copy. Each round takes the next imported frames that no round took yet, uploads them to the
unlabeled bucket (S3 -> EventBridge -> SQS -> the batcher, as in the cloud), runs the labeling pipeline's
declared steps (:mod:`alp.steps`), waits for people in Label Studio (polling their jobs, as the scheduled check
does in the cloud) and runs the completion pipeline when a job is done, then the training pipeline. The next
round's proposals come from the champion; before there is one, from the zero-shot bundle (never auto-accepted).

Restart safety: after every step the buckets and the registry are copied to ``aws/`` and ``state.json`` says
which phase each round is in. A stop (``down``) or a kill loses at most the step under way, which the next start
runs again from the copy taken before it: the steps are written to be re-run (CodePipeline retries them too),
and a Label Studio job that was created already is adopted, never imported twice.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from alp import storage
from alp.local.project import (
    LocalConfig,
    LocalRound,
    LocalState,
    ProjectPaths,
    read_state,
    save_state,
    write_json_atomically,
)
from alp.machine.pipeline import MachinePipeline
from alp.resources import ResourceNames
from alp.settings import SETTINGS_ENV, Settings

if TYPE_CHECKING:
    from alp.labeling.label_studio import LabelStudioBackend

POLL_SECONDS = 2.0
SEED_BUNDLE = "labels"  # the round of the --labels file: people's labels, no bundle proposed them


class RunnerRecord(BaseModel):
    """``runner.json``: the runner's process and what it is doing (``alp local status`` and ``up`` read it)."""

    pid: int
    aws_port: int | None = None
    studio_url: str | None = None
    activity: str = "starting"
    tasks_ready: bool = False  # people have tasks to do (or nothing waits for them): ``up`` returns
    error: str | None = None
    updated_at: float = Field(default_factory=time.time)


def read_runner(paths: ProjectPaths) -> RunnerRecord | None:
    if not paths.runner_file.is_file():
        return None
    try:
        return RunnerRecord.model_validate_json(paths.runner_file.read_text())
    except ValueError:
        return None


def imported_frames(paths: ProjectPaths) -> list[str]:
    """Every imported frame's key under the incoming folder, in import order."""
    from alp.local.importer import previous_imports

    return [o.key for report in previous_imports(paths) for o in report.outcomes
            if o.state == "imported" and o.key]


def pending_frames(paths: ProjectPaths, state: LocalState) -> list[str]:
    """Imported frames no round has taken yet."""
    taken = state.batched
    return [key for key in imported_frames(paths) if key not in taken]


class LocalRunner:
    """Runs the rounds of one project until ``stop`` is set."""

    def __init__(self, paths: ProjectPaths, config: LocalConfig, settings: Settings, *,
                 say: Callable[[str], None], poll_seconds: float = POLL_SECONDS) -> None:
        self.paths = paths
        self.config = config
        self.settings = settings
        self.say = say
        self.poll_seconds = poll_seconds
        self.record = RunnerRecord(pid=os.getpid())
        self._pipeline: MachinePipeline | None = None
        self._people: LabelStudioBackend | None = None

    # --- the record `up` and `status` read ---------------------------------------------------------
    def _note(self, activity: str, **fields: Any) -> None:
        self.record = self.record.model_copy(update={"activity": activity, "updated_at": time.time(), **fields})
        write_json_atomically(self.paths.runner_file, self.record.model_dump_json(indent=1))
        self.say(activity)

    # --- start --------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        from alp.machine import embedded

        self._note("starting")
        try:
            port = _previous_port(self.paths)
            server = embedded.EmbeddedAws.start(port=port)
            try:
                with embedded.aws_environment(server.endpoint, self.settings.region):
                    self._start_aws(int(server.endpoint.rsplit(":", 1)[1]))
                    self._start_studio()
                    self._rounds(stop)
            finally:
                server.stop()
        except BaseException as exc:
            if not isinstance(exc, KeyboardInterrupt | SystemExit):
                self._note(f"stopped by an error: {exc}", error=f"{type(exc).__name__}: {exc}")
            raise
        self._note("stopped")

    @property
    def pipeline(self) -> MachinePipeline:
        assert self._pipeline is not None, "the embedded AWS is not started"
        return self._pipeline

    @property
    def people(self) -> LabelStudioBackend:
        assert self._people is not None, "Label Studio is not started"
        return self._people

    def _start_aws(self, port: int) -> None:
        from alp.machine import embedded
        from alp.steps import DATA_ROOT_ENV
        from alp.torch_compat import prepare_ultralytics

        self._note(f"embedded AWS on 127.0.0.1:{port}: creating the stack's resources", aws_port=port)
        names = ResourceNames.from_settings(self.settings, embedded.account_id())
        os.environ[DATA_ROOT_ENV] = names.data_root
        restore = self.paths.mirror if (self.paths.mirror / embedded.REGISTRY_FILE).is_file() else None
        queue_url = embedded.create_stack_resources(self.settings, names, mirror=restore,
                                                    also_restore=lambda: restore_frames(self.paths, names))
        storage.write_text(storage.join(names.data_root, self.settings.storage.config_key), self.settings.to_json())
        prepare_ultralytics(self.paths.work / "ultralytics", threads=os.cpu_count() or 1)
        self._pipeline = MachinePipeline(names, self.settings, queue_url, logs=self.paths.logs,
                                         after_each_step=lambda step: self._snapshot())

    def _start_studio(self) -> None:
        from alp.labeling.label_studio import STUDIO_FILE_ENV, LabelStudioBackend, studio_up
        from alp.studio.server import STUDIO_FILE

        self._note(f"Label Studio on 127.0.0.1:{self.config.studio_port}")
        connection = studio_up(self.paths.studio, self.settings, port=self.config.studio_port, say=self.say)
        os.environ[STUDIO_FILE_ENV] = str(self.paths.studio / STUDIO_FILE)
        people = self._people = LabelStudioBackend(self.settings, connection=connection)
        # Tasks made before a restart show images through the project's S3 storage: it follows this start's port.
        # (A project without one gets it with its first tasks: Label Studio refuses a storage on an empty bucket.)
        for project in connection.projects.values():
            if people.client.s3_storages(project):
                people.ensure_image_storage(project, f"s3://{self.pipeline.names.unlabeled_bucket}/")
        self.record = self.record.model_copy(update={"studio_url": connection.url})

    # --- rounds -------------------------------------------------------------------------------------
    def _rounds(self, stop: threading.Event) -> None:
        self._seed_round()
        while not stop.is_set():
            state = read_state(self.paths)
            current = state.rounds[-1] if state.rounds and state.rounds[-1].phase != "done" else None
            if current is None:
                frames = pending_frames(self.paths, state)
                if not frames:
                    self._note(self._idle_line(state), tasks_ready=True)
                    stop.wait(self.poll_seconds)
                    continue
                size = self.config.first_round_images if not state.rounds else self.config.round_images
                current = self._start_round(state, frames[:size])
            if current.phase == "labeling" and not self._label(state, current):
                stop.wait(self.poll_seconds)
                continue
            if current.phase == "training":
                self._train(state, current)

    def _seed_round(self) -> None:
        """The labels given with ``--labels``, once, as a dataset version people made; its round trains on it."""
        from alp.datasets import create_version_from_lines
        from alp.local.labels import staged_lines
        from alp.retraining import record_training_start, retrain_decision

        state = read_state(self.paths)
        if not state.seeded or any(r.bundle == SEED_BUNDLE for r in state.rounds):
            return
        names = self.pipeline.names
        lines = staged_lines(self.paths, f"s3://{names.unlabeled_bucket}/{self.settings.storage.unlabeled_prefix}")
        version = create_version_from_lines(lines, names.data_root, self.settings, "seed",
                                            note="labels given with alp local up --labels")
        name = storage.basename(version.rstrip("/"))
        decision = retrain_decision(names.data_root, self.settings, version)
        if decision.start:  # what the Merge step does for a version it writes
            record_training_start(names.data_root, self.settings, name, "local:labels")
        self._note(f"the --labels file: {len(lines)} labeled frame(s) in dataset {name}")
        state.rounds.append(LocalRound(round=len(state.rounds), frames=list(state.seeded), manifest_uri="",
                                       phase="training", bundle=SEED_BUNDLE, routes={"human": len(lines)}))
        self._snapshot()
        save_state(self.paths, state)

    def _idle_line(self, state: LocalState) -> str:
        done = sum(r.phase == "done" for r in state.rounds)
        return (f"idle: {done} round(s) done, every imported frame labeled; `alp local add --images DIR` adds more"
                if state.rounds else "idle: no frames imported yet; `alp local add --images DIR` imports some")

    def _start_round(self, state: LocalState, frames: list[str]) -> LocalRound:
        rnd = len(state.rounds)
        self._note(f"round {rnd}: uploading {len(frames)} frame(s)")
        self.pipeline.upload({key: self.paths.incoming / key for key in frames}, desc=f"round {rnd}")
        current = LocalRound(round=rnd, frames=frames, manifest_uri=self.pipeline.batch(len(frames)))
        state.rounds.append(current)
        self._snapshot()
        save_state(self.paths, state)
        return current

    def _label(self, state: LocalState, current: LocalRound) -> bool:
        """The labeling pipeline; True once the batch's labeling is complete (merged), False while people work."""
        from alp.labeling.workflow import read_summary

        if read_summary(current.batch_dir) is None:  # the Label step never finished: the pipeline from its start
            self._note(f"round {current.round}: inference and judgement over {len(current.frames)} frame(s)")
            self.pipeline.label(current.manifest_uri, current.round, current.seconds)
            current.routes = _routes(current.batch_dir)
            current.bundle = _bundle_of(current.batch_dir)
            save_state(self.paths, state)
        while (summary := read_summary(current.batch_dir)) is not None and summary.state == "waiting":
            waiting = self.pipeline.waiting(current.batch_dir, self.people)
            if waiting is not None:
                job, status = waiting.job, waiting.status
                connection = self.people.connection
                project = connection.projects.get("heads" if job.kind == "head-boxes" else "keypoints")
                self._note(f"round {current.round}: waiting for people: {job.kind} {status.labeled or 0}/"
                           f"{status.total or 0} tasks done at {connection.url}/projects/{project}/", tasks_ready=True)
                return False
            self._note(f"round {current.round}: people finished the {summary.waiting_on[0].kind} job; collecting "
                       "their labels")
            self.pipeline.collect(current.manifest_uri, current.round, current.seconds)
        current.phase = "training"
        save_state(self.paths, state)
        return True

    def _train(self, state: LocalState, current: LocalRound) -> None:
        from alp.datasets import latest_version

        names = self.pipeline.names
        dataset = latest_version(names.data_root)
        if dataset is None:  # nothing was labeled (every frame quarantined): no version, nothing to train
            current.phase = "done"
            save_state(self.paths, state)
            return
        version = storage.basename(str(dataset).rstrip("/"))
        why_not = _no_training(names.data_root, self.settings, str(dataset))
        if why_not:
            current.dataset_version, current.phase = version, "done"
            save_state(self.paths, state)
            self._note(f"round {current.round}: dataset {version}, no training run: {why_not}")
            return
        self._note(f"round {current.round}: training on dataset {version}", tasks_ready=True)
        candidate = self.pipeline.train(str(dataset), current.round, current.seconds)
        current.dataset_version = version
        current.approved = candidate.approved
        current.candidate_bundle_id = candidate.bundle_id
        current.gate = candidate.gate
        current.phase = "done"
        save_state(self.paths, state)
        self._note(f"round {current.round}: candidate {current.candidate_bundle_id} "
                   f"{'approved: the champion now' if current.approved else 'rejected: the champion stays'}")

    def _snapshot(self) -> None:
        from alp.machine import embedded
        from alp.machine.signals import signals_held

        names = self.pipeline.names
        with signals_held():  # a `down` waits for the copy to be whole
            embedded.snapshot_state(self.settings, names, self.paths.mirror,
                                    buckets=embedded.mirrored_buckets(names, with_uploads=False))


def restore_frames(paths: ProjectPaths, names: ResourceNames) -> int:
    """The frames earlier rounds uploaded, back in the unlabeled bucket (the project keeps them, not the copy of
    the buckets: one copy of every frame on disk); returns how many."""
    from alp import aws

    s3 = aws.client("s3")
    prefix = paths.unlabeled_prefix
    frames = sorted(read_state(paths).batched)
    for key in frames:
        s3.put_object(Bucket=names.unlabeled_bucket, Key=f"{prefix}{key}", Body=(paths.incoming / key).read_bytes())
    return len(frames)


def _previous_port(paths: ProjectPaths) -> int | None:
    """The embedded AWS's port of the last start, so Label Studio's image links keep working (None: any)."""
    record = read_runner(paths)
    return record.aws_port if record is not None else None


def _routes(batch_dir: str) -> dict[str, int]:
    from alp.machine.pipeline import route_counts

    return {k: v for k, v in route_counts(batch_dir).items() if v}


def _bundle_of(batch_dir: str) -> str:
    path = storage.join(batch_dir, "inference/summary.json")
    if not storage.exists(path):
        return ""
    summary = json.loads(storage.read_text(path))
    return str(summary.get("bundle_id") or "")


def _no_training(data_root: str, settings: Settings, dataset: str) -> str | None:
    """Why the round's version is not trained (None: train it): the Merge step did not start a training run for it
    (``training.retrain_min_new_labels``), or no image of people's in its test split can judge a candidate yet."""
    from alp.datasets import PEOPLE_KINDS, SOURCE_KEY, SPLIT_KEY, read_version
    from alp.retraining import last_trained_version

    version = storage.basename(dataset.rstrip("/"))
    if last_trained_version(data_root, settings) != version:
        return ("the Merge step started none (training.retrain_min_new_labels: "
                f"{settings.training.retrain_min_new_labels} new labels from people)")
    tests = sum(line.data.get(SPLIT_KEY) == "test" and line.data.get(SOURCE_KEY, {}).get("kind") in PEOPLE_KINDS
                for line in read_version(dataset))
    if not tests:
        return ("none of people's images fell in the test split yet, and a candidate is only judged on those: the "
                "next round's labels train it")
    return None


@contextmanager
def runner_environment(paths: ProjectPaths, settings: Settings) -> Iterator[None]:
    """Every write of the runner inside the project (its cwd, temp files, the tools' caches and homes), except the
    installs every project shares: Label Studio's environment and the synthesized stacks stay in the user's cache."""
    import tempfile

    from alp.cloudformation.synth import CACHE_ENV, cache_root
    from alp.environment import patched_environ
    from alp.labeling.label_studio import STUDIO_FILE_ENV
    from alp.observability import METRICS_LOG_ENV
    from alp.steps import DATA_ROOT_ENV
    from alp.studio.server import HOME_ENV, studio_home

    work = paths.work
    tmp, home = work / "tmp", work / "home"
    for folder in (tmp, home, paths.logs):
        folder.mkdir(parents=True, exist_ok=True)
    values = {
        "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "XDG_CONFIG_HOME": str(home / ".config"),
        "YOLO_CONFIG_DIR": str(work / "ultralytics"), "MPLCONFIGDIR": str(work / "matplotlib"),
        "MPLBACKEND": "Agg", "TMPDIR": str(tmp), METRICS_LOG_ENV: str(work / "metrics.jsonl"),
        SETTINGS_ENV: str(paths.settings_file), DATA_ROOT_ENV: os.environ.get(DATA_ROOT_ENV),
        STUDIO_FILE_ENV: os.environ.get(STUDIO_FILE_ENV),
        HOME_ENV: str(studio_home(settings.labeling.studio.version)), CACHE_ENV: str(cache_root()),
    }
    saved_cwd, saved_tmp = Path.cwd(), tempfile.tempdir
    with patched_environ(values):
        tempfile.tempdir = str(tmp)
        os.chdir(work)
        try:
            yield
        finally:
            os.chdir(saved_cwd)
            tempfile.tempdir = saved_tmp
