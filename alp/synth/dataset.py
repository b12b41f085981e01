"""Write a synthetic data set: JPEG images plus a Ground Truth manifest, through the storage adapter.

Layout under ``out`` (a folder or an ``s3://`` prefix)::

    images/s{seed}-{index:06d}.jpg   JPEG, quality 90, no metadata: same seed -> same bytes
    manifest.jsonl                   one line per image (head boxes + keypoints + ``alp-synth``)
    preview.png                      with ``preview=True``: a contact sheet with the truth drawn

Points outside the frame keep the (x, y) the skeleton puts them at, with ``v = 0`` (COCO would write
0, 0): consumers that need COCO's convention get it from :func:`alp.coco.manifest_to_coco`, and metrics
ignore ``v = 0`` points.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from alp import storage
from alp.manifest import (
    BoundingBoxLabel,
    BoxAnnotation,
    BoxMetadata,
    ImageSize,
    Keypoint,
    KeypointLabel,
    KeypointMetadata,
    ManifestLine,
    ObjectConfidence,
    PersonKeypoints,
    dumps_lines,
)
from alp.schema import INCABIN17
from alp.settings import Settings
from alp.synth.preview import contact_sheet, draw_truth
from alp.synth.scene import SceneTruth, SynthScene, render_scene

SYNTH_KEY = "alp-synth"
JOB_NAME = "synthetic-truth"
CREATION_DATE = "2024-01-01T00:00:00.000000"  # fixed, so the manifest's bytes depend only on the seed
JPEG_QUALITY = 90
PREVIEW_TILES = 12


def image_stem(seed: int, index: int) -> str:
    """Unique across seeds: the simulated workforce looks truth up by the image's file name."""
    return f"s{seed}-{index:06d}"


def encode_jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False)
    return buf.getvalue()


def truth_line(truth: SceneTruth, source_ref: str, settings: Settings | None = None) -> ManifestLine:
    """The manifest line for one scene: head boxes and keypoints in the project's Ground Truth formats."""
    settings = settings or Settings()
    schema = INCABIN17
    size = ImageSize(width=truth.width, height=truth.height, depth=3)
    boxes, persons = [], []
    for i, person in enumerate(truth.persons):
        left, top, w, h = person.head_box
        boxes.append(BoxAnnotation(class_id=0, left=left, top=top, width=w, height=h))
        kps = [Keypoint(name=name, x=round(float(x), 2), y=round(float(y), 2), v=int(v))
               for name, (x, y, v) in zip(schema.names, person.keypoints, strict=True)]
        persons.append(PersonKeypoints(keypoints=kps, head_box_index=i, bbox=[float(v) for v in person.bbox]))
    box_label = BoundingBoxLabel(image_size=[size], annotations=boxes)
    box_meta = BoxMetadata(objects=[ObjectConfidence(confidence=1.0) for _ in boxes], class_map={"0": "head"},
                           human_annotated="yes", creation_date=CREATION_DATE, job_name=JOB_NAME)
    kp_label = KeypointLabel(image_size=[size], keypoint_schema=schema.name, persons=persons)
    kp_meta = KeypointMetadata(human_annotated="yes", creation_date=CREATION_DATE, job_name=JOB_NAME)
    info: dict[str, Any] = {"seed": truth.seed, "index": truth.index, "hard": truth.hard,
                            "camera": truth.camera, "mode": truth.mode, "factors": list(truth.factors),
                            "roles": [p.role for p in truth.persons]}
    return (ManifestLine.for_image(source_ref, **{SYNTH_KEY: info})
            .with_boxes(settings.labeling.head_label_attribute, box_label, box_meta)
            .with_keypoints(settings.labeling.keypoint_label_attribute, kp_label, kp_meta))


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
