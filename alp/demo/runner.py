"""``alp demo``: rounds of the active-learning loop against the embedded AWS, then the report.

Every round uploads a batch of pool images under the trigger's prefix; round 0 (cold start) is a random
seed set, which the labeling pipeline sends to the local workforce whole because no approved model exists
yet. Then S3 -> EventBridge -> SQS delivers the events; the batcher
(the Lambda's own function) writes the batch manifest and starts the labeling pipeline; the demo then runs
the labeling pipeline's steps and the training pipeline's steps from :mod:`alp.steps` - the declaration the
CDK pipelines are built from - through the same CLI the CodeBuild actions call.

Every round's candidate bundle is also scored on a frozen synthetic test set (another seed, never
uploaded, never trained on), so the table compares rounds on the same images.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alp import progress, storage
from alp.demo import embedded, integration
from alp.demo.report import Overlay, format_table, write_report
from alp.demo.state import DemoConfig, DemoState, RoundRecord, RunFolder, RunFolderError
from alp.environment import patched_environ
from alp.manifest import ManifestLine
from alp.observability import METRICS_LOG_ENV
from alp.resources import ResourceNames
from alp.settings import SETTINGS_ENV, Settings
from alp.steps import DATA_ROOT_ENV, PIPELINES, Step, run_step

_QUEUE_WAIT_SECONDS = 60


@dataclass(frozen=True)
class SharedData:
    """A pool and a frozen test set generated once and read by several runs (the bench's strategies)."""

    pool_manifest: str
    test_manifest: str


@dataclass
class DemoOptions:
    run_dir: Path
    fresh: bool
    config: DemoConfig
    progress: bool = True
    threads: int | None = None
    # The bench's hooks: a pool and test set generated once for several runs, and a router swapped in
    # after the Infer step (returns the route counts it produced).
    data: SharedData | None = None
    reroute: Callable[[str, int, Settings], dict[str, int]] | None = None
    resource_prefix: str | None = None
    report: bool = True
    start_over: str = "add --fresh"  # how a user starts the run folder over (the bench: without --resume)


@dataclass
class DemoResult:
    rows: list[RoundRecord]
    report_path: Path
    state: DemoState
    seconds: float
    notes: list[str] = field(default_factory=list)


def demo_settings(config: DemoConfig, truth_uri: str, threads: int = 0) -> Settings:
    """The defaults with the local labeling and training backends and the demo's sizes."""
    return Settings().with_overrides({
        "training.threads": threads,
        "inference.intra_op_threads": threads,  # 0 = one per core for both
        # The Evaluate step measures every candidate on the test split anyway; skipping ultralytics' own
        # per-epoch validation shortens every round.
        "training.validate_every_epoch": False,
        "labeling.backend": "local",
        "labeling.local_truth_uri": truth_uri,
        "training.backend": "local",
        "training.imgsz": config.imgsz,
        "training.epochs": config.epochs,
        "training.batch": config.batch,
        "training.seed": config.seed,
        "trigger.batching_window_seconds": 0,
    })


def _say(message: str) -> None:
    print(message, flush=True)


class _StepBars:
    """The progress a running step reports (:mod:`alp.progress`), as one console bar per task."""

    def __init__(self, stream: Any, *, enabled: bool) -> None:
        self.stream, self.enabled = stream, enabled
        self.bars: dict[str, Any] = {}

    def __call__(self, task: str, done: int, total: int, unit: str) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self.bars.get(task)
        if bar is None:
            self.close()  # one task at a time (the models train one after another): one line, not a stack
            bar = self.bars[task] = tqdm(total=total, desc=f"      {task}", unit=unit, file=self.stream,
                                         leave=False, dynamic_ncols=True)
        bar.update(max(0, min(done, total) - bar.n))

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def _bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, leave=False, file=sys.stderr)


@contextlib.contextmanager
def run_environment(folder: RunFolder) -> Iterator[None]:
    """Keep every write of the run inside its folder: cwd, temp files, ultralytics, matplotlib, metrics."""
    tmp = folder.root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    home = folder.root / "home"
    home.mkdir(parents=True, exist_ok=True)
    values = {
        # Libraries that keep caches under the user's home (onnxruntime's ~/.cache/Microsoft, matplotlib's
        # font cache, torch's) find a home inside the run folder instead.
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "TORCHINDUCTOR_CACHE_DIR": str(tmp / "torchinductor"),
        "YOLO_CONFIG_DIR": str(folder.config_dir),
        "MPLCONFIGDIR": str(folder.mpl_dir),
        METRICS_LOG_ENV: str(folder.metrics_log),
        "TMPDIR": str(tmp),
        "MPLBACKEND": "Agg",
    }
    saved_cwd = Path.cwd()
    saved_tempdir = tempfile.tempdir
    # SETTINGS_ENV and DATA_ROOT_ENV are set later in the run; listed here so they are restored too
    with patched_environ({SETTINGS_ENV: os.environ.get(SETTINGS_ENV), DATA_ROOT_ENV: os.environ.get(DATA_ROOT_ENV),
                          **values}):
        tempfile.tempdir = str(tmp)
        os.chdir(folder.root)  # tools that write relative to the cwd (ultralytics' runs/) write here
        try:
            yield
        finally:
            os.chdir(saved_cwd)
            tempfile.tempdir = saved_tempdir


# --- the run -------------------------------------------------------------------------------------------
class StepFailed(RuntimeError):
    """A pipeline step exited non-zero; the message names its log file."""


class DemoRun:
    """One demo run: embedded AWS up, data generated; call :meth:`run_round` per round."""

    def __init__(self, folder: RunFolder, state: DemoState, options: DemoOptions, names: ResourceNames,
                 settings: Settings, queue_url: str):
        self.folder = folder
        self.state = state
        self.options = options
        self.config = options.config
        self.names = names
        self.settings = settings
        self.queue_url = queue_url
        self.data_root = names.data_root
        pool_lines = [ManifestLine.parse(t) for t in storage.iter_lines(str(state.pool_manifest))]
        self.pool_by_name = {storage.basename(line.source_ref): line for line in pool_lines}
        order = sorted(self.pool_by_name)
        random.Random(self.config.seed).shuffle(order)
        self.order = order
        self._round = 0
        # the first round this process runs, when it resumes a run folder (None: a fresh run)
        self._resumed_at = state.completed_rounds if state.rounds else None
        self.test_lines = [ManifestLine.parse(t) for t in storage.iter_lines(str(state.test_manifest))]

    # round plan: seed set first, then equal slices of the shuffled pool
    def round_images(self, rnd: int) -> list[str]:
        seed_n = min(self.config.seed_images, len(self.order))
        if rnd == 0:
            return self.order[:seed_n]
        size = self.config.round_batch_size()
        start = seed_n + (rnd - 1) * size
        return self.order[start:start + size]

    def _upload(self, names: list[str], prefix: str, desc: str) -> list[str]:
        from alp import aws

        s3 = aws.client("s3")
        uris = []
        with _bar(len(names), desc, self.options.progress) as bar:
            for name in names:
                local = Path(self.pool_by_name[name].source_ref)
                key = f"{prefix}{name}"
                s3.put_object(Bucket=self.names.unlabeled_bucket, Key=key, Body=local.read_bytes(),
                              ContentType="image/jpeg")
                uris.append(f"s3://{self.names.unlabeled_bucket}/{key}")
                bar.update(1)
        return uris

    def _upload_broken(self, rnd: int) -> list[str]:
        """Uploads that are not usable images (a truncated JPEG, a text file): real buckets get them too,
        and the pipeline must quarantine them with a reason rather than lose or crash on them."""
        from alp import aws

        keys = []
        prefix = self.settings.storage.unlabeled_prefix
        for i in range(self.config.broken_per_round):
            name = self.order[i % len(self.order)]
            data = Path(self.pool_by_name[name].source_ref).read_bytes()
            body = data[: len(data) // 3] if i % 2 == 0 else b"not an image, uploaded by mistake\n"
            key = f"{prefix}broken-r{rnd}-{i}.jpg"
            aws.client("s3").put_object(Bucket=self.names.unlabeled_bucket, Key=key, Body=body)
            keys.append(key)
        return keys

    def _run_pipeline(self, spec_name: str, variables: dict[str, str], timings: dict[str, float],
                      after_step: Callable[[Step], None] | None = None) -> None:
        """Every step of the declared pipeline, in order, through the CLI (what :func:`run_pipeline` does),
        timing each; ``after_step`` lets the label-savings bench swap the router between Infer and Label."""
        spec = PIPELINES[spec_name]
        self.folder.logs_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.folder.logs_dir / f"round-{self._round}.log"
        for step in spec.steps:
            _say(f"  [{spec.name}] {step.name}: {step.description}")
            t0 = time.monotonic()
            # A step's own output (JSON, logs) goes to the round's log; the console gets one line per step.
            root_handlers = list(logging.getLogger().handlers)
            bars = _StepBars(sys.stderr, enabled=self.options.progress)  # the console, before the redirect
            with log_path.open("a", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
                    contextlib.redirect_stderr(log), progress.listening(bars), contextlib.closing(bars):
                print(f"===== {spec.name}/{step.name} {variables}", flush=True)
                try:
                    rc = run_step(spec_name, step.name, variables)
                except Exception:
                    traceback.print_exc()
                    rc = 1
                finally:
                    # A step that calls logging.basicConfig binds a handler to the redirected stream;
                    # drop it before that file closes (in the cloud each step is its own process).
                    for handler in logging.getLogger().handlers:
                        if handler not in root_handlers:
                            logging.getLogger().removeHandler(handler)
            seconds = round(time.monotonic() - t0, 2)
            timings[f"{spec.name}/{step.name}"] = seconds
            if rc == 130:  # the CLI turned a Ctrl-C inside the step into its exit code
                raise KeyboardInterrupt
            if rc != 0:
                tail = "\n".join(log_path.read_text(encoding="utf-8").splitlines()[-15:])
                raise StepFailed(f"step {spec.name}/{step.name} failed (exit code {rc}); its output is in "
                                 f"{log_path}; last lines:\n{tail}")
            _say(f"      done in {seconds:.1f}s")
            if after_step is not None:
                after_step(step)

    def _train_and_score(self, dataset_uri: str, record: RoundRecord) -> None:
        """The training pipeline's steps, then the candidate on the frozen test set."""
        self._run_pipeline("training", {"dataset": dataset_uri, "data_root": self.data_root}, record.step_seconds)
        candidate = storage.join(self.data_root, self.settings.storage.models_prefix, "candidates",
                                 storage.basename(dataset_uri)) + "/"
        record.dataset_version = storage.basename(dataset_uri)
        record.bundle_uri = candidate + "bundle/"
        gate_report = json.loads(storage.read_text(candidate + "report.json"))
        record.approved = integration.gate_passed(gate_report)
        record.bundle_id = integration.bundle_id(record.bundle_uri)
        t0 = time.monotonic()
        scores = integration.score_bundle(record.bundle_uri, self.test_lines, self.settings,
                                          self.folder.work_dir / "bundles")
        record.step_seconds["frozen-test"] = round(time.monotonic() - t0, 2)
        record.box_map50 = scores.get("box_map50")
        record.kpt_oks_map50 = scores.get("kpt_oks_map50")
        record.visibility_accuracy = scores.get("visibility_accuracy")

    def run_round(self, rnd: int) -> RoundRecord:
        started = time.monotonic()
        self._round = rnd
        names = self.round_images(rnd)
        previous = self.state.rounds[-1] if self.state.rounds else None
        prev_labels = previous.human_labels_total if previous else 0
        # Back in the queue: last round's Requeue step copied the images it left unlabeled (a human budget's
        # deferred ones) onto themselves; their events wait in the queue beside this round's uploads, and this
        # round's model judges them.
        requeued = previous.requeued if previous else 0
        if requeued and previous and previous.batch_dir and rnd == self._resumed_at:
            requeued = self._requeue_again(previous.batch_dir)
        record = RoundRecord(round=rnd, images_seen=len(names) + requeued, redriven=requeued)
        if rnd == 0:
            _say(f"round 0 (cold start): {len(names)} random images; with no approved model yet the labeling "
                 "pipeline sends every one to the local workforce")
        else:
            _say(f"round {rnd}: {len(names)} new images" + (f" + {requeued} sent back last round" if requeued
                                                             else ""))
        self._upload(names, self.settings.storage.unlabeled_prefix, f"upload round {rnd}")
        broken = self._upload_broken(rnd) if rnd > 0 else []
        record.images_seen += len(broken)
        manifest_uri = self._batch(len(names) + len(broken) + requeued)
        _say(f"  batch manifest {manifest_uri}")
        batch_dir = storage.parent(manifest_uri)
        record.batch_dir = batch_dir
        reroute = self.options.reroute or self._budget_router()

        def after_step(step: Step) -> None:
            if step.name == "Infer" and reroute is not None:
                reroute(batch_dir, rnd, self.settings)  # rewrites the Infer step's outputs and summary

        self._run_pipeline("labeling", {"batch_manifest": manifest_uri}, record.step_seconds, after_step)
        counts = integration.route_counts(batch_dir)  # the Infer summary's routes (rerouted or not) + the batcher's
        record.auto, record.human = counts["auto"], counts["human"]
        record.audit, record.quarantine = counts["audit"], counts["quarantine"]
        record.deferred = counts.get("deferred", 0)
        record.deferred_images = integration.deferred_images(batch_dir) if record.deferred else []
        record.requeued, record.requeue_quarantined = integration.requeue_counts(batch_dir)
        dataset_uri = integration.latest_dataset(self.data_root)
        # what people labeled: an image their jobs left unlabeled comes back and is counted when it is labeled
        record.unlabeled = integration.unlabeled_count(batch_dir)
        record.human_labels_total = prev_labels + record.human + record.audit - record.unlabeled
        self._train_and_score(dataset_uri, record)
        record.audit_agreement = integration.audit_agreement(dataset_uri)
        record.seconds = round(time.monotonic() - started, 1)
        return record

    def _requeue_again(self, batch_dir: str) -> int:
        """A resumed run has a new embedded AWS: the events of the last round's Requeue step were lost with the
        old one, and the images were restored without the step's metadata. Send exactly the images that step
        sent, with the counts it recorded (deciding again would start every count at 0). Returns how many."""
        from alp.requeue import read_summary, resend

        summary = read_summary(batch_dir)
        return resend(summary) if summary else 0

    def _budget_router(self) -> Callable[[str, int, Settings], dict[str, int]] | None:
        """With ``--human-share``: the batch's least confident images up to the budget go to people."""
        budget = self.config.human_budget()
        if budget is None:
            return None
        from alp.demo.strategies import reroute_batch

        def route(batch_dir: str, rnd: int, settings: Settings) -> dict[str, int]:
            return reroute_batch(storage.join(batch_dir, "inference/"), budget, "judgement", rnd, settings)

        return route

    def _batch(self, expected: int) -> str:
        """Collect the upload events from SQS and hand them to the batcher as one Lambda window."""
        from alp.batching import process_sqs_records

        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + _QUEUE_WAIT_SECONDS
        while len(records) < expected and time.monotonic() < deadline:
            got = embedded.receive_upload_records(self.queue_url, wait_seconds=1)
            records.extend(got)
        if len(records) < expected:
            raise StepFailed(f"only {len(records)} of {expected} upload events reached the queue in "
                               f"{_QUEUE_WAIT_SECONDS}s")
        result = process_sqs_records(records, self.settings, self.names)
        embedded.delete_records(self.queue_url, records, set(result.failed_message_ids))
        if result.failed_message_ids or not result.manifest_uri:
            raise StepFailed(f"the batcher failed: {result.failure_reasons or result.summary()}")
        _say(f"  batcher: {len(result.batched)} objects -> batch {result.batch_id}, labeling execution "
             f"{result.execution_id}")
        return result.manifest_uri

    # --- report -------------------------------------------------------------------------------------
    def overlays(self) -> tuple[list[Overlay], list[Overlay]]:
        auto: list[Overlay] = []
        human: list[Overlay] = []
        for row in reversed(self.state.rounds):
            if not row.batch_dir:
                continue
            a, h = integration.overlay_lines(row.batch_dir)
            for line, caption in a:
                if len(auto) < 6:
                    auto.append(Overlay(self._local_image(line), line, f"r{row.round} {caption}"))
            for line, caption in h:
                if len(human) < 6:
                    human.append(Overlay(self._local_image(line), line, f"r{row.round} {caption}"))
            if len(auto) >= 6 and len(human) >= 6:
                break
        return auto, human

    def _local_image(self, line: ManifestLine) -> Path:
        return Path(self.pool_by_name[storage.basename(line.source_ref)].source_ref)


TEST_SEED_OFFSET = 10_000  # the frozen test set's seed: never the pool's


def ensure_data(data_root: Path, state: DemoState, progress: bool) -> None:
    """The pool and the frozen test set under ``data_root`` (generated once; deterministic per seed)."""
    config = state.config
    t0 = time.monotonic()
    if state.pool_manifest is None or not Path(state.pool_manifest).is_file():
        _say(f"generating the synthetic pool: {config.pool} images {config.width}x{config.height}")
        state.pool_manifest = integration.generate(data_root / "pool", config.pool, config.seed,
                                                   config.hard_share, (config.width, config.height), progress)
    if state.test_manifest is None or not Path(state.test_manifest).is_file():
        _say(f"generating the frozen test set: {config.test_images} images (another seed)")
        state.test_manifest = integration.generate(data_root / "test", config.test_images,
                                                   config.seed + TEST_SEED_OFFSET, config.hard_share,
                                                   (config.width, config.height), progress)
        _say(f"  generated in {time.monotonic() - t0:.1f}s")


def shared_data(data_root: Path, config: DemoConfig) -> SharedData:
    """Generate the pool and the test set of ``config`` under ``data_root`` once, before runs that share them
    start (concurrent runs must not each generate into the same folder).

    ``data.json`` records what was generated: a later call with the same configuration (a resumed bench) reads
    the existing manifests instead of writing the images again under runs that already use them.
    """
    record = data_root / "data.json"
    if record.is_file():
        saved = json.loads(record.read_text())
        if (saved.get("config") == config.model_dump(mode="json")
                and all(Path(saved.get(k, "")).is_file() for k in ("pool_manifest", "test_manifest"))):
            return SharedData(pool_manifest=saved["pool_manifest"], test_manifest=saved["test_manifest"])
    state = DemoState(config=config)
    ensure_data(data_root, state, progress=False)
    assert state.pool_manifest is not None and state.test_manifest is not None
    record.write_text(json.dumps({"config": config.model_dump(mode="json"), "pool_manifest": state.pool_manifest,
                                  "test_manifest": state.test_manifest}, indent=1))
    return SharedData(pool_manifest=state.pool_manifest, test_manifest=state.test_manifest)


def improvement_note(rows: list[RoundRecord]) -> str:
    """One sentence on how the test metrics moved from the first to the last round."""
    if len(rows) < 2:
        return "Only one round so far: no trend yet."
    first, last = rows[0], rows[-1]
    parts = []
    for key in ("box_map50", "kpt_oks_map50", "visibility_accuracy"):
        a, b = getattr(first, key), getattr(last, key)
        if a is not None and b is not None:
            parts.append(f"{key} {a:.3f} -> {b:.3f} ({b - a:+.3f})")
    trend = "; ".join(parts) or "no comparable metrics"
    return (f"From round {first.round} to round {last.round} ({first.human_labels_total} -> "
            f"{last.human_labels_total} human labels): {trend}.")


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends (then they act): for work that must not stop half-way.

    The handlers are swapped for ones that only take note, rather than the signals masked: a mask holds
    for the main thread alone, and moto's server and the thread pools would take the signal instead."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _frame: caught.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if caught:
            signal.raise_signal(caught[0])  # now the usual handler acts (Ctrl-C: KeyboardInterrupt)


def run_demo(options: DemoOptions) -> DemoResult:
    """Run (or resume) the demo; returns the table rows and the report path."""
    started = time.monotonic()
    folder = RunFolder(options.run_dir.resolve(), start_over=options.start_over)
    folder.prepare(fresh=options.fresh)
    state = folder.load_state(options.config)
    folder.save_state(state)
    if state.rounds:
        _say(f"resuming {folder.root}: {state.completed_rounds} round(s) done")
    with run_environment(folder):
        if options.data is not None:
            state.pool_manifest = state.pool_manifest or options.data.pool_manifest
            state.test_manifest = state.test_manifest or options.data.test_manifest
        ensure_data(folder.root, state, options.progress)
        folder.save_state(state)
        settings = demo_settings(options.config, str(state.pool_manifest), options.threads or 0)
        if options.resource_prefix:
            settings = settings.with_overrides({"storage.resource_prefix": options.resource_prefix})
        settings_path = folder.root / "settings.json"
        settings_path.write_text(settings.to_json())
        os.environ[SETTINGS_ENV] = str(settings_path)
        server = embedded.EmbeddedAws.start()
        _say(f"embedded AWS (moto) on {server.endpoint}")
        try:
            with embedded.aws_environment(server.endpoint, settings.region):
                names = ResourceNames.from_settings(settings, embedded.account_id())
                os.environ[DATA_ROOT_ENV] = names.data_root
                queue_url = embedded.create_stack_resources(
                    settings, names, mirror=folder.mirror_dir if state.rounds else None)
                storage.write_text(storage.join(names.data_root, settings.storage.config_key), settings.to_json())
                from alp.torch_compat import prepare_ultralytics

                prepare_ultralytics(folder.config_dir, threads=options.threads or os.cpu_count() or 1)
                run = DemoRun(folder, state, options, names, settings, queue_url)
                from tqdm import tqdm

                total = options.config.rounds + 1
                with tqdm(total=total, initial=state.completed_rounds, desc="rounds", unit="round",
                          disable=not options.progress, file=sys.stderr) as bar:
                    for rnd in range(state.completed_rounds, total):
                        if not run.round_images(rnd):
                            waiting = state.rounds[-1].deferred if state.rounds else 0
                            _say(f"round {rnd}: the pool is used up; stopping"
                                 + (f" ({waiting} deferred images stay in the queue)" if waiting else ""))
                            break
                        record = run.run_round(rnd)
                        state.rounds.append(record)
                        # The copy of the embedded AWS and state.json record the same rounds: a Ctrl-C between
                        # them would resume from a copy that holds a round state.json does not list.
                        with signals_held():
                            embedded.snapshot_state(settings, names, folder.mirror_dir)
                            folder.save_state(state)
                        bar.update(1)
                        _say(f"round {rnd} done in {record.seconds:.0f}s: box_map50={record.box_map50} "
                             f"kpt_oks_map50={record.kpt_oks_map50} approved={record.approved}")
                auto, human = run.overlays() if options.report else ([], [])
        finally:
            server.stop()
        notes = [
            f"Run folder `{folder.root}`; pool {options.config.pool} images, frozen test set "
            f"{options.config.test_images} images (separate seed, never uploaded or trained on).",
            "Metrics are those of each round's candidate bundle on the frozen test set, computed with "
            "alp.metrics on the inference engine's predictions; `labels` counts images labeled by people "
            "(human + audit) so far.",
        ]
        notes.append(improvement_note(state.rounds))
        report = folder.report_dir / "report.md"
        if options.report:
            report = write_report(state.rounds, folder.report_dir, title="Active-learning demo", notes=notes,
                                  auto_overlays=auto, human_overlays=human, schema=settings.schema_,
                                  head_attr=settings.labeling.head_label_attribute,
                                  kp_attr=settings.labeling.keypoint_label_attribute)
    return DemoResult(rows=list(state.rounds), report_path=report, state=state,
                      seconds=time.monotonic() - started, notes=notes)


def run_demo_cli(options: DemoOptions) -> int:
    """The ``alp demo`` entry: prints the table and the report path; Ctrl-C exits 130 keeping state."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops as cleanly as Ctrl-C: moto down, completed rounds kept

    previous = signal.signal(signal.SIGTERM, stop) if threading.current_thread() is threading.main_thread() else None
    try:
        result = run_demo(options)
    except KeyboardInterrupt:
        print(f"\ninterrupted: completed rounds are kept in {options.run_dir}; run the same command again to "
              "resume, or add --fresh to start over", file=sys.stderr)
        return 130
    except RunFolderError as exc:
        print(f"alp demo: {exc}", file=sys.stderr)
        return 2
    except StepFailed as exc:
        print(f"alp demo: {exc}\ncompleted rounds are kept; fix the cause and run the same command to resume",
              file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print()
    print(format_table(result.rows))
    print(f"\ntotal {result.seconds:.0f}s; report: {result.report_path}")
    return 0
