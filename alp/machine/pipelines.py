"""A declared pipeline (:mod:`alp.steps`) run step by step in this process, as the CodeBuild actions run it.

Each step's own output (JSON, logs, tracebacks) goes to the round's log file; the console gets one line per
step and a bar per task the step reports progress on.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

from alp import progress
from alp.machine.console import StepBars, say
from alp.steps import PIPELINES, Step, run_step


class StepFailed(RuntimeError):
    """A pipeline step exited non-zero; the message names its log file."""


def run_pipeline_steps(spec_name: str, variables: dict[str, str], *, log_path: Path, timings: dict[str, float],
                       show_progress: bool, after_step: Callable[[Step], None] | None = None) -> None:
    """Every step of the declared pipeline, in order, through the CLI (what :func:`run_pipeline` does),
    timing each into ``timings``; ``after_step`` lets the label-savings bench swap the router between Infer
    and Label. Raises :class:`StepFailed` (naming the log) for a failed step, KeyboardInterrupt for a
    step stopped by Ctrl-C."""
    spec = PIPELINES[spec_name]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for step in spec.steps:
        say(f"  [{spec.name}] {step.name}: {step.description}")
        t0 = time.monotonic()
        bars = StepBars(sys.stderr, enabled=show_progress)  # the console, before the redirect
        with _output_to(log_path), progress.listening(bars), contextlib.closing(bars):
            print(f"===== {spec.name}/{step.name} {variables}", flush=True)
            rc = _exit_code(spec_name, step.name, variables)
        seconds = round(time.monotonic() - t0, 2)
        timings[f"{spec.name}/{step.name}"] = seconds
        if rc == 130:  # the CLI turned a Ctrl-C inside the step into its exit code
            raise KeyboardInterrupt
        if rc != 0:
            tail = "\n".join(log_path.read_text(encoding="utf-8").splitlines()[-15:])
            raise StepFailed(f"step {spec.name}/{step.name} failed (exit code {rc}); its output is in "
                             f"{log_path}; last lines:\n{tail}")
        say(f"      done in {seconds:.1f}s")
        if after_step is not None:
            after_step(step)


def _exit_code(spec_name: str, step_name: str, variables: dict[str, str]) -> int:
    try:
        return run_step(spec_name, step_name, variables)
    except Exception:
        traceback.print_exc()
        return 1


@contextlib.contextmanager
def _output_to(log_path: Path) -> Iterator[None]:
    """stdout, stderr and the logging handlers a step adds, into ``log_path`` for the block."""
    root = logging.getLogger()
    handlers_before = list(root.handlers)
    with log_path.open("a", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        try:
            yield
        finally:
            # A step that calls logging.basicConfig binds a handler to the redirected stream; drop it before
            # that file closes (in the cloud each step is its own process).
            for handler in list(root.handlers):
                if handler not in handlers_before:
                    root.removeHandler(handler)
