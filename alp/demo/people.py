"""``alp demo --workforce studio``: people do the human part of each round in a real Label Studio.

The demo starts Label Studio on 127.0.0.1 (``alp studio up`` in the run folder), prints where to log in, and
each round's labeling pipeline ends with its batch waiting, as in the cloud. The round then waits for the
people, with a progress line of tasks done, and runs the completion pipeline each time a job is finished.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from alp.labeling.label_studio import STUDIO_FILE_ENV, LabelStudioBackend
from alp.labeling.workflow import read_summary
from alp.machine.pipeline import MachinePipeline
from alp.settings import Settings
from alp.studio.server import STUDIO_FILE, StudioConnection, stop_server


class PeopleAtWork:
    """Waits for the people labeling a batch in Label Studio."""

    def __init__(self, settings: Settings, connection: StudioConnection, *, poll_seconds: float = 2.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.backend = LabelStudioBackend(settings, connection=connection)
        self.connection = connection
        self.poll_seconds = poll_seconds
        self.sleep = sleep

    def finished(self, batch_dir: str) -> bool:
        """False while the batch waits on a job people have not finished (blocks, with a progress line, until
        they do); True when the batch's labeling is complete."""
        summary = read_summary(batch_dir)
        if summary is None or summary.state == "complete":
            return True
        last = ""
        while (waiting := MachinePipeline.waiting(batch_dir, self.backend)) is not None:
            job, status = waiting.job, waiting.status
            project = self.connection.projects.get("heads" if job.kind == "head-boxes" else "keypoints")
            where = f"{self.connection.url}/projects/{project}/data" if project else self.connection.url
            line = f"  people: {job.kind} {status.labeled or 0}/{status.total or 0} tasks done at {where}"
            if line != last:
                print("\r" + line, end="", file=sys.stderr, flush=True)
                last = line
            self.sleep(self.poll_seconds)
        print(file=sys.stderr)
        return False  # the job is done: the completion pipeline takes it from here


def start_people(run_root: Path, settings: Settings, *, port: int, say: Callable[[str], None],
                 studio_file: Path | None = None) -> PeopleAtWork:
    """Label Studio for the demo's people: the one ``studio_file`` describes (started by ``alp studio up``), or
    one this run starts in its folder. ``ALP_STUDIO_FILE`` points the steps at it."""
    from alp.labeling.label_studio import studio_up

    if studio_file is None:
        studio_file = run_root / "studio" / STUDIO_FILE
        connection = studio_up(studio_file.parent, settings, port=port, say=say)
    else:
        connection = StudioConnection.read(studio_file)
    os.environ[STUDIO_FILE_ENV] = str(studio_file)
    say(f"Label Studio at {connection.url}: log in as {connection.username} (the password is in "
        f"{studio_file}); each round waits for the tasks there")
    return PeopleAtWork(settings, connection)


def stop_people(run_root: Path) -> None:
    """Stop the Label Studio this run started (one given with --studio-file keeps running)."""
    stop_server(run_root / "studio")
