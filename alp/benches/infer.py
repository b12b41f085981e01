"""``alp bench infer``: this engine against the usual torch path, in one process, on the same images.

Engine: read each file, decode and letterbox it once (rectangular, batched), run the three ONNX models
on that one tensor with onnxruntime (explicit threads, no spinning), decode with numpy. It is timed with
the bundle precisions training ships: ``int8`` (the default, ``training.onnx_precision``; calibrated on
synthetic cabin frames, disjoint from the timed images) and ``fp32``.
Naive baseline: three ``YOLO(<.pt>).predict(<image file>, imgsz=...)`` calls per image, ultralytics'
defaults otherwise (each call re-reads and re-letterboxes the file; torch on the threads ultralytics
picks). All paths use the same weights: untrained models built from the architecture YAMLs by default,
or a trained bundle's checkpoints with ``--weights BUNDLE_DIR`` (``checkpoints/*.pt``, each loaded only after
its sha256 matches ``bundle.json``), so the ratio measures the runtime, not the weights.

Timings are per image (wall time of a pass over all images / images), the median over ``--repeats``
passes after one warm-up pass; the three paths alternate within each repeat so load on a shared machine
hits them alike. ``same_persons`` compares what the engine and ultralytics found: the comparison runs both
at ``--compare-conf`` (default 0.01: untrained weights pass almost nothing at 0.25) and checks, per image
and pose model, that each side's top ``--compare-top`` persons are found by the other (box IoU >= 0.9,
confidence within ``--conf-tol``). int8 changes the numbers by design, so ``int8_vs_fp32`` reports how
many of the fp32 engine's top persons the int8 engine finds (IoU >= 0.5) and how far their confidences
moved. Untrained weights say little about int8: use ``--weights`` (and ``--images-from synth``); the
accuracy that decides is the Evaluate step's, on the frozen test set, with the bundle as shipped.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

TIMED_SYNTH_SEED, CALIBRATION_SEED = 4242, 9001  # two seeds: the timed frames never calibrate


def _synthetic_images(count: int, dest: Path, seed: int = TIMED_SYNTH_SEED) -> list[Path]:
    """640x480 cabin frames from the project's generator."""
    from alp.synth.dataset import generate_dataset

    generate_dataset(str(dest), count, seed=seed, progress=False)
    return sorted((dest / "images").glob("*.jpg"))


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


def _agree(a_boxes: np.ndarray, a_conf: np.ndarray, b_boxes: np.ndarray, b_conf: np.ndarray, top: int,
           conf_tol: float) -> bool:
    """Each side's ``top`` most confident persons are found by the other side: box IoU >= 0.9 with some
    detection there whose confidence is within ``conf_tol``. (Matching, not rank order: two near-tied
    scores may swap places between runtimes.)"""
    from alp.geometry import box_iou

    def covered(xb: np.ndarray, xc: np.ndarray, yb: np.ndarray, yc: np.ndarray) -> bool:
        for i in np.argsort(-xc, kind="stable")[:top]:
            if not any(box_iou(xb[i], yb[j]) >= 0.9 and abs(xc[i] - yc[j]) <= conf_tol for j in range(len(yc))):
                return False
        return True

    return covered(a_boxes, a_conf, b_boxes, b_conf) and covered(b_boxes, b_conf, a_boxes, a_conf)


def _verified_checkpoint(bundle_dir: Path, role: str) -> Path:
    """A trained bundle's ``checkpoints/<role>.pt``, only after its sha256 matches ``bundle.json``: a .pt is
    a pickle, and the naive path and the export both unpickle it."""
    from alp.bundle import DESCRIPTOR_NAME, parse_descriptor
    from training.checkpoints import verify_checkpoint

    desc = parse_descriptor((bundle_dir / DESCRIPTOR_NAME).read_text())
    record = (desc.training.get("checkpoints") or {}).get(role)
    if not record:
        raise ValueError(f"--weights {bundle_dir}: bundle.json records no {role} checkpoint")
    return verify_checkpoint(bundle_dir / record["file"], record["sha256"])


def _calibration(imgsz: int, work: Path, count: int = 16) -> list[Any]:
    """Letterboxed synthetic cabin frames (not the timed photos), as training would calibrate with."""
    from training.quantize import calibration_batches

    images = [str(p) for p in _synthetic_images(count, work / "calibration", CALIBRATION_SEED)]
    return calibration_batches(images, imgsz, max_images=count)


def run_bench(images: int, imgsz: int, repeats: int, batch: int, threads: int, compare_conf: float,
              compare_top: int, work: Path, weights: Path | None = None,
              conf_tol: float = 0.02, source: str = "photos") -> dict[str, Any]:
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
    pts: dict[str, Path] = {}
    for role, (task, seed) in roles.items():
        if weights is not None:
            pts[role] = _verified_checkpoint(weights, role)
        else:
            pts[role] = save_checkpoint(build_model(task, schema, seed=seed, config_dir=work / "ultralytics"),
                                        work / f"{role}.pt")
    calibration = _calibration(imgsz, work)
    engines = {}
    for precision in ("int8", "fp32"):
        make_bundle(work / precision, pts["head"], pts["pose_main"], pts["pose_visible"], imgsz, schema,
                    config_dir=work / "ultralytics", precision=precision, calibration=calibration)
        engines[precision] = InferenceEngine.from_bundle(str(work / precision), settings, work / "cache")
    files = _synthetic_images(images, work / "images") if source == "synth" else _sample_images(images, work / "images")
    naive: dict[str, Any] = {role: YOLO(str(path), task=roles[role][0]) for role, path in pts.items()}
    inf = settings.inference

    def engine_pass(engine: InferenceEngine) -> list[Any]:
        preds: list[Any] = []
        for start in range(0, len(files), batch):
            decoded = [decode_image(f.read_bytes(), max_pixels=inf.max_image_pixels, min_side=inf.min_image_side)
                       for f in files[start:start + batch]]
            preds.extend(engine.predict_decoded(decoded))
        return preds

    def naive_pass(conf: float = 0.25) -> list[dict[str, Any]]:
        return [{role: model.predict(str(f), imgsz=imgsz, conf=conf, verbose=False)[0]
                 for role, model in naive.items()} for f in files]

    def timed(fn: Callable[[], object]) -> float:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1000 / len(files)

    passes: dict[str, Callable[[], object]] = {
        "int8": lambda: engine_pass(engines["int8"]), "fp32": lambda: engine_pass(engines["fp32"]),
        "naive": naive_pass,
    }
    for fn in passes.values():
        fn()
    runs: dict[str, list[float]] = {name: [] for name in passes}
    for _ in range(repeats):
        for name, fn in passes.items():
            runs[name].append(timed(fn))

    # Agreement at a low threshold (untimed): each engine's raw per-model detections vs ultralytics'.
    from alp.geometry import box_iou
    from inference.letterbox import letterbox_batch

    naive_low = naive_pass(compare_conf)
    agree = compared = 0
    int8_found: list[bool] = []
    conf_diffs: list[float] = []
    for f, ref in zip(files, naive_low, strict=True):
        im = decode_image(f.read_bytes(), max_pixels=inf.max_image_pixels, min_side=inf.min_image_side)
        tensor, placements = letterbox_batch([im.pixels], imgsz)
        for role in ("pose_main", "pose_visible"):
            det = getattr(engines["fp32"], role).predict(tensor, placements, conf_threshold=compare_conf)[0]
            r = ref[role].boxes
            compared += 1
            agree += _agree(det.boxes, det.scores, r.xyxy.cpu().numpy(), r.conf.cpu().numpy(), compare_top,
                            conf_tol)
            q = getattr(engines["int8"], role).predict(tensor, placements, conf_threshold=compare_conf)[0]
            for i in np.argsort(-det.scores, kind="stable")[:compare_top]:
                ious = [box_iou(det.boxes[i], b) for b in q.boxes]
                j = int(np.argmax(ious)) if ious else -1
                int8_found.append(j >= 0 and ious[j] >= 0.5)
                if int8_found[-1]:
                    conf_diffs.append(abs(float(det.scores[i]) - float(q.scores[j])))
    med = {name: statistics.median(values) for name, values in runs.items()}
    shipped = settings.training.onnx_precision
    return {
        "bench": "infer", "images": len(files), "imgsz": imgsz, "repeats": repeats, "batch_size": batch,
        "engine_threads": engines["fp32"].pose_main.session.get_session_options().intra_op_num_threads,
        "engine_precision": shipped,
        "engine_ms_median": round(med[shipped], 2), "naive_ms_median": round(med["naive"], 2),
        "speedup": round(med["naive"] / med[shipped], 3),
        "engine_fp32_ms_median": round(med["fp32"], 2), "speedup_fp32": round(med["naive"] / med["fp32"], 3),
        "engine_int8_ms_median": round(med["int8"], 2), "speedup_int8": round(med["naive"] / med["int8"], 3),
        "runs_ms": {name: [round(x, 2) for x in values] for name, values in runs.items()},
        "same_persons": agree == compared,
        "persons_agreement": f"{agree}/{compared} image-model pairs (fp32 engine vs ultralytics)",
        "compared": f"top {compare_top} persons per image of each pose model at conf >= {compare_conf}, both "
                    "ways: found by the other runtime with box IoU >= 0.9 and confidence within "
                    f"{conf_tol}",
        "int8_vs_fp32": {
            "persons": len(int8_found),
            "found_share": round(sum(int8_found) / len(int8_found), 4) if int8_found else None,
            "median_abs_conf_diff": round(statistics.median(conf_diffs), 4) if conf_diffs else None,
            "max_abs_conf_diff": round(max(conf_diffs), 4) if conf_diffs else None,
            "rule": f"the fp32 engine's top {compare_top} persons per image and pose model, each found by the int8 "
                    "engine at box IoU >= 0.5 (the detection metrics' match); confidence differences of the found",
        },
        "images_from": source,
        "weights": f"trained checkpoints of the bundle {weights}" if weights is not None
        else "untrained (architecture YAMLs), same weights in every path",
    }


def _bench(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="alp-bench-infer-"))
    try:
        result = run_bench(args.images, args.imgsz, args.repeats, args.batch, args.threads, args.compare_conf,
                           args.compare_top, work, Path(args.weights) if args.weights else None,
                           args.conf_tol, args.images_from)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"engine ({result['engine_precision']}) {result['engine_ms_median']} ms/image, naive "
              f"{result['naive_ms_median']} ms/image, speedup {result['speedup']}x (fp32 engine "
              f"{result['speedup_fp32']}x); same persons: {result['persons_agreement']}; int8 vs fp32: "
              f"{result['int8_vs_fp32']}")
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
    p.add_argument("--images-from", choices=("photos", "synth"), default="photos",
                   help="timed images: sample photos of mixed shapes (default) or 640x480 synthetic cabin frames")
    p.add_argument("--conf-tol", type=float, default=0.02, help="agreement: fp32 confidence tolerance")
    p.add_argument("--weights", default=None,
                   help="a trained bundle folder: its checkpoints/*.pt, hash-checked against bundle.json "
                        "(default: untrained models)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_bench)
