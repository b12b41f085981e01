"""The inference engine: a verified bundle's three ONNX models on one shared, letterboxed tensor.

Each image is decoded and letterboxed once; the same NCHW batch feeds the head detector and both pose
models. Persons of the two pose models are matched by box IoU, each keypoint gets its three-state
visibility, and each person is tied to a head box. No torch, no pickles: onnxruntime and numpy only.

A zero-shot bundle (``bundle.json``'s ``zero_shot``) has one pretrained pose model: it runs once per batch, its
keypoints are mapped onto the schema, its detections stand in for the visible-only model's too, and each person's
head box comes from the person's face keypoints (:mod:`inference.zero_shot`); no head model is opened.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
from numpy.typing import NDArray

from alp.bundle import BundleError, LoadedBundle, ZeroShotSource, load_bundle
from alp.geometry import iou_matrix
from alp.settings import Settings
from inference.head_backends import (
    HeadDetector,
    PreparedBatch,
    RekognitionHeadDetector,
    YoloOnnxHeadDetector,
)
from inference.image_io import DecodedImage
from inference.judgement import ImageEvidence, PersonEvidence
from inference.letterbox import input_shape, letterbox_batch
from inference.onnx_models import Detections, OnnxYoloModel
from inference.visibility import Threshold, assign_heads, classify_visibility, match_persons
from inference.zero_shot import heads_from_faces, known_keypoints, map_keypoints

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class PersonPrediction:
    """One person of the main pose model, in original pixels."""

    box: tuple[float, float, float, float]  # xyxy
    score: float
    keypoints_xy: F64  # (K, 2), main model
    keypoint_conf: F64  # (K,), main model
    keypoint_conf_visible: F64 | None  # (K,), visible-only model; None when it had no matching person
    visibility: NDArray[np.int64]  # (K,) 0 outside, 1 occluded, 2 visible
    head_box_index: int | None
    # (K,) False for a point the model does not give at all (a zero-shot bundle's ``mouth``): left to people,
    # unplaced and unanswered in the prefill; None: the model gives every point
    keypoint_known: NDArray[np.bool_] | None = None


@dataclass(frozen=True)
class ImagePrediction:
    width: int
    height: int
    head_boxes: F64  # (H, 4) xyxy
    head_scores: F64  # (H,)
    persons: tuple[PersonPrediction, ...]
    unmatched_visible_persons: int
    main_threshold: Threshold  # the visibility rule the persons' keypoints were classified with
    additional_threshold: Threshold
    near_miss_persons: int = 0  # person candidates just under the detection threshold, apart from every kept one
    zero_shot: bool = False  # predicted by a zero-shot bundle: the judgement sends the image to people

    def evidence(self, keypoint_names: Sequence[str] = ()) -> ImageEvidence:
        """The confidences judgement needs, as plain data."""
        return ImageEvidence(
            head_confs=tuple(float(s) for s in self.head_scores),
            persons=tuple(
                PersonEvidence(
                    box_conf=p.score,
                    keypoint_conf=tuple(float(c) for c in p.keypoint_conf),
                    keypoint_conf_visible=None if p.keypoint_conf_visible is None
                    else tuple(float(c) for c in p.keypoint_conf_visible),
                    head_box_index=p.head_box_index,
                )
                for p in self.persons
            ),
            unmatched_visible_persons=self.unmatched_visible_persons,
            near_miss_persons=self.near_miss_persons,
            keypoint_names=tuple(keypoint_names),
            main_threshold=self.main_threshold,
            additional_threshold=self.additional_threshold,
            zero_shot=self.zero_shot,
        )


NEAR_MISS_IOU = 0.5  # a candidate overlapping a kept person this much is that person, not another one


def split_near_misses(dets: Detections, conf_threshold: float) -> tuple[Detections, int]:
    """The detections above ``conf_threshold`` (what decoding at it would have kept), and how many of the others
    overlap none of them (IoU < 0.5): candidates for an object the model nearly found."""
    kept = dets.scores > conf_threshold
    kept_dets = Detections(boxes=dets.boxes[kept], scores=dets.scores[kept],
                           keypoints=None if dets.keypoints is None else dets.keypoints[kept])
    others = dets.boxes[~kept]
    if not len(others):
        return kept_dets, 0
    if not kept.any():
        return kept_dets, int(len(others))
    overlap = iou_matrix(others, kept_dets.boxes).max(axis=1)
    return kept_dets, int((overlap < NEAR_MISS_IOU).sum())


def combine(heads: Detections, main: Detections, visible: Detections, width: int, height: int, *,
            keypoint_names: Sequence[str], main_threshold: Threshold, additional_threshold: Threshold,
            person_match_iou: float, head_of: Sequence[int | None] | None = None,
            keypoint_known: NDArray[np.bool_] | None = None) -> ImagePrediction:
    """Join the three models' detections of one image into persons with visibility and head boxes.

    ``head_of``: each person's head box when the heads were made from the persons (zero-shot: from their faces);
    None ties them by geometry (:func:`assign_heads`). ``keypoint_known``: see :attr:`PersonPrediction.keypoint_known`.
    """
    if main.keypoints is None or visible.keypoints is None:
        raise ValueError("pose detections carry no keypoints")
    match = match_persons(main.boxes, visible.boxes, person_match_iou)
    if head_of is None:
        head_of = assign_heads(main.boxes, main.keypoints, heads.boxes, keypoint_names, main_threshold)
    persons = []
    for i in range(len(main)):
        conf = main.keypoints[i, :, 2]
        j = match[i]
        conf_vis = visible.keypoints[j, :, 2] if j is not None else None
        v = classify_visibility(conf, conf_vis if conf_vis is not None else np.zeros_like(conf),
                                main_threshold, additional_threshold)
        box = main.boxes[i]
        persons.append(PersonPrediction(
            box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])), score=float(main.scores[i]),
            keypoints_xy=main.keypoints[i, :, :2].copy(), keypoint_conf=conf.copy(),
            keypoint_conf_visible=None if conf_vis is None else conf_vis.copy(), visibility=v,
            head_box_index=head_of[i], keypoint_known=keypoint_known,
        ))
    matched = {j for j in match if j is not None}
    return ImagePrediction(width=width, height=height, head_boxes=heads.boxes, head_scores=heads.scores,
                           persons=tuple(persons), unmatched_visible_persons=len(visible) - len(matched),
                           main_threshold=main_threshold, additional_threshold=additional_threshold)


class InferenceEngine:
    """Runs a verified bundle. Use as a context manager so a Custom Labels model is stopped after use."""

    def __init__(self, bundle: LoadedBundle, settings: Settings, head_detector: HeadDetector | None = None):
        desc = bundle.descriptor
        schema = settings.schema_
        if tuple(desc.keypoint_names) != tuple(schema.names):
            raise BundleError(
                f"bundle {desc.bundle_id} was trained on keypoints {list(desc.keypoint_names)[:4]}... "
                f"({desc.keypoint_schema}), the settings use schema {schema.name}; refusing to mix them"
            )
        inf = settings.inference
        self.bundle = bundle
        self.settings = settings
        self.keypoint_names: tuple[str, ...] = tuple(desc.keypoint_names)
        self.imgsz = desc.imgsz
        k = len(self.keypoint_names)
        # The bundle's own visibility thresholds (fitted per keypoint at training time), else the settings'.
        self.main_threshold: Threshold = inf.main_threshold
        self.additional_threshold: Threshold = inf.additional_threshold
        if desc.visibility_thresholds and all(n in desc.visibility_thresholds for n in self.keypoint_names):
            fitted = [desc.visibility_thresholds[n] for n in self.keypoint_names]
            self.main_threshold = tuple(t.main for t in fitted)
            self.additional_threshold = tuple(t.additional for t in fitted)
        threads = inf.intra_op_threads
        self.zero_shot: ZeroShotSource | None = desc.zero_shot
        self.head_detector: HeadDetector | None = None
        self.keypoint_known: NDArray[np.bool_] | None = None
        self._opened = False
        if self.zero_shot is not None:
            if head_detector is not None:
                raise ValueError(f"bundle {desc.bundle_id} is zero-shot: its heads come from face keypoints, "
                                 "not from a head detector")
            # one pretrained model with its own keypoints; it stands in for the visible-only model too, and the
            # heads come from its faces, so no head model (nor a Rekognition one) is opened
            self.pose_main = OnnxYoloModel(bundle.paths["pose_main"], task="pose",
                                           num_keypoints=len(self.zero_shot.source_keypoints), intra_op_threads=threads)
            self.pose_visible = self.pose_main
            self.keypoint_known = known_keypoints(self.zero_shot.source_keypoints, self.keypoint_names)
            self.canvas_shape: tuple[int, int] | None = self.pose_main.fixed_hw
            return
        self.pose_main = OnnxYoloModel(bundle.paths["pose_main"], task="pose", num_keypoints=k,
                                       intra_op_threads=threads)
        self.pose_visible = OnnxYoloModel(bundle.paths["pose_visible"], task="pose", num_keypoints=k,
                                          intra_op_threads=threads)
        if head_detector is None:
            if inf.head_detector_backend == "rekognition-custom-labels":
                if not inf.rekognition_project_version_arn:
                    raise ValueError("settings.inference.rekognition_project_version_arn is required for the "
                                     "rekognition-custom-labels head backend")
                head_detector = RekognitionHeadDetector(
                    inf.rekognition_project_version_arn, min_confidence=inf.box_conf_threshold,
                    keep_running=inf.keep_rekognition_model_running,
                    label_name=desc.models["head"].class_names[0], max_detections=inf.max_detections,
                )
            else:
                head_model = OnnxYoloModel(bundle.paths["head"], task="detect", num_keypoints=None,
                                           intra_op_threads=threads)
                head_detector = YoloOnnxHeadDetector(head_model, inf.box_conf_threshold, inf.max_detections)
        self.head_detector = head_detector
        fixed = {m.fixed_hw for m in (self.pose_main, self.pose_visible) if m.fixed_hw is not None}
        if isinstance(head_detector, YoloOnnxHeadDetector) and head_detector.model.fixed_hw is not None:
            fixed.add(head_detector.model.fixed_hw)
        if len(fixed) > 1:
            raise BundleError(f"bundle {desc.bundle_id}: models expect different input sizes {sorted(fixed)}")
        self.canvas_shape = fixed.pop() if fixed else None

    @classmethod
    def from_bundle(cls, uri: str, settings: Settings, cache_dir: str | Path) -> InferenceEngine:
        """Fetch and verify a bundle (path or s3:// prefix), then open its models."""
        return cls(load_bundle(uri, cache_dir), settings)

    @property
    def bundle_id(self) -> str:
        return self.bundle.descriptor.bundle_id

    @property
    def head_backend(self) -> str:
        """Where the head boxes come from: the head detector's name, or ``face-keypoints`` (zero-shot)."""
        if self.head_detector is not None:
            return self.head_detector.name
        assert self.zero_shot is not None  # the only bundle without a head detector
        return self.zero_shot.heads_from

    def open(self) -> InferenceEngine:
        if not self._opened:
            if self.head_detector is not None:
                self.head_detector.open()
            self._opened = True
        return self

    def close(self) -> None:
        if self._opened:
            if self.head_detector is not None:
                self.head_detector.close()
            self._opened = False

    def __enter__(self) -> InferenceEngine:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def prepare(self, images: Sequence[DecodedImage], source_refs: Sequence[str | None] | None = None) -> PreparedBatch:
        tensor, placements = letterbox_batch([im.pixels for im in images], self.imgsz,
                                             canvas_shape=self.canvas_shape)
        refs: list[str | None] = list(source_refs) if source_refs is not None else [None] * len(images)
        return PreparedBatch(tensor=tensor, placements=placements, images=list(images), source_refs=refs)

    def _near_miss_conf(self) -> float:
        inf = self.settings.inference
        if inf.near_miss_conf is not None and inf.near_miss_conf < inf.box_conf_threshold:
            return inf.near_miss_conf
        return inf.box_conf_threshold

    def predict_prepared(self, batch: PreparedBatch) -> list[ImagePrediction]:
        self.open()
        if self.zero_shot is not None:
            return self._predict_zero_shot(batch, self.zero_shot)
        inf = self.settings.inference
        assert self.head_detector is not None  # every bundle but a zero-shot one has its head detector
        heads = self.head_detector.detect(batch)
        candidates = self.pose_main.predict(batch.tensor, batch.placements, conf_threshold=self._near_miss_conf(),
                                            max_detections=inf.max_detections)
        split = [split_near_misses(d, inf.box_conf_threshold) for d in candidates]
        mains, near_misses = [d for d, _ in split], [n for _, n in split]
        visibles = self.pose_visible.predict(batch.tensor, batch.placements, conf_threshold=inf.box_conf_threshold,
                                             max_detections=inf.max_detections)
        return [
            dataclasses.replace(
                combine(h, m, v, p.width, p.height, keypoint_names=self.keypoint_names,
                        main_threshold=self.main_threshold, additional_threshold=self.additional_threshold,
                        person_match_iou=inf.person_match_iou),
                near_miss_persons=n)
            for h, m, v, p, n in zip(heads, mains, visibles, batch.placements, near_misses, strict=True)
        ]

    def _predict_zero_shot(self, batch: PreparedBatch, source: ZeroShotSource) -> list[ImagePrediction]:
        """One pose model call for the batch; per image: the schema's keypoints, the heads from the faces, and the
        same detections as the visible-only model's (so with equal thresholds a point is visible or outside:
        people say which are occluded)."""
        inf = self.settings.inference
        candidates = self.pose_main.predict(batch.tensor, batch.placements, conf_threshold=self._near_miss_conf(),
                                            max_detections=inf.max_detections)
        out = []
        for dets, p in zip(candidates, batch.placements, strict=True):
            kept, near_misses = split_near_misses(dets, inf.box_conf_threshold)
            if kept.keypoints is None:
                raise ValueError("pose detections carry no keypoints")
            faces = heads_from_faces(kept.keypoints, source.source_keypoints, p.width, p.height)
            persons = Detections(boxes=kept.boxes, scores=kept.scores,
                                 keypoints=map_keypoints(kept.keypoints, source.source_keypoints, self.keypoint_names))
            pred = combine(Detections(boxes=faces.boxes, scores=faces.scores), persons, persons, p.width, p.height,
                           keypoint_names=self.keypoint_names, main_threshold=self.main_threshold,
                           additional_threshold=self.additional_threshold, person_match_iou=inf.person_match_iou,
                           head_of=faces.head_of(len(kept)), keypoint_known=self.keypoint_known)
            out.append(dataclasses.replace(pred, near_miss_persons=near_misses, zero_shot=True))
        return out

    def predict_decoded(self, images: Sequence[DecodedImage],
                        source_refs: Sequence[str | None] | None = None) -> list[ImagePrediction]:
        if not images:
            return []
        refs = list(source_refs) if source_refs is not None else [None] * len(images)
        if self.canvas_shape is not None:
            return self.predict_prepared(self.prepare(images, refs))
        # One model call per input shape: a portrait frame padded into a landscape batch would cost
        # the area of both.
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(input_shape(im.height, im.width, self.imgsz), []).append(i)
        out: list[ImagePrediction | None] = [None] * len(images)
        for members in groups.values():
            preds = self.predict_prepared(self.prepare([images[i] for i in members], [refs[i] for i in members]))
            for i, pred in zip(members, preds, strict=True):
                out[i] = pred
        return [p for p in out if p is not None]

    def predict(self, images: Sequence[NDArray[np.uint8]]) -> list[ImagePrediction]:
        """Predict upright RGB uint8 arrays (H, W, 3)."""
        decoded = []
        for im in images:
            arr = np.asarray(im)
            if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
                raise ValueError(f"expected RGB uint8 (H, W, 3) arrays, got {arr.dtype} {arr.shape}")
            decoded.append(DecodedImage(pixels=arr, format="array", original_mode="RGB", exif_transposed=False))
        return self.predict_decoded(decoded)
