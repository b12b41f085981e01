"""``alp bench infer``: this engine against the usual torch path, in one process, on the same images.

Engine: read each file, decode and letterbox it once (rectangular, batched), run the three ONNX models
on that one tensor with onnxruntime (explicit threads, no spinning), decode with numpy.
Naive baseline: three ``YOLO(<.pt>).predict(<image file>, imgsz=...)`` calls per image, ultralytics'
defaults otherwise (each call re-reads and re-letterboxes the file; torch on the threads ultralytics
picks). Both use the same untrained models (built from the architecture YAMLs; the .pt files are
exported to ONNX for the engine), so the ratio measures the runtime, not the weights.

Both timings are per image (wall time of a pass over all images / images), the median over
``--repeats`` passes after one warm-up pass. ``same_persons`` compares what both paths found: with
untrained weights almost nothing passes the usual 0.25 threshold, so the comparison runs both at
``--compare-conf`` (default 0.01) and checks, per image and per pose model, that the top
``--compare-top`` persons agree in order (box IoU >= 0.9 and confidence within 0.02).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np


def _sample_images(count: int, dest: Path) -> list[Path]:
    import matplotlib
    import ultralytics

    assets = Path(ultralytics.__file__).parent / "assets"
    sources = [assets / "bus.jpg", assets / "zidane.jpg",
               Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"]
    sources = [s for s in sources if s.is_file()]
    if not sources:
        raise FileNotFoundError("no sample photos found in the ultralytics or matplotlib packages")
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        src = sources[i % len(sources)]
        target = dest / f"img{i:04d}{src.suffix}"
        shutil.copyfile(src, target)
        out.append(target)
    return out


def _agree(a_boxes: np.ndarray, a_conf: np.ndarray, b_boxes: np.ndarray, b_conf: np.ndarray, top: int) -> bool:
    from alp.geometry import box_iou

    n = min(top, len(a_conf))
    if min(top, len(b_conf)) != n:
        return False
    ia, ib = np.argsort(-a_conf, kind="stable")[:n], np.argsort(-b_conf, kind="stable")[:n]
    return all(box_iou(a_boxes[i], b_boxes[j]) >= 0.9 and abs(a_conf[i] - b_conf[j]) <= 0.02
               for i, j in zip(ia, ib, strict=True))


def run_bench(images: int, imgsz: int, repeats: int, batch: int, threads: int, compare_conf: float,
              compare_top: int, work: Path) -> dict[str, Any]:
    from alp.settings import Settings
    from alp.torch_compat import prepare_ultralytics
    from inference.engine import InferenceEngine
    from inference.image_io import decode_image
    from training.export import build_model, make_bundle, save_checkpoint

    prepare_ultralytics(work / "ultralytics")
    from ultralytics import YOLO  # type: ignore[attr-defined]

    settings = Settings().with_overrides({"inference.batch_size": batch, "inference.intra_op_threads": threads})
    schema = settings.schema_
    roles: dict[str, tuple[Literal["detect", "pose"], int]] = {"head": ("detect", 0), "pose_main": ("pose", 1), "pose_visible": ("pose", 2)}
    pts = {}
    for role, (task, seed) in roles.items():
        pts[role] = save_checkpoint(build_model(task, schema, seed=seed, config_dir=work / "ultralytics"),
                                    work / f"{role}.pt")
    make_bundle(work / "bundle", pts["head"], pts["pose_main"], pts["pose_visible"], imgsz, schema,
                config_dir=work / "ultralytics")
    files = _sample_images(images, work / "images")
    engine = InferenceEngine.from_bundle(str(work / "bundle"), settings, work / "cache")
    naive: dict[str, Any] = {role: YOLO(str(path), task=roles[role][0]) for role, path in pts.items()}
    inf = settings.inference

    def engine_pass() -> list[Any]:
        preds: list[Any] = []
        for start in range(0, len(files), batch):
            decoded = [decode_image(f.read_bytes(), max_pixels=inf.max_image_pixels, min_side=inf.min_image_side)
                       for f in files[start:start + batch]]
            preds.extend(engine.predict_decoded(decoded))
        return preds

    def naive_pass(conf: float = 0.25) -> list[dict[str, Any]]:
        return [{role: model.predict(str(f), imgsz=imgsz, conf=conf, verbose=False)[0]
                 for role, model in naive.items()} for f in files]

    engine_pass()
    naive_pass()
    engine_ms, naive_ms = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        engine_pass()
        engine_ms.append((time.perf_counter() - t0) * 1000 / len(files))
        t0 = time.perf_counter()
        naive_pass()
        naive_ms.append((time.perf_counter() - t0) * 1000 / len(files))

    # Agreement at a low threshold (untimed): the engine's raw per-model detections vs ultralytics'.
    from inference.letterbox import letterbox_batch

    agree, compared = 0, 0
    naive_low = naive_pass(compare_conf)
    for f, ref in zip(files, naive_low, strict=True):
        im = decode_image(f.read_bytes(), max_pixels=inf.max_image_pixels, min_side=inf.min_image_side)
        tensor, placements = letterbox_batch([im.pixels], imgsz)
        for role, model in (("pose_main", engine.pose_main), ("pose_visible", engine.pose_visible)):
            det = model.predict(tensor, placements, conf_threshold=compare_conf)[0]
            r = ref[role].boxes
            compared += 1
            agree += _agree(det.boxes, det.scores, r.xyxy.cpu().numpy(), r.conf.cpu().numpy(), compare_top)
    engine_med, naive_med = statistics.median(engine_ms), statistics.median(naive_ms)
    return {
        "bench": "infer", "images": len(files), "imgsz": imgsz, "repeats": repeats, "batch_size": batch,
        "engine_threads": engine.pose_main.session.get_session_options().intra_op_num_threads,
        "engine_ms_median": round(engine_med, 2), "naive_ms_median": round(naive_med, 2),
        "speedup": round(naive_med / engine_med, 3),
        "engine_ms_runs": [round(x, 2) for x in engine_ms], "naive_ms_runs": [round(x, 2) for x in naive_ms],
        "same_persons": agree == compared, "persons_agreement": f"{agree}/{compared} image-model pairs",
        "compared": f"top {compare_top} persons per image of each pose model at conf >= {compare_conf}: "
                    "same order, box IoU >= 0.9, confidence within 0.02",
        "weights": "untrained (architecture YAMLs), same weights in both paths",
    }


def _bench(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="alp-bench-infer-"))
    try:
        result = run_bench(args.images, args.imgsz, args.repeats, args.batch, args.threads, args.compare_conf,
                           args.compare_top, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"engine {result['engine_ms_median']} ms/image, naive {result['naive_ms_median']} ms/image, "
              f"speedup {result['speedup']}x, same persons: {result['same_persons']} ({result['persons_agreement']})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("infer", help="ONNX engine vs three ultralytics predict() calls per image")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=4, help="engine batch size")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = one per core)")
    p.add_argument("--compare-conf", type=float, default=0.01)
    p.add_argument("--compare-top", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_bench)
