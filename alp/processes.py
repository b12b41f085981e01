"""Background processes this machine's commands start (Label Studio, a local project's runner), found by process id.

A process is stopped by its id, never by its name, and with its whole process group (it was started in a session
of its own, with the workers it forks): SIGTERM, a grace period, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time


def alive(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie (exited, not yet reaped by the process that started it) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # no /proc (not Linux): the signal answered
        return True


def reap(pid: int) -> None:
    """Collect the exit status when this process started ``pid`` (no zombie keeps the id taken)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_group(pid: int, *, timeout_seconds: float) -> bool:
    """SIGTERM to ``pid``'s process group, SIGKILL after ``timeout_seconds``; False when it was gone already."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline and alive(pid):
        reap(pid)
        time.sleep(0.2)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        reap(pid)
    return True
