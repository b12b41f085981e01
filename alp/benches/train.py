"""``alp bench train``: seconds per epoch and peak memory of the three models at several input sizes.

Each measurement runs in its own process (so its peak RSS is its own) on a drawn dataset version
prepared exactly as the training pipeline prepares one. Seconds per epoch are timed from ultralytics'
epoch-start to epoch-end callbacks (training only, validation excluded), taking the fastest epoch after
the first (which pays for warm-up). Same-run baselines: every size is also given as a ratio to the
smallest, and one configuration is repeated with ultralytics' default thread count on this machine
(``min(8, cores - 1)``) against the pipeline's setting (every core). How time grows with the number of
images is fitted as seconds per epoch per image.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from alp.benches.arguments import add_bench, options_from

MODELS = ("head", "pose_main", "pose_visible")
IMAGE_SIZE = (640, 480)


class TrainBenchOptions(BaseModel):
    quick: bool = Field(False, description="160 and 320 px, 16 images")
    sizes: list[int] | None = Field(None, description="input sizes (default 160,320,640)")
    images: int | None = Field(None, ge=2, description="train images per measurement (default 32, quick 16)")
    epochs: int = Field(3, ge=1, description="epochs per measurement (>= 2: the first is warm-up)")
    batch: int = Field(8, ge=1)
    timeout: int = Field(900, ge=1, description="seconds one measurement may take")


class MeasurementSpec(BaseModel):
    """One training measurement, as the parent hands it to the worker process."""

    model: str
    imgsz: int
    images: int
    threads: int
    epochs: int
    batch: int
    yaml: str
    work: str


class Measurement(BaseModel):
    model: str
    imgsz: int
    images: int
    threads: int
    batch: int
    epochs: int
    seconds_per_epoch: float
    first_epoch_seconds: float
    peak_rss_mb: float
    rss_after_import_mb: float
    ratio_to_smallest_size: float | None = None


class Machine(BaseModel):
    cores: int
    python: str


class MeasuredSettings(BaseModel):
    epochs: int
    batch: int
    images: int
    image_size: list[int] = list(IMAGE_SIZE)
    architecture: str = "yolo11n"
    timing: str = "fastest epoch after the first, training only"


class ScalingPoint(BaseModel):
    images: int
    seconds_per_epoch: float


class ImageScaling(BaseModel):
    model: str
    imgsz: int
    points: list[ScalingPoint]
    seconds_per_epoch_per_image: float


class ThreadsBaseline(BaseModel):
    what: str
    ultralytics_default_seconds_per_epoch: float
    pipeline_seconds_per_epoch: float
    speedup: float | None


class TrainBenchResult(BaseModel):
    bench: Literal["train"] = "train"
    quick: bool
    machine: Machine
    settings: MeasuredSettings
    runs: list[Measurement]
    image_scaling: ImageScaling
    baseline: ThreadsBaseline
    wall_seconds: float


def _worker(spec: MeasurementSpec) -> Measurement:
    """One training measurement (runs in a child process)."""
    from alp.torch_compat import prepare_ultralytics

    work = Path(spec.work)
    prepare_ultralytics(work / "ultralytics", threads=spec.threads)
    from ultralytics import YOLO  # type: ignore[attr-defined]

    rss_after_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    arch = f"yolo11n{'' if spec.model == 'head' else '-pose'}.yaml"
    model = YOLO(arch, task="detect" if spec.model == "head" else "pose")
    epoch_times: list[float] = []
    started: dict[str, float] = {}
    model.add_callback("on_train_epoch_start", lambda trainer: started.__setitem__("t", time.perf_counter()))
    model.add_callback("on_train_epoch_end", lambda trainer: epoch_times.append(time.perf_counter() - started["t"]))
    model.train(data=spec.yaml, epochs=spec.epochs, imgsz=spec.imgsz, batch=spec.batch, device="cpu",
                workers=0, plots=False, val=False, seed=0, deterministic=True, project=str(work / "runs"),
                name=f"{spec.model}-{spec.imgsz}", exist_ok=True, verbose=False, amp=False)
    steady = epoch_times[1:] or epoch_times
    return Measurement(
        model=spec.model, imgsz=spec.imgsz, images=spec.images, threads=spec.threads, batch=spec.batch,
        epochs=spec.epochs, seconds_per_epoch=round(min(steady), 3), first_epoch_seconds=round(epoch_times[0], 3),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        rss_after_import_mb=round(rss_after_import, 1),
    )


def _run_worker(spec: MeasurementSpec, timeout: int) -> Measurement:
    proc = subprocess.run([sys.executable, "-m", "alp.benches.train", "--worker", spec.model_dump_json()],
                          capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker failed ({spec.model} @ {spec.imgsz}): {proc.stderr[-2000:]}")
    return Measurement.model_validate_json(proc.stdout.strip().splitlines()[-1])


def _prepared(root: Path, images: int) -> dict[str, str]:
    """A drawn dataset version of ``images`` train images (640x480), prepared; returns the model YAMLs."""
    from alp.settings import Settings
    from training.prepare import prepare_training
    from training.sample_data import write_sample_version

    settings = Settings()
    version = write_sample_version(str(root / f"data{images}"), settings, n_train=images, n_val=0, n_test=0,
                                   img_w=IMAGE_SIZE[0], img_h=IMAGE_SIZE[1])
    prepare_training(version, str(root / f"yolo{images}"), settings)
    return {m: str(root / f"yolo{images}" / f"{m}.yaml") for m in MODELS}


def _slope(points: list[tuple[int, float]]) -> float:
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    den = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / den if den else 0.0


Measure = Callable[[str, int, int, int], Measurement]  # model, imgsz, images, threads


def _size_runs(measure: Measure, sizes: list[int], images: int, cores: int) -> list[Measurement]:
    """Every model at every size, each with its ratio to the same model at the smallest size."""
    runs = [measure(m, s, images, cores) for s in sizes for m in MODELS]
    smallest = {r.model: r.seconds_per_epoch for r in runs if r.imgsz == sizes[0]}
    for r in runs:
        base = smallest[r.model]
        r.ratio_to_smallest_size = round(r.seconds_per_epoch / base, 2) if base else None
    return runs


def _image_scaling(measure: Measure, at: Measurement, counts: list[int], cores: int) -> ImageScaling:
    """pose_main at the smallest size on more and fewer images than ``at``; the slope of time over images."""
    scaling = [measure(at.model, at.imgsz, n, cores) for n in counts if n != at.images]
    scaling.append(at)
    scaling.sort(key=lambda r: r.images)
    return ImageScaling(
        model=at.model, imgsz=at.imgsz,
        points=[ScalingPoint(images=r.images, seconds_per_epoch=r.seconds_per_epoch) for r in scaling],
        seconds_per_epoch_per_image=round(_slope([(r.images, r.seconds_per_epoch) for r in scaling]), 4))


def _threads_baseline(measure: Measure, ours: Measurement, cores: int) -> ThreadsBaseline:
    """The same measurement with ultralytics' default thread count against the pipeline's (every core)."""
    default_threads = max(1, min(8, cores - 1))
    baseline = measure(ours.model, ours.imgsz, ours.images, default_threads)
    return ThreadsBaseline(
        what=f"{ours.model} @ {ours.imgsz} px with ultralytics' default {default_threads} thread(s) vs {cores}",
        ultralytics_default_seconds_per_epoch=baseline.seconds_per_epoch,
        pipeline_seconds_per_epoch=ours.seconds_per_epoch,
        speedup=round(baseline.seconds_per_epoch / ours.seconds_per_epoch, 2) if ours.seconds_per_epoch else None)


def run_train_bench(options: TrainBenchOptions) -> TrainBenchResult:
    cores = os.cpu_count() or 1
    sizes = options.sizes or ([160, 320] if options.quick else [160, 320, 640])
    n_images = options.images or (16 if options.quick else 32)
    scaling_counts = [n_images // 2, n_images] if options.quick else [n_images // 2, n_images, n_images * 2]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="alp-bench-train-") as tmp:
        root = Path(tmp)
        yamls = {n: _prepared(root, n) for n in sorted(set(scaling_counts) | {n_images})}

        def measure(model: str, imgsz: int, count: int, threads: int) -> Measurement:
            spec = MeasurementSpec(model=model, imgsz=imgsz, images=count, threads=threads, epochs=options.epochs,
                                   batch=options.batch, yaml=yamls[count][model], work=str(root / "work"))
            return _run_worker(spec, options.timeout)

        runs = _size_runs(measure, sizes, n_images, cores)
        ours = next(r for r in runs if r.model == "pose_main" and r.imgsz == sizes[0])
        scaling = _image_scaling(measure, ours, scaling_counts, cores)
        baseline = _threads_baseline(measure, ours, cores)
    return TrainBenchResult(
        quick=options.quick, machine=Machine(cores=cores, python=sys.version.split()[0]),
        settings=MeasuredSettings(epochs=options.epochs, batch=options.batch, images=n_images),
        runs=runs, image_scaling=scaling, baseline=baseline, wall_seconds=round(time.perf_counter() - t0, 1))


def _main(args: argparse.Namespace) -> int:
    result = run_train_bench(options_from(args, TrainBenchOptions))
    if args.json:
        print(json.dumps(result.model_dump(mode="json")))
        return 0
    for r in result.runs:
        print(f"{r.model:<13} {r.imgsz:>4} px  {r.seconds_per_epoch:>7.2f} s/epoch "
              f"(x{r.ratio_to_smallest_size})  peak {r.peak_rss_mb:.0f} MB")
    sc = result.image_scaling
    print(f"time per epoch grows by {sc.seconds_per_epoch_per_image:.3f} s per image ({sc.model} @ {sc.imgsz})")
    print(f"threads: {result.baseline.what}: speedup x{result.baseline.speedup}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    add_bench(subparsers, "train", help="training seconds per epoch and peak memory (160/320/640 px)",
              options=TrainBenchOptions, main=_main, json_help="one line of JSON")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(_worker(MeasurementSpec.model_validate_json(sys.argv[2])).model_dump_json())
    else:
        raise SystemExit("usage: python -m alp.benches.train --worker '<json spec>' (use `alp bench train`)")
