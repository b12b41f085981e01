"""Ground Truth manifest lines: both spellings parse, round trips are exact, bad lines are clear errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alp import manifest
from alp.schema import INCABIN17

DOCUMENTED_BOX_LINE = {
    "source-ref": "s3://bucket/images/a.jpg",
    "heads": {
        "image_size": [{"width": 640, "height": 480, "depth": 3}],
        "annotations": [{"class_id": 0, "left": 10, "top": 20, "width": 30, "height": 40}],
    },
    "heads-metadata": {
        "objects": [{"confidence": 0.91}],
        "class-map": {"0": "head"},
        "type": "groundtruth/object-detection",
        "human-annotated": "yes",
        "creation-date": "2026-01-01T00:00:00.000000",
        "job-name": "labeling-job/heads",
    },
}


def _keypoint_label() -> manifest.KeypointLabel:
    kps = [manifest.Keypoint(name=n, x=float(i), y=float(2 * i), v=i % 3) for i, n in enumerate(INCABIN17.names)]
    return manifest.KeypointLabel(image_size=[manifest.ImageSize(width=640, height=480)],
                         persons=[manifest.PersonKeypoints(keypoints=kps, head_box_index=0, bbox=[1, 2, 3, 4])])


def test_documented_bounding_box_line_parses():
    line = manifest.ManifestLine.parse(json.dumps(DOCUMENTED_BOX_LINE))
    label, meta = line.boxes("heads")
    assert label.size.width == 640 and label.annotations[0].xyxy == (10, 20, 40, 60)
    assert meta.objects[0].confidence == 0.91 and meta.class_map == {"0": "head"}
    assert meta.job_name == "labeling-job/heads" and meta.human_annotated == "yes"


def test_observed_spellings_parse_too():
    observed = {
        "source-ref": "s3://bucket/a.jpg",
        "kp": _keypoint_label().dump(),
        "kp-metadata": {"type": "groundTruth/custom", "job_name": "j1", "creation_date": "2026-01-01",
                        "human-annotated": "no"},
    }
    label, meta = manifest.ManifestLine(observed).keypoints("kp")
    assert meta.job_name == "j1" and meta.creation_date == "2026-01-01" and meta.type == "groundtruth/custom"
    label.check_schema(INCABIN17.names)


def test_round_trip_is_byte_exact_and_writes_observed_spellings():
    line = manifest.ManifestLine.for_image("s3://b/x.jpg").with_boxes(
        "heads",
        manifest.BoundingBoxLabel(image_size=[manifest.ImageSize(width=10, height=10)],
                         annotations=[manifest.BoxAnnotation(left=1, top=1, width=2, height=2)]),
        manifest.BoxMetadata(objects=[manifest.ObjectConfidence(confidence=0.5)], job_name="j", creation_date="d"),
    ).with_keypoints("kp", _keypoint_label(), manifest.KeypointMetadata(job_name="j", creation_date="d"))
    text = line.to_json()
    again = manifest.ManifestLine.parse(text)
    assert again.to_json() == text
    meta = json.loads(text)["heads-metadata"]
    assert {"class-map", "human-annotated", "creation-date", "job-name"} <= set(meta)
    assert json.loads(text)["kp"]["schema"] == "incabin17"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "JSON list"),
        ('{"foo": 1}', "neither 'source-ref' nor 'source'"),
        ('{"source-ref": 5}', "non-empty string"),
        ('{"source-ref": "s3://b/' + "x" * 100_001 + '"}', "longer than"),
    ],
)
def test_bad_lines_are_clear_errors(text, message):
    with pytest.raises(manifest.ManifestError, match=message):
        manifest.ManifestLine.parse(text)


def test_bad_labels_name_the_field():
    bad = dict(DOCUMENTED_BOX_LINE)
    bad["heads"] = {"image_size": [{"width": 640, "height": 480}, {"width": 1, "height": 1}], "annotations": []}
    with pytest.raises(manifest.ManifestError, match="image_size"):
        manifest.ManifestLine(bad).boxes("heads")
    nan = {"source-ref": "s3://b/a.jpg", "kp": _keypoint_label().dump()}
    nan["kp"]["persons"][0]["keypoints"][0]["x"] = float("nan")
    with pytest.raises(manifest.ManifestError, match="finite"):
        manifest.ManifestLine(nan).keypoints("kp")


def test_wrong_number_of_keypoints_is_refused():
    label = _keypoint_label()
    label.persons[0].keypoints.pop()
    with pytest.raises(manifest.ManifestError, match="expected 17 keypoints"):
        label.check_schema(INCABIN17.names)


def test_preannotation_round_trip():
    pre = manifest.PreAnnotation(route="human", reason="box 0 conf 0.31 < 0.5",
                        boxes=[manifest.ScoredBox(left=1, top=2, width=3, height=4, score=0.31)],
                        persons=_keypoint_label().persons)
    line = manifest.ManifestLine.for_image("s3://b/a.jpg").with_model("alp-preannotation", pre)
    assert manifest.ManifestLine.parse(line.to_json()).preannotation() == pre


def test_parse_lines_names_the_bad_line_number():
    with pytest.raises(manifest.ManifestError, match="line 2"):
        list(manifest.parse_lines(['{"source-ref": "a"}', "{oops"]))


def test_write_and_read_manifest_locally(tmp_path):
    lines = [manifest.ManifestLine.for_image(f"/img/{i}.jpg") for i in range(3)]
    uri = manifest.write_manifest(str(tmp_path / "m.jsonl"), lines)
    assert manifest.read_manifest(uri) == lines
    assert manifest.dumps_lines([]) == ""


@given(st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k not in ("source-ref", "source")),
                       st.one_of(st.integers(), st.text(), st.booleans(), st.none()), max_size=5))
def test_unknown_keys_pass_through(extra):
    line = manifest.ManifestLine({"source-ref": "s3://b/a.jpg", **extra})
    assert manifest.ManifestLine.parse(line.to_json()).data == line.data
