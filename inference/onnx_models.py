"""YOLO detect and pose models exported to ONNX, run with onnxruntime and decoded with numpy.

Output layout of an ultralytics (v8 / 11) export without embedded NMS, per image: ``(C, A)`` with
``A`` anchors and ``C = 4 + nc (+ K * 3 for pose)``: box centre x, y, width, height in input pixels, the
class scores (already sigmoid), then per keypoint x, y (input pixels) and its confidence (sigmoid).
Decoding mirrors ``ultralytics.utils.ops.non_max_suppression`` for one class (confidence filter, at
most 30,000 candidates by score, greedy IoU suppression at 0.7, at most 300 detections), so the boxes
equal the .pt model's up to float rounding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from inference.letterbox import Placement

NMS_IOU = 0.7
MAX_CANDIDATES = 30_000
MAX_DETECTIONS = 300  # per image and model, after NMS (settings.inference.max_detections sets fewer)

F64 = NDArray[np.float64]


class ModelLoadError(RuntimeError):
    """An ONNX file could not be opened or does not have the expected shape."""


@dataclass(frozen=True)
class Detections:
    """Detections of one image in original pixels: boxes (N, 4) xyxy, scores (N,), keypoints (N, K, 3)."""

    boxes: F64
    scores: F64
    keypoints: F64 | None = None

    def __len__(self) -> int:
        return int(len(self.scores))

    @classmethod
    def empty(cls, num_keypoints: int | None = None) -> Detections:
        kpts = None if num_keypoints is None else np.zeros((0, num_keypoints, 3))
        return cls(boxes=np.zeros((0, 4)), scores=np.zeros((0,)), keypoints=kpts)


def nms(boxes: F64, scores: F64, iou_threshold: float) -> NDArray[np.int64]:
    """Greedy non-maximum suppression; indices of kept boxes, highest score first."""
    if len(boxes) == 0:
        return np.zeros((0,), dtype=np.int64)
    x1, y1, x2, y2 = boxes.T
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def decode_output(raw: NDArray[np.floating], placement: Placement, *, conf_threshold: float,
                  num_keypoints: int | None, class_index: int = 0, iou_threshold: float = NMS_IOU,
                  max_detections: int = MAX_DETECTIONS) -> Detections:
    """Decode one image's ``(C, A)`` output into detections in original-image pixels."""
    pred = np.asarray(raw, dtype=np.float64)
    if pred.ndim != 2:
        raise ValueError(f"expected a (channels, anchors) array, got shape {pred.shape}")
    kpt_channels = 3 * num_keypoints if num_keypoints else 0
    nc = pred.shape[0] - 4 - kpt_channels
    if nc < 1 or class_index >= nc:
        raise ValueError(f"output has {pred.shape[0]} channels: not 4 + classes + {kpt_channels} keypoint values")
    scores = pred[4 + class_index]
    candidates = np.flatnonzero(scores > conf_threshold)
    if candidates.size == 0:
        return Detections.empty(num_keypoints)
    if candidates.size > MAX_CANDIDATES:
        candidates = candidates[np.argsort(-scores[candidates], kind="stable")[:MAX_CANDIDATES]]
    cx, cy, w, h = pred[:4, candidates]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    cand_scores = scores[candidates]
    keep = nms(boxes, cand_scores, iou_threshold)[:max_detections]
    kept = candidates[keep]
    out_boxes = placement.to_image_boxes(boxes[keep])
    keypoints = None
    if num_keypoints:
        kpt = pred[4 + nc:, kept].T.reshape(len(kept), num_keypoints, 3)
        xy = placement.to_image_xy(kpt[..., :2])
        xy[..., 0] = xy[..., 0].clip(0, placement.width)
        xy[..., 1] = xy[..., 1].clip(0, placement.height)
        keypoints = np.concatenate([xy, kpt[..., 2:3].clip(0.0, 1.0)], axis=-1)
    return Detections(boxes=out_boxes, scores=cand_scores[keep].clip(0.0, 1.0), keypoints=keypoints)


def usable_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's core count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def session_options(intra_op_threads: int) -> Any:
    """Options for one of several sessions sharing the cores.

    Threads are set explicitly (0 = one per core) and spinning is off: with spinning on, a finished
    session's threads keep burning the cores the next model needs (measured 1.5-2x slower for three
    sessions in a row on 2 cores).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads or usable_cores()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


class OnnxYoloModel:
    """One YOLO ONNX graph (detect or pose) on the CPU execution provider."""

    def __init__(self, path: str | Path, *, task: str, num_keypoints: int | None, intra_op_threads: int = 0):
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(str(path), sess_options=session_options(intra_op_threads),
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
            raise ModelLoadError(f"{Path(path).name}: onnxruntime cannot load it ({exc})") from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelLoadError(f"{Path(path).name}: expected one NCHW input, got {[i.shape for i in inputs]}")
        self.input_name = inputs[0].name
        shape = inputs[0].shape
        self.fixed_hw: tuple[int, int] | None = (
            (int(shape[2]), int(shape[3])) if isinstance(shape[2], int) and isinstance(shape[3], int) else None
        )
        self.task = task
        self.num_keypoints = num_keypoints if task == "pose" else None
        expected = 4 + 1 + (3 * self.num_keypoints if self.num_keypoints else 0)
        out_shape = self.session.get_outputs()[0].shape
        if isinstance(out_shape[1], int) and out_shape[1] < expected:
            raise ModelLoadError(
                f"{Path(path).name}: output has {out_shape[1]} channels, a {task} model with "
                f"{num_keypoints or 0} keypoints needs at least {expected}"
            )

    def run(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        if self.fixed_hw is not None and tuple(batch.shape[2:]) != self.fixed_hw:
            raise ValueError(f"this ONNX graph takes {self.fixed_hw} inputs, got {batch.shape[2:]}; "
                             "export with dynamic=True for rectangular letterboxing")
        out = self.session.run(None, {self.input_name: batch})[0]
        return np.asarray(out)

    def predict(self, batch: NDArray[np.float32], placements: list[Placement], *,
                conf_threshold: float, max_detections: int = MAX_DETECTIONS) -> list[Detections]:
        raw = self.run(batch)
        return [decode_output(raw[i], p, conf_threshold=conf_threshold, num_keypoints=self.num_keypoints,
                              max_detections=max_detections)
                for i, p in enumerate(placements)]
