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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from alp.benches.arguments import add_bench, options_from

if TYPE_CHECKING:
    from alp.settings import Settings
    from inference.engine import InferenceEngine

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


class InferBenchOptions(BaseModel):
    images: int = Field(8, ge=1, description="timed images")
    imgsz: int = Field(640, ge=32)
    repeats: int = Field(3, ge=1, description="timed passes (the median counts), after one warm-up pass")
    batch: int = Field(4, ge=1, description="engine batch size")
    threads: int = Field(0, ge=0, description="onnxruntime intra-op threads (0 = one per core)")
    compare_conf: float = Field(0.01, description="agreement: the confidence both runtimes detect down to")
    compare_top: int = Field(5, ge=1, description="agreement: the top persons per image and pose model compared")
    images_from: Literal["photos", "synth"] = Field(
        "photos", description="timed images: sample photos of mixed shapes or 640x480 synthetic cabin frames")
    conf_tol: float = Field(0.02, description="agreement: fp32 confidence tolerance")
    weights: Path | None = Field(None, description="a trained bundle folder: its checkpoints/*.pt, hash-checked "
                                                   "against bundle.json (default: untrained models)")


class Int8VsFp32(BaseModel):
    persons: int
    found_share: float | None
    median_abs_conf_diff: float | None
    max_abs_conf_diff: float | None
    rule: str


class InferBenchResult(BaseModel):
    bench: Literal["infer"] = "infer"
    images: int
    imgsz: int
    repeats: int
    batch_size: int
    engine_threads: int
    engine_precision: str
    engine_ms_median: float
    naive_ms_median: float
    speedup: float
    engine_fp32_ms_median: float
    speedup_fp32: float
    engine_int8_ms_median: float
    speedup_int8: float
    runs_ms: dict[str, list[float]]
    same_persons: bool
    persons_agreement: str
    compared: str
    int8_vs_fp32: Int8VsFp32
    images_from: str
    weights: str


ROLES: dict[str, tuple[Literal["detect", "pose"], int]] = {"head": ("detect", 0), "pose_main": ("pose", 1),
                                                           "pose_visible": ("pose", 2)}
PRECISIONS: tuple[Literal["int8", "fp32"], ...] = ("int8", "fp32")


@dataclass
class _Agreement:
    """What the engines found against ultralytics (fp32) and against each other (int8 vs fp32)."""

    agree: int = 0
    compared: int = 0
    int8_found: list[bool] = field(default_factory=list)
    conf_diffs: list[float] = field(default_factory=list)


def run_infer_bench(options: InferBenchOptions, work: Path | None = None) -> InferBenchResult:
    """Time the engine (int8 and fp32 bundles) against ultralytics' predict() on the same weights and images;
    ``work`` holds the models and images (default: a temp folder, removed after)."""
    if work is None:
        with tempfile.TemporaryDirectory(prefix="alp-bench-infer-") as tmp:
            return run_infer_bench(options, Path(tmp))
    from alp.settings import Settings
    from alp.torch_compat import prepare_ultralytics

    prepare_ultralytics(work / "ultralytics")
    settings = Settings().with_overrides({"inference.batch_size": options.batch,
                                          "inference.intra_op_threads": options.threads})
    checkpoints = _checkpoints(options, settings, work)
    engines = _engines(checkpoints, options, settings, work)
    files = (_synthetic_images(options.images, work / "images") if options.images_from == "synth"
             else _sample_images(options.images, work / "images"))
    from ultralytics import YOLO  # type: ignore[attr-defined]

    naive = {role: YOLO(str(path), task=ROLES[role][0]) for role, path in checkpoints.items()}
    runs = _timed_passes(files, engines, naive, options, settings)
    agreement = _agreement(files, engines, naive, options, settings)
    return _result(options, settings, engines, files, runs, agreement)


def _checkpoints(options: InferBenchOptions, settings: Settings, work: Path) -> dict[str, Path]:
    """The three models' .pt files: a trained bundle's (hash-checked), or untrained ones from the YAMLs."""
    from training.export import build_model, save_checkpoint

    if options.weights is not None:
        return {role: _verified_checkpoint(options.weights, role) for role in ROLES}
    return {role: save_checkpoint(build_model(task, settings.schema_, seed=seed, config_dir=work / "ultralytics"),
                                  work / f"{role}.pt")
            for role, (task, seed) in ROLES.items()}


def _engines(checkpoints: dict[str, Path], options: InferBenchOptions, settings: Settings,
             work: Path) -> dict[str, InferenceEngine]:
    """An engine per bundle precision, exported from the same checkpoints (int8 calibrated on other frames)."""
    from inference.engine import InferenceEngine
    from training.export import make_bundle

    calibration = _calibration(options.imgsz, work)
    engines: dict[str, InferenceEngine] = {}
    for precision in PRECISIONS:
        make_bundle(work / precision, checkpoints["head"], checkpoints["pose_main"], checkpoints["pose_visible"],
                    options.imgsz, settings.schema_, config_dir=work / "ultralytics", precision=precision,
                    calibration=calibration)
        engines[precision] = InferenceEngine.from_bundle(str(work / precision), settings, work / "cache")
    return engines


def _decode(file: Path, settings: Settings) -> Any:
    from inference.image_io import decode_image

    inf = settings.inference
    return decode_image(file.read_bytes(), max_pixels=inf.max_image_pixels, min_side=inf.min_image_side)


def _timed_passes(files: list[Path], engines: dict[str, InferenceEngine], naive: dict[str, Any],
                  options: InferBenchOptions, settings: Settings) -> dict[str, list[float]]:
    """ms per image of each path, per repeat, after one warm-up pass; the paths alternate within a repeat."""

    def engine_pass(engine: InferenceEngine) -> None:
        for start in range(0, len(files), options.batch):
            engine.predict_decoded([_decode(f, settings) for f in files[start:start + options.batch]])

    def naive_pass() -> None:
        _naive_predictions(files, naive, options.imgsz, conf=0.25)

    passes: dict[str, Callable[[], object]] = {
        "int8": lambda: engine_pass(engines["int8"]), "fp32": lambda: engine_pass(engines["fp32"]),
        "naive": naive_pass,
    }
    for fn in passes.values():
        fn()
    runs: dict[str, list[float]] = {name: [] for name in passes}
    for _ in range(options.repeats):
        for name, fn in passes.items():
            t0 = time.perf_counter()
            fn()
            runs[name].append((time.perf_counter() - t0) * 1000 / len(files))
    return runs


def _naive_predictions(files: list[Path], naive: dict[str, Any], imgsz: int, conf: float) -> list[dict[str, Any]]:
    """ultralytics' way: one predict() call per image and model, each reading the file again."""
    return [{role: model.predict(str(f), imgsz=imgsz, conf=conf, verbose=False)[0] for role, model in naive.items()}
            for f in files]


def _agreement(files: list[Path], engines: dict[str, InferenceEngine], naive: dict[str, Any],
               options: InferBenchOptions, settings: Settings) -> _Agreement:
    """Agreement at a low threshold (untimed): each engine's raw per-model detections vs ultralytics'."""
    from alp.geometry import box_iou
    from inference.letterbox import letterbox_batch

    found = _Agreement()
    for f, ref in zip(files, _naive_predictions(files, naive, options.imgsz, options.compare_conf), strict=True):
        tensor, placements = letterbox_batch([_decode(f, settings).pixels], options.imgsz)
        for role in ("pose_main", "pose_visible"):
            det = getattr(engines["fp32"], role).predict(tensor, placements, conf_threshold=options.compare_conf)[0]
            r = ref[role].boxes
            found.compared += 1
            found.agree += _agree(det.boxes, det.scores, r.xyxy.cpu().numpy(), r.conf.cpu().numpy(),
                                  options.compare_top, options.conf_tol)
            q = getattr(engines["int8"], role).predict(tensor, placements, conf_threshold=options.compare_conf)[0]
            for i in np.argsort(-det.scores, kind="stable")[:options.compare_top]:
                ious = [box_iou(det.boxes[i], b) for b in q.boxes]
                j = int(np.argmax(ious)) if ious else -1
                found.int8_found.append(j >= 0 and ious[j] >= 0.5)
                if found.int8_found[-1]:
                    found.conf_diffs.append(abs(float(det.scores[i]) - float(q.scores[j])))
    return found


def _result(options: InferBenchOptions, settings: Settings, engines: dict[str, InferenceEngine], files: list[Path],
            runs: dict[str, list[float]], found: _Agreement) -> InferBenchResult:
    med = {name: statistics.median(values) for name, values in runs.items()}
    shipped = settings.training.onnx_precision
    diffs = found.conf_diffs
    return InferBenchResult(
        images=len(files), imgsz=options.imgsz, repeats=options.repeats, batch_size=options.batch,
        engine_threads=engines["fp32"].pose_main.session.get_session_options().intra_op_num_threads,
        engine_precision=shipped,
        engine_ms_median=round(med[shipped], 2), naive_ms_median=round(med["naive"], 2),
        speedup=round(med["naive"] / med[shipped], 3),
        engine_fp32_ms_median=round(med["fp32"], 2), speedup_fp32=round(med["naive"] / med["fp32"], 3),
        engine_int8_ms_median=round(med["int8"], 2), speedup_int8=round(med["naive"] / med["int8"], 3),
        runs_ms={name: [round(x, 2) for x in values] for name, values in runs.items()},
        same_persons=found.agree == found.compared,
        persons_agreement=f"{found.agree}/{found.compared} image-model pairs (fp32 engine vs ultralytics)",
        compared=f"top {options.compare_top} persons per image of each pose model at conf >= "
                 f"{options.compare_conf}, both ways: found by the other runtime with box IoU >= 0.9 and "
                 f"confidence within {options.conf_tol}",
        int8_vs_fp32=Int8VsFp32(
            persons=len(found.int8_found),
            found_share=round(sum(found.int8_found) / len(found.int8_found), 4) if found.int8_found else None,
            median_abs_conf_diff=round(statistics.median(diffs), 4) if diffs else None,
            max_abs_conf_diff=round(max(diffs), 4) if diffs else None,
            rule=f"the fp32 engine's top {options.compare_top} persons per image and pose model, each found by "
                 "the int8 engine at box IoU >= 0.5 (the detection metrics' match); confidence differences of "
                 "the found"),
        images_from=options.images_from,
        weights=f"trained checkpoints of the bundle {options.weights}" if options.weights is not None
        else "untrained (architecture YAMLs), same weights in every path",
    )


def _main(args: argparse.Namespace) -> int:
    result = run_infer_bench(options_from(args, InferBenchOptions))
    if args.json:
        print(json.dumps(result.model_dump(mode="json"), sort_keys=True))
    else:
        print(f"engine ({result.engine_precision}) {result.engine_ms_median} ms/image, naive "
              f"{result.naive_ms_median} ms/image, speedup {result.speedup}x (fp32 engine "
              f"{result.speedup_fp32}x); same persons: {result.persons_agreement}; int8 vs fp32: "
              f"{result.int8_vs_fp32.model_dump()}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    add_bench(subparsers, "infer", help="ONNX engine vs three ultralytics predict() calls per image",
              options=InferBenchOptions, main=_main, json_help="one line of JSON, keys sorted")
