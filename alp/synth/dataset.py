"""Write a synthetic data set: JPEG images plus a Ground Truth manifest, through the storage adapter.

Layout under ``out`` (a folder or an ``s3://`` prefix)::

    images/s{seed}-{index:06d}.jpg   JPEG, quality 90, no metadata: same seed -> same bytes
    manifest.jsonl                   one line per image (head boxes + keypoints + ``alp-synth``)
    preview.png                      with ``preview=True``: a contact sheet with the truth drawn

Each manifest line comes from :func:`alp.synth.truth.truth_line`.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from alp import storage
from alp.manifest import ManifestLine, dumps_lines
from alp.schema import INCABIN17
from alp.settings import Settings
from alp.synth.preview import contact_sheet, draw_truth
from alp.synth.scene import SceneTruth, SynthScene, render_scene
from alp.synth.truth import truth_line

JPEG_QUALITY = 90
PREVIEW_TILES = 12


def image_stem(seed: int, index: int) -> str:
    """Unique across seeds: the simulated workforce looks truth up by the image's file name."""
    return f"s{seed}-{index:06d}"


def encode_jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False)
    return buf.getvalue()


def generate_dataset(out: str, n: int, seed: int, hard_share: float = 0.3, size: tuple[int, int] = (640, 480),
                     settings: Settings | None = None, progress: bool = True, preview: bool = False) -> str:
    """Render ``n`` scenes, write images and ``manifest.jsonl`` under ``out``; returns the manifest URI."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    settings = settings or Settings()
    if settings.keypoint_schema != INCABIN17.name:
        raise ValueError(f"the generator writes incabin17 keypoints; settings ask for {settings.keypoint_schema!r}")
    lines: list[ManifestLine] = []
    tiles: list[Image.Image] = []
    captions: list[str] = []
    indices: range = range(n)
    iterator: Any = indices
    if progress:
        from tqdm import tqdm

        iterator = tqdm(indices, desc="synth-data", unit="img", disable=None)
    for index in iterator:
        scene = render_scene(seed, index, size=size, hard_share=hard_share)
        uri = storage.join(out, "images", f"{image_stem(seed, index)}.jpg")
        storage.write_bytes(uri, encode_jpeg(scene.image), content_type="image/jpeg")
        lines.append(truth_line(scene.truth, uri, settings))
        if preview and len(tiles) < PREVIEW_TILES:
            tiles.append(preview_tile(scene))
            captions.append(_caption(scene.truth))
    manifest_uri = storage.join(out, "manifest.jsonl")
    storage.write_text(manifest_uri, dumps_lines(lines), content_type="application/jsonl")
    if preview:
        buf = io.BytesIO()
        contact_sheet(tiles, columns=4, tile_width=min(400, size[0] * 2 if size[0] < 200 else size[0]),
                      captions=captions).save(buf, format="PNG")
        storage.write_bytes(storage.join(out, "preview.png"), buf.getvalue(), content_type="image/png")
    return manifest_uri


def preview_tile(scene: SynthScene) -> Image.Image:
    return draw_truth(scene.image, [(p.keypoints, p.head_box) for p in scene.truth.persons])


def _caption(truth: SceneTruth) -> str:
    hard = f" hard:{'+'.join(truth.factors)}" if truth.hard else ""
    return f"#{truth.index} {truth.camera} {truth.mode} {len(truth.persons)}p{hard}"
