"""The Rekognition Custom Labels head backend, against botocore's Stubber (moto lacks Custom Labels).

The Stubber validates every request against the real service model, so wrong parameter names or types
fail here as they would against AWS.
"""

from __future__ import annotations

import numpy as np
import pytest
from botocore.stub import ANY, Stubber

from alp import aws
from inference.head_backends import (
    RekognitionError,
    RekognitionHeadDetector,
    parse_project_version_arn,
    ratio_box_to_pixels,
)
from inference.image_io import DecodedImage

PROJECT_ARN = "arn:aws:rekognition:us-east-1:123456789012:project/heads/1700000000000"
VERSION_ARN = "arn:aws:rekognition:us-east-1:123456789012:project/heads/version/heads.2026-01-01T00.00.00/1700000000001"


def _image(w=200, h=100, transposed=False, fmt="JPEG"):
    return DecodedImage(pixels=np.zeros((h, w, 3), np.uint8), format=fmt, original_mode="RGB",
                        exif_transposed=transposed)


@pytest.fixture
def rekognition():
    aws.reset_clients()
    client = aws.client("rekognition")
    with Stubber(client) as stub:
        yield stub
    aws.reset_clients()


def _describe(stub, status):
    stub.add_response("describe_projects", {"ProjectDescriptions": [{"ProjectArn": PROJECT_ARN}]},
                      {"ProjectNames": ["heads"]}) if not getattr(stub, "_described", False) else None
    stub._described = True
    stub.add_response("describe_project_versions",
                      {"ProjectVersionDescriptions": [{"ProjectVersionArn": VERSION_ARN, "Status": status}]},
                      {"ProjectArn": PROJECT_ARN, "VersionNames": ["heads.2026-01-01T00.00.00"]})


def test_arn_and_geometry_helpers():
    assert parse_project_version_arn(VERSION_ARN) == ("heads", "heads.2026-01-01T00.00.00")
    with pytest.raises(RekognitionError, match="not a Rekognition"):
        parse_project_version_arn("arn:aws:s3:::bucket")
    # Ratios straying outside [0, 1] at the edges are clipped to the image.
    assert ratio_box_to_pixels({"Left": -0.05, "Top": 0.5, "Width": 0.3, "Height": 0.7}, 200, 100) == (0, 50, 50, 100)


def test_stopped_model_is_started_waited_for_used_and_stopped(rekognition):
    sleeps = []
    det = RekognitionHeadDetector(VERSION_ARN, min_confidence=0.25, sleep=sleeps.append)
    _describe(rekognition, "STOPPED")
    rekognition.add_response("start_project_version", {"Status": "STARTING"},
                             {"ProjectVersionArn": VERSION_ARN, "MinInferenceUnits": 1})
    _describe(rekognition, "STARTING")
    _describe(rekognition, "RUNNING")
    rekognition.add_response(
        "detect_custom_labels",
        {"CustomLabels": [
            {"Name": "head", "Confidence": 91.5,
             "Geometry": {"BoundingBox": {"Left": 0.1, "Top": 0.2, "Width": 0.25, "Height": 0.5}}},
            {"Name": "head", "Confidence": 99.0,
             "Geometry": {"BoundingBox": {"Left": 0.9, "Top": -0.01, "Width": 0.2, "Height": 0.3}}},
            {"Name": "cabin", "Confidence": 99.0},  # image-level label: no geometry, ignored
        ]},
        {"ProjectVersionArn": VERSION_ARN, "Image": {"S3Object": {"Bucket": "data", "Name": "in/a.jpg"}},
         "MinConfidence": 25.0},
    )
    rekognition.add_response("stop_project_version", {"Status": "STOPPING"}, {"ProjectVersionArn": VERSION_ARN})
    det.open()
    assert det.started_here and sleeps == [30.0]
    boxes = det.detect_one(_image(), "s3://data/in/a.jpg")
    np.testing.assert_allclose(boxes.scores, [0.99, 0.915])  # 0-100 -> 0-1, best first
    np.testing.assert_allclose(boxes.boxes, [[180, 0, 200, 29], [20, 20, 70, 70]])  # pixels, clipped
    det.close()
    rekognition.assert_no_pending_responses()


def test_running_model_is_left_running_and_rotated_images_are_sent_as_bytes(rekognition):
    det = RekognitionHeadDetector(VERSION_ARN, min_confidence=0.5)
    _describe(rekognition, "RUNNING")
    rekognition.add_response("detect_custom_labels", {"CustomLabels": []},
                             {"ProjectVersionArn": VERSION_ARN, "Image": {"Bytes": ANY}, "MinConfidence": 50.0})
    det.open()
    assert len(det.detect_one(_image(transposed=True), "s3://data/in/b.jpg")) == 0
    det.close()  # no stop_project_version queued: the Stubber would fail on an unexpected call
    rekognition.assert_no_pending_responses()


def test_detections_are_capped_like_the_onnx_detectors_keeping_the_most_confident(rekognition):
    det = RekognitionHeadDetector(VERSION_ARN, min_confidence=0.1, max_detections=3)
    _describe(rekognition, "RUNNING")
    labels = [{"Name": "head", "Confidence": 20.0 + i,
               "Geometry": {"BoundingBox": {"Left": 0.01 * i, "Top": 0.1, "Width": 0.1, "Height": 0.2}}}
              for i in range(30)]
    rekognition.add_response("detect_custom_labels", {"CustomLabels": [{"Name": "cabin", "Confidence": 99.9},
                                                                       *labels]},
                             {"ProjectVersionArn": VERSION_ARN, "Image": ANY, "MinConfidence": 10.0})
    det.open()
    found = det.detect_one(_image(), "s3://data/in/c.jpg")
    np.testing.assert_allclose(found.scores, [0.49, 0.48, 0.47])
    det.close()
    rekognition.assert_no_pending_responses()


def test_keep_running_setting_skips_the_stop(rekognition):
    det = RekognitionHeadDetector(VERSION_ARN, min_confidence=0.5, keep_running=True, sleep=lambda s: None)
    _describe(rekognition, "STOPPED")
    rekognition.add_response("start_project_version", {"Status": "STARTING"},
                             {"ProjectVersionArn": VERSION_ARN, "MinInferenceUnits": 1})
    _describe(rekognition, "RUNNING")
    det.open()
    det.close()
    rekognition.assert_no_pending_responses()


def test_failed_model_is_a_clear_error(rekognition):
    det = RekognitionHeadDetector(VERSION_ARN, min_confidence=0.5)
    _describe(rekognition, "TRAINING_FAILED")
    with pytest.raises(RekognitionError, match="TRAINING_FAILED"):
        det.open()
