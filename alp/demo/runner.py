"""``alp demo``: rounds of the active-learning loop against the embedded AWS, then the report.

The run: open (or resume) the run folder, generate the data, write the settings every step loads, start
the embedded AWS with the stack's resources, run the rounds (:mod:`alp.demo.rounds`: uploads -> batcher ->
the labeling pipeline's steps -> the training pipeline's steps, from :mod:`alp.steps`, the declaration the
CDK pipelines are built from, through the same CLI the CodeBuild actions call), then write the report.

Every round's candidate bundle is also scored on a frozen synthetic test set (another seed, never
uploaded, never trained on), so the table compares rounds on the same images.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from alp import storage
from alp.datasets import list_versions, read_version
from alp.demo.data import SharedData, ensure_data
from alp.demo.people import start_people, stop_people
from alp.demo.report import Overlay, format_table, improvement_note, write_report
from alp.demo.rounds import DemoRun, Router
from alp.demo.sandbox import run_environment
from alp.demo.state import DemoConfig, DemoState, RoundRecord, RunFolder, RunFolderError
from alp.machine import embedded
from alp.machine.console import rounds_bar, say
from alp.machine.pipelines import StepFailed
from alp.machine.signals import signals_held, sigterm_as_interrupt
from alp.pixels import PixelReport, describe_problems, verify_lines
from alp.resources import ResourceNames
from alp.settings import SETTINGS_ENV, Settings
from alp.steps import DATA_ROOT_ENV


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
    reroute: Router | None = None
    resource_prefix: str | None = None
    report: bool = True
    start_over: str = "add --fresh"  # how a user starts the run folder over (the bench: without --resume)
    workforce: Literal["simulated", "studio"] = "simulated"  # studio: people label in a real Label Studio
    studio_port: int = 8080
    studio_file: Path | None = None  # a running Label Studio (alp studio up) instead of one the run starts


@dataclass
class DemoResult:
    rows: list[RoundRecord]
    report_path: Path
    state: DemoState
    seconds: float
    notes: list[str] = field(default_factory=list)
    # every dataset version the run made, each line's image read and checked against its pinned sha256
    datasets: dict[str, PixelReport] = field(default_factory=dict)

    @property
    def datasets_ok(self) -> bool:
        return all(report.all_ok for report in self.datasets.values())


def demo_settings(config: DemoConfig, truth_uri: str, threads: int = 0,
                  workforce: Literal["simulated", "studio"] = "simulated") -> Settings:
    """The defaults with the local labeling and training backends and the demo's sizes; with ``studio``, people
    label in Label Studio (the one this run starts, not a hosted one)."""
    people = {"labeling.backend": "label-studio", "labeling.studio.hosted": False} if workforce == "studio" else {}
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
        **people,
    })


def run_demo(options: DemoOptions) -> DemoResult:
    """Run (or resume) the demo; returns the table rows and the report path."""
    started = time.monotonic()
    folder, state = _open_run_folder(options)
    with run_environment(folder):
        _prepare_data(folder, state, options)
        settings = _write_settings(folder, state, options)
        auto, human, datasets = _run_in_embedded_aws(folder, state, settings, options)
        notes = _notes(folder, state, options.config)
        report = folder.report_dir / "report.md"
        if options.report:
            report = write_report(state.rounds, folder.report_dir, title="Active-learning demo", notes=notes,
                                  auto_overlays=auto, human_overlays=human, schema=settings.schema_,
                                  head_attr=settings.labeling.head_label_attribute,
                                  kp_attr=settings.labeling.keypoint_label_attribute,
                                  target_precision=settings.judgement.target_precision)
    return DemoResult(rows=list(state.rounds), report_path=report, state=state,
                      seconds=time.monotonic() - started, notes=notes, datasets=datasets)


def _open_run_folder(options: DemoOptions) -> tuple[RunFolder, DemoState]:
    folder = RunFolder(options.run_dir.resolve(), start_over=options.start_over)
    folder.prepare(fresh=options.fresh)
    state = folder.load_state(options.config)
    folder.save_state(state)
    if state.rounds:
        say(f"resuming {folder.root}: {state.completed_rounds} round(s) done")
    return folder, state


def _prepare_data(folder: RunFolder, state: DemoState, options: DemoOptions) -> None:
    if options.data is not None:
        state.pool_manifest = state.pool_manifest or options.data.pool_manifest
        state.test_manifest = state.test_manifest or options.data.test_manifest
    ensure_data(folder.root, state, options.progress)
    folder.save_state(state)


def _write_settings(folder: RunFolder, state: DemoState, options: DemoOptions) -> Settings:
    """The run's settings in ``settings.json``, which every step loads (``ALP_SETTINGS_URI``)."""
    settings = demo_settings(options.config, str(state.pool_manifest), options.threads or 0, options.workforce)
    if options.resource_prefix:
        settings = settings.with_overrides({"storage.resource_prefix": options.resource_prefix})
    settings_path = folder.root / "settings.json"
    settings_path.write_text(settings.to_json())
    os.environ[SETTINGS_ENV] = str(settings_path)  # restored by run_environment
    return settings


def _run_in_embedded_aws(folder: RunFolder, state: DemoState, settings: Settings, options: DemoOptions
                         ) -> tuple[list[Overlay], list[Overlay], dict[str, PixelReport]]:
    """The rounds against a fresh embedded AWS (restored from the mirror on resume); returns the report's
    overlays (none without a report) and every dataset version's pixel check."""
    server = embedded.EmbeddedAws.start()
    say(f"embedded AWS (moto) on {server.endpoint}")
    try:
        with embedded.aws_environment(server.endpoint, settings.region):
            names = ResourceNames.from_settings(settings, embedded.account_id())
            os.environ[DATA_ROOT_ENV] = names.data_root  # restored by run_environment
            queue_url = embedded.create_stack_resources(
                settings, names, mirror=folder.mirror_dir if state.rounds else None)
            storage.write_text(storage.join(names.data_root, settings.storage.config_key), settings.to_json())
            from alp.torch_compat import prepare_ultralytics

            prepare_ultralytics(folder.config_dir, threads=options.threads or os.cpu_count() or 1)
            people = (start_people(folder.root, settings, port=options.studio_port, say=say,
                                   studio_file=options.studio_file)
                      if options.workforce == "studio" else None)
            run = DemoRun(folder, state, names, settings, queue_url, show_progress=options.progress,
                          reroute=options.reroute, people=people)
            _run_rounds(run, folder, options)
            datasets = verify_datasets(names.data_root, settings)
            auto, human = run.overlays() if options.report else ([], [])
            return auto, human, datasets
    finally:
        if options.workforce == "studio" and options.studio_file is None:
            stop_people(folder.root)
        server.stop()


def _run_rounds(run: DemoRun, folder: RunFolder, options: DemoOptions) -> None:
    """Every round not completed yet, each recorded (state.json + the mirror) before the next starts."""
    state = run.state
    total = options.config.rounds + 1
    with rounds_bar(total, state.completed_rounds, enabled=options.progress) as bar:
        for rnd in range(state.completed_rounds, total):
            if not run.round_images(rnd):
                waiting = state.rounds[-1].deferred if state.rounds else 0
                say(f"round {rnd}: the pool is used up; stopping"
                    + (f" ({waiting} deferred images stay in the queue)" if waiting else ""))
                break
            record = run.run_round(rnd)
            state.rounds.append(record)
            # The copy of the embedded AWS and state.json record the same rounds: a Ctrl-C between them would
            # resume from a copy that holds a round state.json does not list.
            with signals_held():
                embedded.snapshot_state(run.settings, run.names, folder.mirror_dir)
                folder.save_state(state)
            bar.update(1)
            say(f"round {rnd} done in {record.seconds:.0f}s: box_map50={record.box_map50} "
                f"kpt_oks_map50={record.kpt_oks_map50} approved={record.approved}")


def verify_datasets(data_root: str, settings: Settings) -> dict[str, PixelReport]:
    """What ``alp datasets verify --version`` says of each version under ``data_root``, by version name."""
    reports = {}
    for uri in list_versions(data_root, settings):
        reports[storage.basename(uri)] = verify_lines(read_version(uri))
        say(f"dataset {storage.basename(uri)}: " + ", ".join(f"{n} {k}" for k, n in
                                                             reports[storage.basename(uri)].counts().items()))
    return reports


def _notes(folder: RunFolder, state: DemoState, config: DemoConfig) -> list[str]:
    return [
        f"Run folder `{folder.root}`; pool {config.pool} images, frozen test set "
        f"{config.test_images} images (separate seed, never uploaded or trained on).",
        "Metrics are those of each round's candidate bundle on the frozen test set, computed with "
        "alp.metrics on the inference engine's predictions; `labels` counts images labeled by people "
        "(human + audit) so far.",
        improvement_note(state.rounds),
    ]


def run_demo_cli(options: DemoOptions) -> int:
    """The ``alp demo`` entry: prints the table and the report path; Ctrl-C (or SIGTERM) exits 130 keeping
    the completed rounds."""
    try:
        with sigterm_as_interrupt():  # moto down, completed rounds kept
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
    print()
    print(format_table(result.rows))
    lines = sum(r.lines for r in result.datasets.values())
    if not result.datasets_ok:
        bad = {name: describe_problems(r) or f"{len(r.unpinned)} unpinned" for name, r in result.datasets.items()
               if not r.all_ok}
        print(f"alp demo: dataset versions whose images are not the labeled ones: {bad}", file=sys.stderr)
        return 1
    print(f"\n{len(result.datasets)} dataset versions verified: {lines} lines, every image the bytes its labels were "
          "made on (alp datasets verify)")
    print(f"total {result.seconds:.0f}s; report: {result.report_path}")
    return 0
