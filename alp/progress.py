"""Progress of long work inside a step, for a runner that shows it (the demo's console bars).

A step reports ``(task, done, total, unit)`` (the Train step: each model's epochs). In the cloud nobody
listens and a report costs one lookup; CodeBuild logs the step's own output. The local runner listens while a
step runs, in-process, and draws one bar per task on the console while the step's output goes to its log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

Listener = Callable[[str, int, int, str], None]
_listener: ContextVar[Listener | None] = ContextVar("alp_progress_listener", default=None)


def report(task: str, done: int, total: int, unit: str = "it") -> None:
    """``done`` of ``total`` units of ``task`` are finished (tell whoever listens; nobody may)."""
    listener = _listener.get()
    if listener is not None:
        listener(task, done, total, unit)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Send the reports made inside the block (this thread and context) to ``listener``."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)
