"""``alp bench active-learning``: human labels saved by the judgement function, against random selection.

Same pool, same frozen test set, same per-round human budget ``B`` (``--human-share`` of each round's batch),
same training settings; two strategies (``alp.demo.strategies``):

* ``judgement``: the ``B`` images with the lowest judgement score go to people (uncertainty sampling), the
  images its thresholds passed are auto-labeled, and those it doubts beyond the budget are deferred: the
  Requeue step sends them back into the next round's batch for the next model to judge (nothing it doubts is
  auto-labeled; after ``labeling.max_requeues`` round trips an image is quarantined);
* ``random``: ``B`` images drawn at random go to people, and the model's predictions auto-label all the rest
  (without a judgement there is nothing to tell trusted proposals from doubtful ones). Both run the whole demo loop
(embedded AWS, batcher, the labeling and training pipelines' steps, the local workforce); only the Infer
step's routing is rewritten. Per seed and round it records the human labels used so far and the
candidate's metrics on the frozen test set, then reports the labels needed to reach
``cost.target_kpt_oks_map50`` under each strategy (linear interpolation between rounds; null with a note
when a strategy never reaches it), ``label_ratio`` = judgement / random, the same for a ladder of lower
targets (``label_ratio_by_target``: young models on 2 CPU cores may not reach the settings' target),
``auto_label_precision`` of each strategy (auto-labeled images whose boxes pair at IoU >= 0.5 and persons
at OKS >= 0.5 with the truth), ``judgement_score`` (how well the judgement score separates right from wrong
auto-labels: AUROC and precision per score bin) and the cost per 100,000 images against labeling
everything by hand.

The six runs (3 seeds x 2 strategies) are independent: ``--jobs N`` runs N at once in worker processes,
each with cores / N threads, and writes one log per run next to the run folders. A stopped bench (Ctrl-C, a
failed run, a closed session) goes on with ``--run-dir <folder> --resume``: finished runs are read back, the
others continue from their last finished round.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alp.demo.runner import SharedData
    from alp.demo.state import DemoConfig, RoundRecord
    from alp.demo.strategies import Strategy

QUICK = {"rounds": 2, "pool": 48, "test_images": 16, "seed_images": 12, "width": 128, "height": 96,
         "imgsz": 96, "epochs": 2, "batch": 8}
# 5 rounds of 90 uploads after 40 seed images, 45 human labels a round: 265 labels at the end. With 4 rounds
# (220 labels) no random run reached the 0.7 target (0.669 and 0.655 in seeds 0-1) while every judgement run
# had passed it near 130 labels. With 5, one of three random runs gets there (the other two stall at .70 and
# .55), so the headline is still a bound (0.47 over 3 seeds). About 2 h 30 min on 2 cores with --jobs 2 (a
# random run 60-75 min, a judgement run about 40).
FULL = {"rounds": 5, "pool": 490, "test_images": 60, "seed_images": 40, "width": 256, "height": 192,
        "imgsz": 160, "epochs": 15, "batch": 16}


def labels_to_target(curve: list[tuple[int, float | None]], target: float) -> float | None:
    """Human labels at which the metric first reaches ``target`` (linear between rounds); None if never."""
    prev: tuple[int, float] | None = None
    for labels, value in curve:
        if value is None:
            continue
        if value >= target:
            if prev is None or prev[1] >= target:
                return float(labels)
            x0, y0 = prev
            return x0 + (target - y0) * (labels - x0) / (value - y0)
        prev = (labels, value)
    return None


def ratio_at(per_seed: list[dict[str, Any]], target: float) -> dict[str, float | None]:
    """Mean labels to ``target`` per strategy over the seeds (None unless every seed reached it), and the ratio.

    When every seed's judgement run reached the target and some random run did not, the ratio is unknown but
    bounded: that random run would have needed more than the labels it spent, so ``label_ratio_at_most`` is
    the judgement's mean over the random runs' mean of (labels to target, or all labels spent).
    """
    means: dict[str, float | None] = {}
    spent: list[float] = []
    for name in ("judgement", "random"):
        values = [labels_to_target([(r["human_labels"], r["kpt_oks_map50"]) for r in s["rounds"][name]], target)
                  for s in per_seed]
        means[name] = statistics.fmean(v for v in values if v is not None) if values and None not in values else None
        if name == "random":
            spent = [v if v is not None else float(s["rounds"][name][-1]["human_labels"])
                     for v, s in zip(values, per_seed, strict=True) if s["rounds"][name]]
    j, r = means["judgement"], means["random"]
    out: dict[str, float | None] = {"judgement": j, "random": r,
                                    "label_ratio": round(j / r, 4) if j is not None and r else None}
    if j is not None and r is None and spent and statistics.fmean(spent) > 0:
        out["label_ratio_at_most"] = round(j / statistics.fmean(spent), 4)
    return out


LABEL_RATIO_GOAL = 0.5  # the judgement should need at most half the human labels random selection needs


def goal_met(headline: dict[str, float | None], goal: float = LABEL_RATIO_GOAL) -> bool | None:
    """Whether the label ratio is at most ``goal``: from the ratio itself, or from its upper bound when the
    random runs fell short of the target (a bound at or under the goal settles it; one above does not)."""
    ratio, bound = headline.get("label_ratio"), headline.get("label_ratio_at_most")
    if ratio is not None:
        return ratio <= goal
    if bound is not None and bound <= goal:
        return True
    return None


def plot_label_savings(per_seed: list[dict[str, Any]], target: float, path: Path) -> Path:
    """Frozen-test kpt_oks_map50 and box_map50 against human labels: both strategies, every seed, the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"judgement": "#2e6f9e", "random": "#c4572a"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for ax, metric in zip(axes, ("kpt_oks_map50", "box_map50"), strict=True):
        for name, colour in colours.items():
            for i, seed in enumerate(per_seed):
                rows = seed["rounds"][name]
                ax.plot([r["human_labels"] for r in rows], [r[metric] or 0.0 for r in rows], marker="o",
                        color=colour, alpha=0.75, label=name if i == 0 else None)
        if metric == "kpt_oks_map50":
            ax.axhline(target, color="#555555", linestyle="--", linewidth=1, label=f"target {target}")
        ax.set_xlabel("human labels so far (same budget per round for both)")
        ax.set_ylabel(f"{metric} (frozen test set)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"Label savings: judgement vs random selection, {len(per_seed)} seed(s), one line per seed")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def cost_per_100k(human_share: float, compute_seconds_per_image: float, price_task: float,
                  price_hour: float) -> dict[str, float]:
    """Estimated cost of 100,000 images: the pipeline (people for its human share + compute) vs all by hand."""
    n = 100_000
    human = human_share * n * price_task
    compute = compute_seconds_per_image * n / 3600.0 * price_hour
    all_human = n * price_task
    return {"pipeline_usd": round(human + compute, 2), "pipeline_human_usd": round(human, 2),
            "pipeline_compute_usd": round(compute, 2), "all_human_usd": round(all_human, 2),
            "saving_ratio": round((human + compute) / all_human, 4) if all_human else 0.0}


def auto_label_outcomes(rows: list[Any], mirror: Path, truth_by_name: dict[str, Any],
                        settings: Any) -> list[tuple[float | None, bool]]:
    """(judgement score, matches the truth) of every auto-labeled image of the rounds after the cold start,
    read from a run's mirror (its moto is gone by now)."""
    from alp import storage
    from alp.demo.embedded import mirrored_path
    from alp.demo.strategies import auto_label_matches
    from alp.manifest import read_manifest

    outcomes: list[tuple[float | None, bool]] = []
    for row in rows:
        if not row.batch_dir or row.round == 0:
            continue
        path = mirrored_path(mirror, storage.join(row.batch_dir, "inference/", "auto.jsonl"))
        if not path.is_file():
            continue
        for line in read_manifest(str(path)):
            truth = truth_by_name.get(storage.basename(line.source_ref))
            if truth is None:
                continue
            route = line.route()
            outcomes.append((route.score if route else None, auto_label_matches(line, truth, settings)))
    return outcomes


SCORE_BINS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


def score_diagnostics(outcomes: list[tuple[float | None, bool]]) -> dict[str, Any]:
    """How well the judgement score tells right auto-labels from wrong ones.

    ``auroc``: the chance that a right auto-label scores higher than a wrong one (0.5 = the score carries no
    information; null unless both kinds occur); ``by_score``: precision per score bin, the numbers to pick
    ``judgement.*_threshold`` from. Images without a score (nothing detected) count as score 0.
    """
    scored = [(0.0 if score is None else score, ok) for score, ok in outcomes]
    right = [sc for sc, ok in scored if ok]
    wrong = [sc for sc, ok in scored if not ok]
    auroc = None
    if right and wrong:
        wins = sum((r > w) + 0.5 * (r == w) for r in right for w in wrong)
        auroc = round(wins / (len(right) * len(wrong)), 4)
    bins = []
    for lo, hi in zip(SCORE_BINS, SCORE_BINS[1:], strict=False):
        inside = [ok for sc, ok in scored if lo <= sc < hi or (hi == SCORE_BINS[-1] and sc == hi)]
        bins.append({"score": f"[{lo}, {hi}{']' if hi == SCORE_BINS[-1] else ')'}", "images": len(inside),
                     "precision": round(sum(inside) / len(inside), 4) if inside else None})
    return {"images": len(scored), "precision": round(len(right) / len(scored), 4) if scored else None,
            "auroc": auroc, "by_score": bins}


@dataclass(frozen=True)
class StrategyRun:
    """One seed under one strategy: a whole demo loop in its own run folder (picklable for a worker)."""

    seed: int
    strategy: Strategy
    config: DemoConfig
    budget: int
    run_dir: Path
    data: SharedData
    threads: int | None
    log_path: Path | None  # None: print to this process's stdout
    resume: bool = False  # keep the rounds a previous bench finished in run_dir and go on from there


def run_strategy(task: StrategyRun) -> list[RoundRecord]:
    """Run one seed under one strategy; returns its round records. Top-level so a worker process can run it."""
    from alp import storage
    from alp.demo.runner import DemoOptions, run_demo
    from alp.demo.strategies import reroute_batch
    from alp.settings import Settings

    def router(batch_dir: str, rnd: int, run_settings: Settings) -> dict[str, int]:
        return reroute_batch(storage.join(batch_dir, "inference/"), task.budget, task.strategy,
                             task.seed * 1000 + rnd, run_settings)

    options = DemoOptions(run_dir=task.run_dir, fresh=not task.resume, config=task.config, progress=False, data=task.data,
                          threads=task.threads, resource_prefix=f"alp{task.strategy[0]}", report=False,
                          reroute=router, start_over="run the bench without --resume")
    if task.log_path is None:
        return run_demo(options).rows
    # A worker stopped by the bench (SIGTERM) unwinds like Ctrl-C: the running step's process is killed and
    # the embedded AWS stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    with open(task.log_path, "a" if task.resume else "w", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        try:
            return run_demo(options).rows
        except BaseException:
            traceback.print_exc(file=log)  # the log is all a worker leaves behind
            raise


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class RunFailed(RuntimeError):
    """One seed x strategy run failed; the message names its log."""


def _run_in_worker(task: StrategyRun) -> tuple[StrategyRun, list[RoundRecord]]:
    try:
        return task, run_strategy(task)
    except KeyboardInterrupt:
        raise SystemExit(130) from None  # stopped by the bench or Ctrl-C: the run's log has the traceback
    except Exception as exc:  # re-raised in the bench process, which stops the other runs
        raise RunFailed(f"seed {task.seed} {task.strategy} failed ({type(exc).__name__}: {exc}); "
                        f"see {task.log_path}") from None


def _run_all(tasks: list[StrategyRun], jobs: int, log: Any) -> dict[tuple[int, str], list[RoundRecord]]:
    """Every task's round records: one after another here, or ``jobs`` worker processes at a time.

    The first failed run stops the bench at once: its log is named, the other workers are stopped.
    """
    done: dict[tuple[int, str], list[RoundRecord]] = {}
    if jobs <= 1:
        for task in tasks:
            print(f"[bench] seed {task.seed}: {task.strategy} strategy, {task.budget} human labels per round",
                  file=log, flush=True)
            try:
                with contextlib.redirect_stdout(log):
                    done[(task.seed, task.strategy)] = run_strategy(task)
            except Exception as exc:
                raise RunFailed(f"seed {task.seed} {task.strategy} failed ({type(exc).__name__}: {exc}); its "
                                f"steps' output is in {task.run_dir / 'logs'}") from exc
        return done
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    # spawn, not fork: a forked torch with live thread pools can hang, and every run sets its own
    # environment; one task per worker, so no library keeps a handle on the previous run's log. An executor,
    # not a multiprocessing.Pool: a worker killed from outside (out of memory) breaks it and the bench stops
    # with an error, where a Pool would wait for that task for ever.
    executor = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                   max_tasks_per_child=1)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a stopped bench stops its workers too
    for task in tasks:
        print(f"[bench] seed {task.seed}: {task.strategy} strategy, {task.budget} human labels per round "
              f"-> log {task.log_path}", file=log, flush=True)
    futures = {executor.submit(_run_in_worker, task): task for task in tasks}
    try:
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                task = futures[future]
                try:
                    _, rows = future.result()
                except BrokenProcessPool:
                    # every unfinished run gets this at once, so the dead one cannot be told apart: name them all
                    logs = ", ".join(str(t.log_path) for t in futures.values() if (t.seed, t.strategy) not in done)
                    raise RunFailed("a worker process died without a word (killed from outside, e.g. out of "
                                    f"memory); the unfinished runs' logs: {logs}") from None
                except (SystemExit, KeyboardInterrupt):
                    raise RunFailed(f"seed {task.seed} {task.strategy} was stopped from outside (SIGTERM or "
                                    f"Ctrl-C in its worker); see {task.log_path}") from None
                done[(task.seed, task.strategy)] = rows
                last = rows[-1] if rows else None
                print(f"[bench] seed {task.seed} {task.strategy}: {len(rows)} round(s) done"
                      + (f", last kpt_oks_map50={last.kpt_oks_map50}" if last else "")
                      + f" ({len(done)}/{len(tasks)} runs)", file=log, flush=True)
    except BaseException:
        # stop now rather than wait for the other runs: SIGTERM unwinds each worker like Ctrl-C
        for future in futures:
            future.cancel()
        for child in multiprocessing.active_children():
            child.terminate()
        raise
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        signal.signal(signal.SIGTERM, previous)
    return done


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    if not 0.0 < args.human_share <= 1.0:
        raise ValueError(f"--human-share must be in (0, 1], got {args.human_share}")
    jobs = args.jobs if args.jobs is not None else 1
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    if args.resume and not args.run_dir:
        raise ValueError("--resume needs --run-dir: the folder of the bench to go on with")
    from alp import storage
    from alp.demo.runner import shared_data
    from alp.demo.state import DemoConfig
    from alp.manifest import ManifestLine
    from alp.settings import Settings

    sizes = dict(QUICK if args.quick else FULL)
    for key in ("rounds", "pool", "epochs", "imgsz", "seed_images", "test_images", "width", "height"):
        if getattr(args, key, None) is not None:
            sizes[key] = getattr(args, key)
    seeds = list(range(args.seeds if args.seeds is not None else (1 if args.quick else 3)))
    root = Path(args.run_dir).resolve() if args.run_dir else Path(tempfile.mkdtemp(prefix="alp-bench-al-"))
    root.mkdir(parents=True, exist_ok=True)
    settings = Settings()
    target = args.target if args.target is not None else settings.cost.target_kpt_oks_map50
    log = sys.stderr if args.json else sys.stdout
    per_seed: list[dict[str, Any]] = []
    outcomes: dict[str, list[tuple[float | None, bool]]] = {"judgement": [], "random": []}
    seen = people = 0
    compute_s = 0.0
    started = time.monotonic()
    strategies: tuple[Strategy, ...] = ("judgement", "random")
    failed = False
    tasks: list[StrategyRun] = []
    try:
        configs: dict[int, DemoConfig] = {}
        for seed in seeds:
            config = configs[seed] = DemoConfig(seed=seed, human_share=args.human_share, **sizes)
            print(f"[bench] seed {seed}: generating the pool ({config.pool}) and the frozen test set "
                  f"({config.test_images})", file=log, flush=True)
            with contextlib.redirect_stdout(log):
                data = shared_data(root / f"seed{seed}-data", config)
            tasks += [StrategyRun(seed=seed, strategy=name, config=config, budget=config.human_budget() or 0,
                                  run_dir=root / f"seed{seed}-{name}", data=data, threads=None, log_path=None,
                                  resume=args.resume)
                      for name in strategies]
        jobs = min(jobs, len(tasks))
        if jobs > 1:
            # each worker gets an even share of the cores for its training (torch) and inference threads
            from inference.onnx_models import usable_cores

            tasks = [dataclasses.replace(t, threads=max(1, usable_cores() // jobs),
                                         log_path=root / f"seed{t.seed}-{t.strategy}.log") for t in tasks]
            # Longest first: a random run trains on every image it saw (its auto-labels included), a judgement
            # run not on the images it deferred, so random runs take about 1.5x as long. Started first, they do
            # not leave one worker training alone at the end.
            tasks.sort(key=lambda t: t.strategy != "random")
        done = _run_all(tasks, jobs, log)
        for seed in seeds:
            data = next(t.data for t in tasks if t.seed == seed)
            rows_of = {name: done[(seed, name)] for name in strategies}
            truth = {storage.basename(line.source_ref): line for line in
                     (ManifestLine.parse(t) for t in storage.iter_lines(data.pool_manifest))}
            for strategy in strategies:
                outcomes[strategy] += auto_label_outcomes(
                    rows_of[strategy], root / f"seed{seed}-{strategy}" / "aws-mirror", truth, settings)
            for r in rows_of["judgement"][1:]:
                seen += r.images_seen - r.redriven  # each uploaded image once, however often it was deferred
                people += r.human + r.audit
                compute_s += sum(v for k, v in r.step_seconds.items() if k.startswith("labeling/Infer"))
                compute_s += sum(v for k, v in r.step_seconds.items() if k.startswith("training/"))
            if rows_of["judgement"]:
                seen -= rows_of["judgement"][-1].deferred  # still in the queue: neither labeled nor auto-labeled
            # quarantined by the Requeue step after max_requeues round trips: neither labeled nor auto-labeled
            seen -= sum(r.requeue_quarantined for r in rows_of["judgement"][:-1])
            curves = {name: [{"round": r.round, "human_labels": r.human_labels_total, "auto_labels": r.auto,
                              "deferred": r.deferred,
                              "box_map50": r.box_map50, "kpt_oks_map50": r.kpt_oks_map50,
                              "visibility_accuracy": r.visibility_accuracy, "approved": r.approved}
                             for r in rows]
                      for name, rows in rows_of.items()}
            per_seed.append({
                "seed": seed, "human_budget_per_round": configs[seed].human_budget() or 0, "rounds": curves,
                # images the judgement still doubted after the last round: back in the queue, not lost
                "deferred_at_end": {name: rows[-1].deferred if rows else 0 for name, rows in rows_of.items()},
                **{f"labels_to_target_{name}": labels_to_target(
                    [(r.human_labels_total, r.kpt_oks_map50) for r in rows], target)
                   for name, rows in rows_of.items()},
            })
    except BaseException:
        failed = True
        print(f"[bench] stopped; the run folders and logs are kept in {root}: the same command with "
              f"--run-dir {root} --resume goes on from the last finished rounds", file=log, flush=True)
        raise
    finally:
        if not args.run_dir and not args.keep and not failed:
            shutil.rmtree(root, ignore_errors=True)
    notes: list[str] = []
    headline = ratio_at(per_seed, target)
    mean_j, mean_r, ratio = headline["judgement"], headline["random"], headline["label_ratio"]
    for name, mean in (("judgement", mean_j), ("random", mean_r)):
        if mean is None:
            notes.append(f"the {name} strategy did not reach kpt_oks_map50 >= {target} in every seed: "
                         f"labels_to_target_{name} is null")
    if ratio is None:
        notes.append("label_ratio is null because a strategy never reached the target; see label_ratio_by_target "
                     "for lower targets, or use larger sizes (more --rounds/--epochs/--pool)")
    if headline.get("label_ratio_at_most") is not None:
        notes.append(f"every judgement run reached the target but not every random run: label_ratio is at most "
                     f"{headline['label_ratio_at_most']} (the random runs' labels spent stand in for theirs)"
                     + (f", which meets the goal of {LABEL_RATIO_GOAL}" if goal_met(headline) else ""))
    plot = plot_label_savings(per_seed, target, Path(args.plot)) if args.plot and per_seed else None
    share = people / seen if seen else 1.0
    per_image_s = compute_s / seen if seen else 0.0
    ladder = sorted({round(x / 10, 2) for x in range(1, 10)} | {target})
    return {
        "bench": "active-learning",
        "quick": bool(args.quick),
        "seeds": seeds,
        "sizes": sizes,
        "jobs": jobs,
        "target_kpt_oks_map50": target,
        "label_ratio": ratio,
        # when only the random runs fell short of the target: the ratio is below this bound
        "label_ratio_at_most": headline.get("label_ratio_at_most"),
        "label_ratio_goal": LABEL_RATIO_GOAL,
        # true / false when the ratio or its bound settles it; null when neither does
        "label_ratio_goal_met": goal_met(headline),
        "labels_to_target_judgement": mean_j,
        "labels_to_target_random": mean_r,
        "label_ratio_by_target": {str(t): ratio_at(per_seed, t) for t in ladder},
        "auto_label_precision": {name: score_diagnostics(o)["precision"] for name, o in outcomes.items()},
        "auto_labeled_images_checked": {name: len(o) for name, o in outcomes.items()},
        # The random strategy auto-labels images of every score, so its auto-labels show how well the score
        # separates right from wrong labels over the whole range (judgement's only cover its least doubtful).
        "judgement_score": score_diagnostics(outcomes["random"]),
        "human_share": args.human_share,
        "human_share_after_cold_start": round(share, 4),
        "cost_per_100k_images": cost_per_100k(share, per_image_s, settings.cost.human_price_per_task,
                                              settings.cost.compute_price_per_hour),
        # wall seconds of the Infer and training steps per uploaded image, with threads_per_run threads each
        "compute_seconds_per_image": round(per_image_s, 4),
        "threads_per_run": tasks[0].threads if tasks and tasks[0].threads else "every core",
        "per_seed": per_seed,
        "notes": notes,
        "plot": str(plot) if plot else None,
        "seconds": round(time.monotonic() - started, 1),
    }


def _main(args: argparse.Namespace) -> int:
    try:
        result = run_bench(args)
    except RunFailed as exc:
        print(f"alp bench active-learning: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"label_ratio={result['label_ratio']} (at most {result['label_ratio_at_most']}; goal "
              f"{result['label_ratio_goal']} met: {result['label_ratio_goal_met']}) (judgement {result['labels_to_target_judgement']} vs random "
              f"{result['labels_to_target_random']} labels to kpt_oks_map50>={result['target_kpt_oks_map50']}); "
              f"auto_label_precision={result['auto_label_precision']}; "
              f"cost/100k={result['cost_per_100k_images']}")
        for note in result["notes"]:
            print(f"note: {note}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("active-learning", help="label savings: judgement vs random selection")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    parser.add_argument("--quick", action="store_true", help="a small version (1 seed, tiny images)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3; --quick 1)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--pool", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--imgsz", type=int, default=None)
    parser.add_argument("--seed-images", type=int, default=None, help="round 0's random seed set")
    parser.add_argument("--test-images", type=int, default=None, help="frozen test set size")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--human-share", type=float, default=0.5,
                        help="human budget per round, as a share of the round's batch (same for both strategies)")
    parser.add_argument("--target", type=float, default=None,
                        help="kpt_oks_map50 to reach (default: settings cost.target_kpt_oks_map50)")
    parser.add_argument("--plot", default=None, help="write a PNG of both strategies' learning curves here")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs (seed x strategy) at once, each in its own process with cores/jobs threads "
                             "(default 1; on many cores, up to 2 x seeds)")
    parser.add_argument("--run-dir", default=None, help="keep the runs here (default: a temp folder, deleted)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    parser.add_argument("--resume", action="store_true",
                        help="go on with the bench in --run-dir (same flags): finished runs are read back, "
                             "interrupted ones go on from their last finished round")
    parser.set_defaults(func=_main)
