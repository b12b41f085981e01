"""Keypoint schemas: names, left/right flip pairs, skeleton edges and OKS sigmas.

Two presets ship: ``incabin17`` (the points the in-cabin design names) and ``coco17`` (COCO's order and
sigmas, for users who bring COCO data or start from a COCO-pose checkpoint).
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

SchemaName = Literal["incabin17", "coco17"]

# Visibility on the wire follows COCO: 0 = not in the image / not labeled, 1 = occluded, 2 = visible.
V_OUTSIDE = 0
V_OCCLUDED = 1
V_VISIBLE = 2
VISIBILITY_NAMES = {V_OUTSIDE: "outside", V_OCCLUDED: "occluded", V_VISIBLE: "visible"}
VISIBILITY_CODES = {name: code for code, name in VISIBILITY_NAMES.items()}


class KeypointSchema(BaseModel):
    """A keypoint schema. Indexes everywhere in the project follow ``names``' order."""

    model_config = ConfigDict(frozen=True)

    name: str
    names: tuple[str, ...]
    flip_pairs: tuple[tuple[str, str], ...]
    skeleton: tuple[tuple[str, str], ...]
    sigmas: tuple[float, ...]

    @model_validator(mode="after")
    def _consistent(self) -> KeypointSchema:
        if len(set(self.names)) != len(self.names):
            raise ValueError("keypoint names must be unique")
        if len(self.sigmas) != len(self.names):
            raise ValueError(f"{len(self.sigmas)} sigmas for {len(self.names)} keypoints")
        known = set(self.names)
        for a, b in (*self.flip_pairs, *self.skeleton):
            if a not in known or b not in known:
                raise ValueError(f"edge or pair ({a}, {b}) names an unknown keypoint")
        return self

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    @cached_property
    def index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}

    @cached_property
    def flip_idx(self) -> list[int]:
        """The permutation ultralytics' ``flip_idx`` expects (each point's mirror, itself if central)."""
        idx = list(range(self.num_keypoints))
        for a, b in self.flip_pairs:
            ia, ib = self.index[a], self.index[b]
            idx[ia], idx[ib] = ib, ia
        return idx

    @cached_property
    def skeleton_idx(self) -> list[tuple[int, int]]:
        return [(self.index[a], self.index[b]) for a, b in self.skeleton]


def _lr(*parts: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"left_{p}", f"right_{p}") for p in parts)


INCABIN17 = KeypointSchema(
    name="incabin17",
    names=(
        "left_eye", "right_eye", "left_ear", "right_ear", "nose", "mouth", "neck",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
        "left_hip", "right_hip", "left_ankle", "right_ankle",
    ),
    flip_pairs=_lr("eye", "ear", "shoulder", "elbow", "wrist", "hip", "ankle"),
    skeleton=(
        ("left_eye", "right_eye"), ("left_eye", "nose"), ("right_eye", "nose"), ("left_eye", "left_ear"),
        ("right_eye", "right_ear"), ("nose", "mouth"), ("mouth", "neck"),
        ("neck", "left_shoulder"), ("neck", "right_shoulder"),
        ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
        ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"),
        ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"), ("left_hip", "right_hip"),
        ("left_hip", "left_ankle"), ("right_hip", "right_ankle"),
    ),
    # COCO's sigmas where COCO has the point; mouth like the nose, neck like the shoulders.
    sigmas=(0.025, 0.025, 0.035, 0.035, 0.026, 0.026, 0.079, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
            0.107, 0.107, 0.089, 0.089),
)

COCO17 = KeypointSchema(
    name="coco17",
    names=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
        "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    flip_pairs=_lr("eye", "ear", "shoulder", "elbow", "wrist", "hip", "knee", "ankle"),
    skeleton=(
        ("left_ankle", "left_knee"), ("left_knee", "left_hip"), ("right_ankle", "right_knee"),
        ("right_knee", "right_hip"), ("left_hip", "right_hip"), ("left_shoulder", "left_hip"),
        ("right_shoulder", "right_hip"), ("left_shoulder", "right_shoulder"),
        ("left_shoulder", "left_elbow"), ("right_shoulder", "right_elbow"), ("left_elbow", "left_wrist"),
        ("right_elbow", "right_wrist"), ("left_eye", "right_eye"), ("nose", "left_eye"),
        ("nose", "right_eye"), ("left_eye", "left_ear"), ("right_eye", "right_ear"),
        ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder"),
    ),
    sigmas=(0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
            0.087, 0.087, 0.089, 0.089),
)

PRESETS: dict[str, KeypointSchema] = {s.name: s for s in (INCABIN17, COCO17)}


def get_schema(name: str) -> KeypointSchema:
    """Return a preset schema by name, or raise a clear error listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown keypoint schema {name!r}; known: {', '.join(sorted(PRESETS))}") from None
