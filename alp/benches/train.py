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
from pathlib import Path
from typing import Any

MODELS = ("head", "pose_main", "pose_visible")


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One training measurement (runs in a child process)."""
    from alp.torch_compat import prepare_ultralytics

    work = Path(spec["work"])
    prepare_ultralytics(work / "ultralytics", threads=spec["threads"])
    from ultralytics import YOLO  # type: ignore[attr-defined]

    rss_after_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model_name = spec["model"]
    arch = f"yolo11n{'' if model_name == 'head' else '-pose'}.yaml"
    model = YOLO(arch, task="detect" if model_name == "head" else "pose")
    epoch_times: list[float] = []
    started: dict[str, float] = {}
    model.add_callback("on_train_epoch_start", lambda trainer: started.__setitem__("t", time.perf_counter()))
    model.add_callback("on_train_epoch_end", lambda trainer: epoch_times.append(time.perf_counter() - started["t"]))
    model.train(data=spec["yaml"], epochs=spec["epochs"], imgsz=spec["imgsz"], batch=spec["batch"], device="cpu",
                workers=0, plots=False, val=False, seed=0, deterministic=True, project=str(work / "runs"),
                name=f"{model_name}-{spec['imgsz']}", exist_ok=True, verbose=False, amp=False)
    steady = epoch_times[1:] or epoch_times
    return {
        "model": model_name, "imgsz": spec["imgsz"], "images": spec["images"], "threads": spec["threads"],
        "batch": spec["batch"], "epochs": spec["epochs"],
        "seconds_per_epoch": round(min(steady), 3),
        "first_epoch_seconds": round(epoch_times[0], 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_import_mb": round(rss_after_import, 1),
    }


def _run_worker(spec: dict[str, Any], timeout: int) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "alp.benches.train", "--worker", json.dumps(spec)],
                          capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker failed ({spec['model']} @ {spec['imgsz']}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _prepared(root: Path, images: int) -> dict[str, str]:
    """A drawn dataset version of ``images`` train images (640x480), prepared; returns the model YAMLs."""
    from alp.settings import Settings
    from training.prepare import prepare_training
    from training.sample_data import write_sample_version

    settings = Settings()
    version = write_sample_version(str(root / f"data{images}"), settings, n_train=images, n_val=0, n_test=0,
                                   img_w=640, img_h=480)
    prepare_training(version, str(root / f"yolo{images}"), settings)
    return {m: str(root / f"yolo{images}" / f"{m}.yaml") for m in MODELS}


def _slope(points: list[tuple[int, float]]) -> float:
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    den = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / den if den else 0.0


def run_bench(*, quick: bool, sizes: list[int] | None = None, images: int | None = None, epochs: int = 3,
              batch: int = 8, timeout: int = 900) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    sizes = sizes or ([160, 320] if quick else [160, 320, 640])
    n_images = images or (16 if quick else 32)
    scaling_counts = [n_images // 2, n_images, n_images * 2] if not quick else [n_images // 2, n_images]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="alp-bench-train-") as tmp:
        root = Path(tmp)
        yamls = {n: _prepared(root, n) for n in sorted(set(scaling_counts) | {n_images})}

        def measure(model: str, imgsz: int, count: int, threads: int) -> dict[str, Any]:
            spec = {"model": model, "imgsz": imgsz, "images": count, "threads": threads, "epochs": epochs,
                    "batch": batch, "yaml": yamls[count][model], "work": str(root / "work")}
            return _run_worker(spec, timeout)

        runs = [measure(m, s, n_images, cores) for s in sizes for m in MODELS]
        by_key = {(r["model"], r["imgsz"]): r for r in runs}
        for r in runs:
            base = by_key[(r["model"], sizes[0])]["seconds_per_epoch"]
            r["ratio_to_smallest_size"] = round(r["seconds_per_epoch"] / base, 2) if base else None
        scaling = [measure("pose_main", sizes[0], n, cores) for n in scaling_counts if n != n_images]
        scaling.append(by_key[("pose_main", sizes[0])])
        scaling.sort(key=lambda r: r["images"])
        slope = _slope([(r["images"], r["seconds_per_epoch"]) for r in scaling])
        ul_default_threads = max(1, min(8, cores - 1))
        baseline = measure("pose_main", sizes[0], n_images, ul_default_threads)
        ours = by_key[("pose_main", sizes[0])]
    return {
        "bench": "train",
        "quick": quick,
        "machine": {"cores": cores, "python": sys.version.split()[0]},
        "settings": {"epochs": epochs, "batch": batch, "images": n_images, "image_size": [640, 480],
                     "architecture": "yolo11n", "timing": "fastest epoch after the first, training only"},
        "runs": runs,
        "image_scaling": {
            "model": "pose_main", "imgsz": sizes[0],
            "points": [{"images": r["images"], "seconds_per_epoch": r["seconds_per_epoch"]} for r in scaling],
            "seconds_per_epoch_per_image": round(slope, 4),
        },
        "baseline": {
            "what": f"pose_main @ {sizes[0]} px with ultralytics' default {ul_default_threads} thread(s) vs {cores}",
            "ultralytics_default_seconds_per_epoch": baseline["seconds_per_epoch"],
            "pipeline_seconds_per_epoch": ours["seconds_per_epoch"],
            "speedup": round(baseline["seconds_per_epoch"] / ours["seconds_per_epoch"], 2)
            if ours["seconds_per_epoch"] else None,
        },
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }


def _bench(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    result = run_bench(quick=args.quick, sizes=sizes, images=args.images, epochs=args.epochs, batch=args.batch)
    if args.json:
        print(json.dumps(result))
    else:
        for r in result["runs"]:
            print(f"{r['model']:<13} {r['imgsz']:>4} px  {r['seconds_per_epoch']:>7.2f} s/epoch "
                  f"(x{r['ratio_to_smallest_size']})  peak {r['peak_rss_mb']:.0f} MB")
        sc = result["image_scaling"]
        print(f"time per epoch grows by {sc['seconds_per_epoch_per_image']:.3f} s per image ({sc['model']} @ {sc['imgsz']})")
        print(f"threads: {result['baseline']['what']}: speedup x{result['baseline']['speedup']}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("train", help="training seconds per epoch and peak memory (160/320/640 px)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quick", action="store_true", help="160 and 320 px, 16 images")
    p.add_argument("--sizes", help="comma-separated input sizes (default 160,320,640)")
    p.add_argument("--images", type=int, help="train images per measurement (default 32, quick 16)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per measurement (>= 2: the first is warm-up)")
    p.add_argument("--batch", type=int, default=8)
    p.set_defaults(func=_bench)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(_worker(json.loads(sys.argv[2]))))
    else:
        raise SystemExit("usage: python -m alp.benches.train --worker '<json spec>' (use `alp bench train`)")
