"""Head-box detectors behind one interface: the bundle's YOLO ONNX model or Rekognition Custom Labels.

Both return :class:`~inference.onnx_models.Detections` in original-image pixels with confidences in
[0, 1]. A Custom Labels model is billed per running hour: :meth:`RekognitionHeadDetector.open` starts
it when it is not running (waiting until it runs) and :meth:`close` stops it again, unless it was
already running before or the settings ask to keep it up.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from alp import aws, storage
from inference.image_io import DecodedImage
from inference.letterbox import Placement
from inference.onnx_models import MAX_DETECTIONS, Detections, OnnxYoloModel


@dataclass(frozen=True)
class PreparedBatch:
    """Images decoded and letterboxed once; every model reads what it needs from here."""

    tensor: NDArray[np.float32]
    placements: list[Placement]
    images: list[DecodedImage]
    source_refs: list[str | None]


class HeadDetector(Protocol):
    name: str

    def open(self) -> None: ...

    def detect(self, batch: PreparedBatch) -> list[Detections]: ...

    def close(self) -> None: ...


class YoloOnnxHeadDetector:
    """The bundle's head model, fed the shared letterboxed tensor."""

    name = "yolo-onnx"

    def __init__(self, model: OnnxYoloModel, conf_threshold: float, max_detections: int = MAX_DETECTIONS):
        self.model = model
        self.conf_threshold = conf_threshold
        self.max_detections = max_detections

    def open(self) -> None:
        return None

    def detect(self, batch: PreparedBatch) -> list[Detections]:
        return self.model.predict(batch.tensor, batch.placements, conf_threshold=self.conf_threshold,
                                  max_detections=self.max_detections)

    def close(self) -> None:
        return None


class RekognitionError(RuntimeError):
    """The Custom Labels model is missing, failed, or did not start in time."""


_VERSION_ARN = re.compile(
    r"^arn:aws[a-z-]*:rekognition:[a-z0-9-]+:\d{12}:project/(?P<project>[^/]+)/version/(?P<version>[^/]+)/\d+$"
)
# Rekognition takes at most 4 MB of inline bytes; ratios do not depend on resolution, so shrink to send.
MAX_INLINE_SIDE = 2048
S3_FORMATS = frozenset({"JPEG", "PNG"})


def parse_project_version_arn(arn: str) -> tuple[str, str]:
    """(project name, version name) of a Custom Labels project-version ARN."""
    m = _VERSION_ARN.match(arn)
    if not m:
        raise RekognitionError(
            f"not a Rekognition Custom Labels project-version ARN: {arn!r} "
            "(arn:aws:rekognition:<region>:<account>:project/<name>/version/<version>/<timestamp>)"
        )
    return m["project"], m["version"]


def ratio_box_to_pixels(box: dict[str, float], width: int, height: int) -> tuple[float, float, float, float]:
    """Rekognition's ratio geometry (may stray below 0 or above 1 at edges) -> clipped xyxy pixels."""
    left, top = float(box.get("Left", 0.0)), float(box.get("Top", 0.0))
    right, bottom = left + float(box.get("Width", 0.0)), top + float(box.get("Height", 0.0))
    return (min(max(left, 0.0), 1.0) * width, min(max(top, 0.0), 1.0) * height,
            min(max(right, 0.0), 1.0) * width, min(max(bottom, 0.0), 1.0) * height)


class RekognitionHeadDetector:
    """Head boxes from a Rekognition Custom Labels model (``DetectCustomLabels``)."""

    name = "rekognition-custom-labels"

    def __init__(self, project_version_arn: str, *, min_confidence: float, label_name: str = "head",
                 keep_running: bool = False, min_inference_units: int = 1, poll_seconds: float = 30.0,
                 start_timeout_seconds: float = 3600.0, sleep: Callable[[float], None] = time.sleep,
                 max_detections: int = MAX_DETECTIONS):
        self.project_name, self.version_name = parse_project_version_arn(project_version_arn)
        self.arn = project_version_arn
        self.min_confidence = min_confidence
        # the same cap as the ONNX detector's (settings.inference.max_detections); applied after the label and
        # geometry filters, not as the API's MaxResults, which would count image-level labels too
        self.max_detections = max_detections
        self.label_name = label_name
        self.keep_running = keep_running
        self.min_inference_units = min_inference_units
        self.poll_seconds = poll_seconds
        self.start_timeout_seconds = start_timeout_seconds
        self._sleep = sleep
        self._project_arn: str | None = None
        self.started_here = False

    @cached_property
    def client(self) -> Any:
        """The Rekognition client, created at first use rather than when the detector is built."""
        return aws.client("rekognition")

    def status(self) -> str:
        if self._project_arn is None:
            projects = self.client.describe_projects(ProjectNames=[self.project_name]).get("ProjectDescriptions", [])
            if not projects:
                raise RekognitionError(f"Rekognition project {self.project_name!r} does not exist")
            self._project_arn = str(projects[0]["ProjectArn"])
        versions = self.client.describe_project_versions(
            ProjectArn=self._project_arn, VersionNames=[self.version_name]
        ).get("ProjectVersionDescriptions", [])
        if not versions:
            raise RekognitionError(f"project {self.project_name!r} has no version {self.version_name!r}")
        return str(versions[0]["Status"])

    def _wait_for(self, wanted: set[str], passing: set[str]) -> str:
        deadline = time.monotonic() + self.start_timeout_seconds
        while True:
            status = self.status()
            if status in wanted:
                return status
            if status not in passing:
                raise RekognitionError(f"model {self.version_name} is {status} while waiting for {sorted(wanted)}")
            if time.monotonic() > deadline:
                raise RekognitionError(f"model {self.version_name} still {status} after "
                                       f"{self.start_timeout_seconds:.0f} s")
            self._sleep(self.poll_seconds)

    def open(self) -> None:
        """Make sure the model runs; start it (and remember to stop it) when it does not."""
        status = self.status()
        if status == "STOPPING":
            status = self._wait_for({"STOPPED"}, {"STOPPING"})
        if status == "RUNNING":
            return
        if status == "STARTING":
            self._wait_for({"RUNNING"}, {"STARTING"})
            return
        if status not in ("STOPPED", "TRAINING_COMPLETED"):
            raise RekognitionError(f"model {self.version_name} is {status}; it cannot be started")
        self.client.start_project_version(ProjectVersionArn=self.arn, MinInferenceUnits=self.min_inference_units)
        self.started_here = True
        self._wait_for({"RUNNING"}, {"STARTING", "STOPPED", "TRAINING_COMPLETED"})

    def close(self) -> None:
        """Stop the model if this detector started it and the settings do not keep it running."""
        if self.started_here and not self.keep_running:
            self.client.stop_project_version(ProjectVersionArn=self.arn)
            self.started_here = False

    def _image_param(self, image: DecodedImage, source_ref: str | None) -> dict[str, Any]:
        if (source_ref and storage.is_s3(source_ref) and not image.exif_transposed
                and image.format in S3_FORMATS):
            loc = storage.parse_s3_uri(source_ref)
            return {"S3Object": {"Bucket": loc.bucket, "Name": loc.key}}
        # Rotated, non-JPEG/PNG or local images: send the upright pixels we decoded, so ratios refer to
        # the same frame as every other coordinate in the pipeline.
        im = Image.fromarray(image.pixels)
        if max(im.size) > MAX_INLINE_SIDE:
            im.thumbnail((MAX_INLINE_SIDE, MAX_INLINE_SIDE), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=92)
        return {"Bytes": buf.getvalue()}

    def detect_one(self, image: DecodedImage, source_ref: str | None) -> Detections:
        response = self.client.detect_custom_labels(
            ProjectVersionArn=self.arn, Image=self._image_param(image, source_ref),
            MinConfidence=self.min_confidence * 100.0,
        )
        boxes, scores = [], []
        for label in response.get("CustomLabels", []):
            geometry = label.get("Geometry", {}).get("BoundingBox")
            if label.get("Name") != self.label_name or not geometry:
                continue  # image-level labels carry no geometry
            x1, y1, x2, y2 = ratio_box_to_pixels(geometry, image.width, image.height)
            if x2 <= x1 or y2 <= y1:
                continue
            boxes.append((x1, y1, x2, y2))
            scores.append(min(max(float(label.get("Confidence", 0.0)) / 100.0, 0.0), 1.0))
        if not boxes:
            return Detections.empty()
        order = np.argsort(-np.asarray(scores), kind="stable")[:self.max_detections]
        return Detections(boxes=np.asarray(boxes, dtype=np.float64)[order],
                          scores=np.asarray(scores, dtype=np.float64)[order])

    def detect(self, batch: PreparedBatch) -> list[Detections]:
        return [self.detect_one(im, ref) for im, ref in zip(batch.images, batch.source_refs, strict=True)]
