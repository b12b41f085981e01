"""Synthetic in-cabin frames with exact truth (head boxes, ``incabin17`` keypoints, three-state visibility).

Python API: :func:`render_scene` (one picture and its truth) and :func:`generate_dataset` (images plus a
Ground Truth manifest under a folder or ``s3://`` prefix). CLI: ``alp synth-data``; speed: ``alp bench synth``.
"""

from __future__ import annotations

from alp.synth.dataset import SYNTH_KEY, encode_jpeg, generate_dataset, image_stem, truth_line
from alp.synth.scene import PersonTruth, SceneTruth, SynthScene, render_scene

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
]
