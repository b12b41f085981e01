"""Per-keypoint visibility thresholds: fitted on the validation split, shipped in bundle.json, used by the engine."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from bundle_factory import bright_image, scripted_bundle
from hypothesis import given, settings
from hypothesis import strategies as st

from alp import manifest, storage
from alp.bundle import DESCRIPTOR_NAME, VisibilityThreshold, parse_descriptor
from alp.settings import Settings
from inference.engine import InferenceEngine
from inference.image_io import DecodedImage
from training.visibility_fit import KeypointSamples, collect_samples, fit_keypoint, fit_thresholds


def _samples(n: int, seed: int = 0) -> KeypointSamples:
    """A keypoint both models see differently from the configured rule: occluded points keep a visible-model
    confidence around 0.7 (above the configured 0.6), visible ones around 0.9; outside ones a main conf ~0.3."""
    rng = random.Random(seed)
    s = KeypointSamples()
    for i in range(n):
        v = i % 3
        main = rng.uniform(0.05, 0.4) if v == 0 else rng.uniform(0.7, 1.0)
        visible = {0: rng.uniform(0.0, 0.3), 1: rng.uniform(0.62, 0.78), 2: rng.uniform(0.85, 1.0)}[v]
        s.main.append(main)
        s.visible.append(visible)
        s.truth.append(v)
    return s


def test_a_keypoint_the_configured_pair_misreads_gets_a_pair_that_separates_it() -> None:
    fitted, configured, best = fit_keypoint(_samples(90), (0.6, 0.6))
    assert configured == 60 and best == 90  # every occluded point read as visible before; none after
    assert 0.4 <= fitted.main < 0.7 and 0.78 <= fitted.additional < 0.85


def test_too_few_points_or_one_class_keep_the_configured_pair() -> None:
    assert fit_keypoint(_samples(12), (0.6, 0.6))[0] == VisibilityThreshold(main=0.6, additional=0.6)
    one_class = KeypointSamples(main=[0.9] * 40, visible=[0.9] * 40, truth=[2] * 40)
    assert fit_keypoint(one_class, (0.6, 0.6))[0] == VisibilityThreshold(main=0.6, additional=0.6)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.integers(0, 2)), min_size=0, max_size=80))
def test_the_fit_is_never_worse_than_the_configured_pair_on_its_own_samples(
        points: list[tuple[float, float, int]]) -> None:
    s = KeypointSamples(main=[p[0] for p in points], visible=[p[1] for p in points], truth=[p[2] for p in points])
    fit = fit_thresholds({"nose": s}, (0.6, 0.6), min_samples=10)
    if points:
        assert fit.accuracy_fitted is not None and fit.accuracy_configured is not None
        assert fit.accuracy_fitted >= fit.accuracy_configured


def _person(box: tuple[float, float, float, float], conf: tuple[float, float], v: int, names: list[str]
            ) -> manifest.PersonKeypoints:
    x, y, w, h = box
    return manifest.PersonKeypoints(bbox=[x, y, w, h], keypoints=[
        manifest.Keypoint(name=n, x=x + 1, y=y + 1, v=v, score=conf[0], score_visible=conf[1]) for n in names])


def test_predicted_persons_pair_with_the_labeled_person_their_box_overlaps() -> None:
    names = ["nose", "neck"]
    size = manifest.ImageSize(width=100, height=100)

    def line(persons: list[manifest.PersonKeypoints]) -> manifest.ManifestLine:
        return manifest.ManifestLine({"source-ref": "s3://b/a.jpg"}).with_keypoints(
            "keypoints", manifest.KeypointLabel(image_size=[size], keypoint_schema="incabin17", persons=persons),
            manifest.KeypointMetadata(job_name="j"))

    truth = line([_person((0, 0, 40, 80), (1, 1), 1, names), _person((60, 0, 40, 80), (1, 1), 2, names)])
    predicted = line([_person((58, 2, 40, 78), (0.9, 0.95), 2, names), _person((1, 0, 40, 80), (0.8, 0.2), 1, names),
                      _person((0, 90, 5, 5), (0.5, 0.5), 2, names)])  # the third overlaps no one
    samples = collect_samples([truth], [predicted], names, "keypoints")
    nose = samples["nose"]
    assert sorted(zip(nose.truth, nose.main, nose.visible, strict=True)) == [(1, 0.8, 0.2), (2, 0.9, 0.95)]


def test_the_engine_classifies_with_the_bundle_thresholds(tmp_path: Path) -> None:
    """The scripted bundle's visible-only model is half as sure of the last two points: occluded under the
    configured pair; with the bundle's own (lower) additional threshold for those two, visible."""
    bundle = scripted_bundle(tmp_path / "bundle")
    image = DecodedImage(pixels=bright_image(240), format="PNG", original_mode="RGB", exif_transposed=False)
    config = Settings()
    with InferenceEngine.from_bundle(str(bundle), config, tmp_path / "c1") as engine:
        before = engine.predict_decoded([image])[0].persons[0].visibility.tolist()
    assert before[-2:] == [1, 1] and before[0] == 2
    desc_uri = str(bundle / DESCRIPTOR_NAME)
    desc = parse_descriptor(storage.read_text(desc_uri))
    names = list(desc.keypoint_names)
    desc.visibility_thresholds = {n: VisibilityThreshold(main=0.6, additional=0.2 if n in names[-2:] else 0.6)
                                  for n in names}
    storage.write_text(desc_uri, desc.to_json())
    with InferenceEngine.from_bundle(str(bundle), config, tmp_path / "c2") as engine:
        after = engine.predict_decoded([image])[0]
    assert after.persons[0].visibility.tolist()[-2:] == [2, 2]
    assert after.additional_threshold == tuple(0.2 if n in names[-2:] else 0.6 for n in names)


@pytest.mark.parametrize("bad", [{"main": 1.5, "additional": 0.5}, {"main": 0.5}])
def test_a_bundle_with_a_broken_threshold_is_refused(bad: dict[str, float], tmp_path: Path) -> None:
    bundle = scripted_bundle(tmp_path / "bundle")
    text = (bundle / DESCRIPTOR_NAME).read_text()
    assert '"visibility_thresholds": null' in text
    text = text.replace('"visibility_thresholds": null', '"visibility_thresholds": {"nose": ' + json.dumps(bad) + "}")
    with pytest.raises(ValueError, match="visibility_thresholds"):
        parse_descriptor(text)
