"""``alp bench local``: seconds from ``alp local up`` on a folder of frames to the first prefilled task.

A new project each run, as a new user's: import (every frame decoded once), the zero-shot bundle built from the
COCO-pose checkpoint (the ONNX export), the embedded AWS from the synthesized stack (cached between runs, as for a
user), Label Studio started (installed beforehand: installing it is a one-time download of minutes), round 0's
frames through the Infer step, the head-box tasks imported with their proposals. The frames are synthetic in-cabin
frames (``alp.synth``). Same-run baseline: decoding every frame once (what the import alone must pay).
Target on 2 cores: the first task within 120 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from alp.benches.arguments import add_bench, options_from

TARGET_SECONDS = 120.0


class LocalBenchOptions(BaseModel):
    frames: int = Field(200, ge=1, description="synthetic frames in the imported folder")
    first_round: int = Field(20, ge=1, description="frames of round 0 (alp local up --first-round)")
    width: int = Field(640, ge=32)
    height: int = Field(480, ge=32)
    seed: int = 0
    work_dir: str | None = Field(None, description="where the frames and the project go (default: a temp folder, "
                                                   "removed after)")


class LocalBenchResult(BaseModel):
    bench: Literal["local"] = "local"
    frames: int
    first_round: int
    seconds_to_first_task: float
    first_tasks: int
    prefilled_tasks: int
    zero_shot_ms_per_image: float | None
    zero_shot_imgsz: int
    baseline: str = "decoding every frame once"
    baseline_seconds: float
    ratio_to_baseline: float | None
    target_seconds: float = TARGET_SECONDS
    target_met: bool
    cpu_count: int | None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _decode_all(folder: Path) -> float:
    from alp.settings import Settings
    from inference.image_io import decode_image

    limits = Settings().inference
    t0 = time.perf_counter()
    for path in sorted(folder.rglob("*.jpg")):
        decode_image(path.read_bytes(), max_pixels=limits.max_image_pixels, min_side=limits.min_image_side)
    return time.perf_counter() - t0


def _zero_shot_ms(project: Path) -> float | None:
    """The Infer step's model milliseconds per image of round 0, from its summary in the copy of the buckets."""
    for summary in (project / "aws" / "s3").glob("*-data/objects/batches/*/inference/summary.json"):
        data = json.loads(summary.read_text())
        timings, inputs = data.get("timings") or {}, data.get("inputs") or 0
        if data.get("zero_shot") and inputs and "total_s" in timings:
            return round(1000.0 * float(timings["total_s"]) / inputs, 1)
    return None


def run_local_bench(options: LocalBenchOptions) -> LocalBenchResult:
    from alp.cli import main
    from alp.local.project import LocalConfig
    from alp.studio.server import StudioConnection
    from alp.synth import generate_dataset

    work = Path(options.work_dir) if options.work_dir else Path(tempfile.mkdtemp(prefix="alp-bench-local-"))
    frames, project = work / "frames", work / "project"
    shutil.rmtree(project, ignore_errors=True)
    try:
        if not frames.is_dir() or len(list(frames.rglob("*.jpg"))) != options.frames:
            shutil.rmtree(frames, ignore_errors=True)
            generate_dataset(str(frames), options.frames, options.seed, size=(options.width, options.height),
                             progress=False)
            (frames / "manifest.jsonl").unlink(missing_ok=True)  # the frames alone, as a camera folder holds them
        baseline = _decode_all(frames)
        t0 = time.monotonic()
        with contextlib.redirect_stdout(sys.stderr):  # stdout holds the bench's JSON alone
            rc = main(["local", "up", "--images", str(frames), "--project-dir", str(project), "--port", str(_free_port()),
                       "--first-round", str(options.first_round)])
        seconds = time.monotonic() - t0
        if rc != 0:
            raise RuntimeError(f"alp local up exited with {rc}; the runner's log: {project / 'runner.log'}")
        connection = StudioConnection.read(project / "studio" / "studio.json")
        with connection.client() as client:
            tasks = list(client.tasks(connection.projects["heads"]))
            prefilled = sum(1 for t in tasks
                            if client.request("GET", f"/api/tasks/{t.id}/", params={"fields": "all"}).get("predictions"))
        return LocalBenchResult(
            frames=options.frames, first_round=options.first_round, seconds_to_first_task=round(seconds, 1),
            first_tasks=len(tasks), prefilled_tasks=prefilled, zero_shot_ms_per_image=_zero_shot_ms(project),
            zero_shot_imgsz=LocalConfig().zero_shot_imgsz, baseline_seconds=round(baseline, 2),
            ratio_to_baseline=round(seconds / baseline, 1) if baseline > 0 else None,
            target_met=seconds <= TARGET_SECONDS and prefilled > 0, cpu_count=os.cpu_count())
    finally:
        with contextlib.redirect_stdout(sys.stderr):
            main(["local", "down", "--project-dir", str(project)])
        if not options.work_dir:
            shutil.rmtree(work, ignore_errors=True)


def _main(args: argparse.Namespace) -> int:
    result = run_local_bench(options_from(args, LocalBenchOptions)).model_dump(mode="json")
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    add_bench(subparsers, "local", help="seconds from `alp local up` on 200 frames to the first prefilled task",
              options=LocalBenchOptions, main=_main, json_help="one line of JSON")
