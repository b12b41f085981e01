"""Keypoint schema presets."""

from __future__ import annotations

import pytest

from alp.schema import COCO17, INCABIN17, KeypointSchema, get_schema


def test_incabin17_names_the_points_of_the_design():
    assert INCABIN17.num_keypoints == 17
    for name in ("left_eye", "right_ear", "nose", "mouth", "neck", "left_wrist", "right_ankle"):
        assert name in INCABIN17.names


@pytest.mark.parametrize("schema", [INCABIN17, COCO17])
def test_flip_idx_is_an_involution_that_swaps_left_and_right(schema):
    flip = schema.flip_idx
    assert sorted(flip) == list(range(schema.num_keypoints))
    for i, j in enumerate(flip):
        assert flip[j] == i
        a, b = schema.names[i], schema.names[j]
        if a.startswith("left_"):
            assert b == "right_" + a[5:]
        elif not a.startswith("right_"):
            assert i == j


def test_coco17_has_cocos_order_and_sigmas():
    assert COCO17.names[0] == "nose" and COCO17.names[-1] == "right_ankle"
    assert COCO17.sigmas[0] == pytest.approx(0.026)
    assert COCO17.sigmas[13] == pytest.approx(0.087)


def test_unknown_schema_and_inconsistent_schema_are_refused():
    with pytest.raises(ValueError, match="unknown keypoint schema"):
        get_schema("nope")
    with pytest.raises(ValueError):
        KeypointSchema(name="x", names=("a", "b"), flip_pairs=(), skeleton=(("a", "c"),), sigmas=(0.1, 0.1))
    with pytest.raises(ValueError):
        KeypointSchema(name="x", names=("a", "b"), flip_pairs=(), skeleton=(), sigmas=(0.1,))
