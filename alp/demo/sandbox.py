"""The environment of a demo run: every write of the run (cwd, temp files, tool caches, metrics) in its folder."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from alp.demo.state import RunFolder
from alp.environment import patched_environ
from alp.labeling.label_studio import STUDIO_FILE_ENV
from alp.observability import METRICS_LOG_ENV
from alp.settings import SETTINGS_ENV
from alp.steps import DATA_ROOT_ENV


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
    # SETTINGS_ENV, DATA_ROOT_ENV and STUDIO_FILE_ENV are set later in the run; listed here so they are restored too
    with patched_environ({SETTINGS_ENV: os.environ.get(SETTINGS_ENV), DATA_ROOT_ENV: os.environ.get(DATA_ROOT_ENV),
                          STUDIO_FILE_ENV: os.environ.get(STUDIO_FILE_ENV), **values}):
        tempfile.tempdir = str(tmp)
        os.chdir(folder.root)  # tools that write relative to the cwd (ultralytics' runs/) write here
        try:
            yield
        finally:
            os.chdir(saved_cwd)
            tempfile.tempdir = saved_tempdir
