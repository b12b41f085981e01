"""Near misses: person candidates just under the detection threshold that overlap no kept person."""

from __future__ import annotations

import numpy as np

from inference.engine import split_near_misses
from inference.onnx_models import Detections


def _dets(boxes: list[list[float]], scores: list[float]) -> Detections:
    return Detections(boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4), scores=np.array(scores),
                      keypoints=np.zeros((len(scores), 3, 3)))


def test_kept_detections_are_those_decoding_at_the_threshold_would_keep_and_near_misses_stand_apart():
    dets = _dets([[0, 0, 100, 100], [5, 5, 100, 100], [200, 0, 300, 100], [400, 0, 500, 100]],
                 [0.9, 0.2, 0.15, 0.25])
    kept, near = split_near_misses(dets, 0.25)
    assert kept.scores.tolist() == [0.9]  # strictly above, as decoding compares
    assert kept.keypoints is not None and kept.keypoints.shape == (1, 3, 3)
    # the 0.2 candidate overlaps the kept person (the same person, scored lower); the other two stand apart
    assert near == 2


def test_nothing_kept_means_every_candidate_is_a_near_miss_and_nothing_found_nothing_missed():
    assert split_near_misses(_dets([[0, 0, 10, 10]], [0.2]), 0.25)[1] == 1
    kept, near = split_near_misses(_dets([], []), 0.25)
    assert len(kept) == 0 and near == 0
