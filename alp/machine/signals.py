"""Signals during a run: SIGTERM stops like Ctrl-C, and a block that must not stop half-way holds both."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()  # only it may install handlers


def raise_interrupt(signum: int, frame: object) -> None:
    """A signal handler: unwind as Ctrl-C does (servers stopped, finished work kept)."""
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt, so a stopped run unwinds as cleanly as Ctrl-C."""
    if not _on_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends (then they act): for work that must not stop half-way.

    The handlers are swapped for ones that only take note, rather than the signals masked: a mask holds
    for the main thread alone, and moto's server and the thread pools would take the signal instead."""
    if not _on_main_thread():
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
