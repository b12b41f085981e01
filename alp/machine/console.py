"""What the demo shows on the console: one line per event, and progress bars (uploads, a running step's tasks).

The bars go to stderr and vanish when done (``leave=False``); the lines go to stdout, so a log of the run
reads as the lines alone.
"""

from __future__ import annotations

import sys
from typing import Any


def say(message: str) -> None:
    print(message, flush=True)


def upload_bar(total: int, desc: str, *, enabled: bool) -> Any:
    """A bar over ``total`` images (disabled: a no-op bar)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, leave=False, file=sys.stderr)


def rounds_bar(total: int, done: int, *, enabled: bool) -> Any:
    """A bar over the run's rounds, starting at the rounds a resumed run already has."""
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc="rounds", unit="round", disable=not enabled, file=sys.stderr)


class StepBars:
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
