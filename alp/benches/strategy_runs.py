"""The label-savings bench's runs: one whole demo loop per seed and strategy, here or in worker processes.

A run is :func:`alp.demo.runner.run_demo` with the strategy's router swapped in after the Infer step, in its
own run folder (a stopped bench resumes from it). With ``jobs > 1`` each run gets a worker process of its
own and one log file; the first failed run stops the bench, naming its log.
"""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from alp.machine.signals import sigterm_as_interrupt

if TYPE_CHECKING:
    from alp.demo.data import SharedData
    from alp.demo.state import DemoConfig, RoundRecord
    from inference.budget import Strategy


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

    @property
    def key(self) -> tuple[int, str]:
        return self.seed, self.strategy

    def describe(self) -> str:
        return f"seed {self.seed}: {self.strategy} strategy, {self.budget} human labels per round"


WORKER_STOP_GRACE_SECONDS = 60.0


class RunFailed(RuntimeError):
    """One seed x strategy run failed; the message names its log."""


def run_strategy(task: StrategyRun) -> list[RoundRecord]:
    """Run one seed under one strategy; returns its round records. Top-level so a worker process can run it."""
    from alp import storage
    from alp.demo.runner import DemoOptions, run_demo
    from alp.settings import Settings
    from inference.budget import reroute_batch

    def router(batch_dir: str, rnd: int, run_settings: Settings) -> dict[str, int]:
        return reroute_batch(storage.join(batch_dir, "inference/"), task.budget, task.strategy,
                             task.seed * 1000 + rnd, run_settings)

    options = DemoOptions(run_dir=task.run_dir, fresh=not task.resume, config=task.config, progress=False,
                          data=task.data, threads=task.threads, resource_prefix=f"alp{task.strategy[0]}",
                          report=False, reroute=router, start_over="run the bench without --resume")
    if task.log_path is None:
        return run_demo(options).rows
    # A worker stopped by the bench (SIGTERM) unwinds like Ctrl-C: the running step's process is killed and
    # the embedded AWS stopped.
    with sigterm_as_interrupt(), open(task.log_path, "a" if task.resume else "w", encoding="utf-8") as log, \
            contextlib.redirect_stdout(log):
        try:
            return run_demo(options).rows
        except BaseException:
            traceback.print_exc(file=log)  # the log is all a worker leaves behind
            raise


def _run_in_worker(task: StrategyRun) -> tuple[StrategyRun, list[RoundRecord]]:
    try:
        return task, run_strategy(task)
    except KeyboardInterrupt:
        raise SystemExit(130) from None  # stopped by the bench or Ctrl-C: the run's log has the traceback
    except Exception as exc:  # re-raised in the bench process, which stops the other runs
        raise RunFailed(f"seed {task.seed} {task.strategy} failed ({type(exc).__name__}: {exc}); "
                        f"see {task.log_path}") from None


def run_all(tasks: list[StrategyRun], jobs: int, log: TextIO = sys.stdout) -> dict[tuple[int, str], list[RoundRecord]]:
    """Every task's round records: one after another here, or ``jobs`` worker processes at a time.

    The first failed run stops the bench at once: its log is named, the other workers are stopped.
    """
    if jobs <= 1:
        return _run_here(tasks, log)
    with sigterm_as_interrupt():  # a stopped bench stops its workers too
        return _run_in_workers(tasks, jobs, log)


def _run_here(tasks: list[StrategyRun], log: TextIO) -> dict[tuple[int, str], list[RoundRecord]]:
    done: dict[tuple[int, str], list[RoundRecord]] = {}
    for task in tasks:
        print(f"[bench] {task.describe()}", file=log, flush=True)
        try:
            with contextlib.redirect_stdout(log):
                done[task.key] = run_strategy(task)
        except Exception as exc:
            raise RunFailed(f"seed {task.seed} {task.strategy} failed ({type(exc).__name__}: {exc}); its "
                            f"steps' output is in {task.run_dir / 'logs'}") from exc
    return done


def _run_in_workers(tasks: list[StrategyRun], jobs: int, log: TextIO) -> dict[tuple[int, str], list[RoundRecord]]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    # spawn, not fork: a forked torch with live thread pools can hang, and every run sets its own
    # environment; one task per worker, so no library keeps a handle on the previous run's log. An executor,
    # not a multiprocessing.Pool: a worker killed from outside (out of memory) breaks it and the bench stops
    # with an error, where a Pool would wait for that task for ever.
    executor = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                   max_tasks_per_child=1)
    for task in tasks:
        print(f"[bench] {task.describe()} -> log {task.log_path}", file=log, flush=True)
    futures = {executor.submit(_run_in_worker, task): task for task in tasks}
    done: dict[tuple[int, str], list[RoundRecord]] = {}
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
                    logs = ", ".join(str(t.log_path) for t in futures.values() if t.key not in done)
                    raise RunFailed("a worker process died without a word (killed from outside, e.g. out of "
                                    f"memory); the unfinished runs' logs: {logs}") from None
                except (SystemExit, KeyboardInterrupt):
                    raise RunFailed(f"seed {task.seed} {task.strategy} was stopped from outside (SIGTERM or "
                                    f"Ctrl-C in its worker); see {task.log_path}") from None
                done[task.key] = rows
                last = rows[-1] if rows else None
                print(f"[bench] seed {task.seed} {task.strategy}: {len(rows)} round(s) done"
                      + (f", last kpt_oks_map50={last.kpt_oks_map50}" if last else "")
                      + f" ({len(done)}/{len(tasks)} runs)", file=log, flush=True)
    except BaseException:
        # stop now rather than wait for the other runs: SIGTERM unwinds each worker like Ctrl-C; one still
        # unwinding after the grace period (stuck stopping its embedded AWS, say) is killed, so the bench never
        # waits for ever (the run's folder keeps what it finished: --resume goes on from there)
        for future in futures:
            future.cancel()
        children = multiprocessing.active_children()
        for child in children:
            child.terminate()
        deadline = time.monotonic() + WORKER_STOP_GRACE_SECONDS
        for child in children:
            child.join(max(0.0, deadline - time.monotonic()))
            if child.is_alive():
                child.kill()
                child.join(5)
        raise
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return done
