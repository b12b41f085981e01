"""Synthetic in-cabin frames with exact truth (head boxes, ``incabin17`` keypoints, three-state visibility).

Python API: :func:`render_scene` (one picture and its truth), :func:`generate_dataset` (images plus a
Ground Truth manifest under a folder or ``s3://`` prefix) and :func:`truth_line_from_labels` (the one
builder of truth lines). CLI: ``alp synth-data``; speed: ``alp bench synth``.
"""

from __future__ import annotations

from alp.synth.dataset import encode_jpeg, generate_dataset, image_stem
from alp.synth.scene import PersonTruth, SceneTruth, SynthScene, render_scene
from alp.synth.truth import SYNTH_KEY, truth_line, truth_line_from_labels

__all__ = [
    "SYNTH_KEY",
    "PersonTruth",
    "SceneTruth",
    "SynthScene",
    "encode_jpeg",
    "generate_dataset",
    "image_stem",
    "render_scene",
    "truth_line",
    "truth_line_from_labels",
]
