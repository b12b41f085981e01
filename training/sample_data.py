"""Small labeled dataset versions drawn on the fly, for the training tests and ``alp bench train``.

Each image shows one or two stick figures (17 keypoints of the chosen schema) on a noisy background,
with a head box around the face points, some points hidden behind an occluder (v=1) and some figures
cut by the image border (points outside, v=0). The version is written in the dataset-version format
(``manifest.jsonl`` with the head-box and keypoint labels and ``alp-split``, plus ``dataset.json``), so
the preparation and training code read it exactly as they read a labeled version.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

from alp import storage
from alp.manifest import (
    BoundingBoxLabel,
    BoxAnnotation,
    ImageSize,
    Keypoint,
    KeypointLabel,
    PersonKeypoints,
    write_manifest,
)
from alp.schema import V_OCCLUDED, V_OUTSIDE, V_VISIBLE, KeypointSchema
from alp.settings import Settings
from alp.synth.truth import truth_line_from_labels

# A standing figure in a unit box (x right, y down); knees only exist in coco17.
_TEMPLATE: dict[str, tuple[float, float]] = {
    "nose": (0.50, 0.10), "left_eye": (0.54, 0.07), "right_eye": (0.46, 0.07), "left_ear": (0.58, 0.09),
    "right_ear": (0.42, 0.09), "mouth": (0.50, 0.14), "neck": (0.50, 0.20),
    "left_shoulder": (0.66, 0.24), "right_shoulder": (0.34, 0.24), "left_elbow": (0.74, 0.40),
    "right_elbow": (0.26, 0.40), "left_wrist": (0.78, 0.55), "right_wrist": (0.22, 0.55),
    "left_hip": (0.60, 0.58), "right_hip": (0.40, 0.58), "left_knee": (0.61, 0.78), "right_knee": (0.39, 0.78),
    "left_ankle": (0.62, 0.97), "right_ankle": (0.38, 0.97),
}
_HEAD_POINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "mouth")


def _figure(schema: KeypointSchema, rng: random.Random, img_w: int, img_h: int) -> tuple[list[tuple[float, float]], tuple[float, float, float, float]]:
    h = rng.uniform(0.55, 0.95) * img_h
    w = h * rng.uniform(0.45, 0.6)
    x0 = rng.uniform(-0.15 * w, img_w - 0.85 * w)
    y0 = rng.uniform(-0.05 * h, img_h - 0.8 * h)
    pts = []
    for name in schema.names:
        tx, ty = _TEMPLATE[name]
        pts.append((x0 + (tx + rng.uniform(-0.03, 0.03)) * w, y0 + (ty + rng.uniform(-0.02, 0.02)) * h))
    return pts, (x0, y0, w, h)


def draw_sample(schema: KeypointSchema, seed: int, img_w: int = 192, img_h: int = 160,
                max_persons: int = 2) -> tuple[bytes, BoundingBoxLabel, KeypointLabel]:
    """One JPEG and its labels (head boxes, persons with keypoints in ``schema`` order)."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    bg = tuple(rng.randint(30, 90) for _ in range(3))
    img = Image.new("RGB", (img_w, img_h), bg)
    draw = ImageDraw.Draw(img)
    for _ in range(40):  # background clutter
        x, y = rng.uniform(0, img_w), rng.uniform(0, img_h)
        draw.rectangle((x, y, x + rng.uniform(2, 10), y + rng.uniform(2, 10)),
                       fill=tuple(rng.randint(20, 110) for _ in range(3)))
    boxes: list[BoxAnnotation] = []
    persons: list[PersonKeypoints] = []
    for _ in range(rng.randint(1, max_persons)):
        pts, (bx, by, bw, bh) = _figure(schema, rng, img_w, img_h)
        color = tuple(rng.randint(170, 255) for _ in range(3))
        for a, b in schema.skeleton_idx:
            draw.line((*pts[a], *pts[b]), fill=color, width=3)
        head_idx = [schema.index[n] for n in _HEAD_POINTS if n in schema.index]
        hx = [pts[i][0] for i in head_idx]
        hy = [pts[i][1] for i in head_idx]
        pad = 0.06 * bh
        head = (min(hx) - pad, min(hy) - pad, max(hx) + pad, max(hy) + pad)
        draw.ellipse(head, outline=color, width=2)
        for x, y in pts:
            draw.ellipse((x - 2.5, y - 2.5, x + 2.5, y + 2.5), fill=(255, 60, 60))
        # an occluder over one arm: those points are labeled but occluded (v=1)
        occluded: set[int] = set()
        if rng.random() < 0.6:
            side = rng.choice(("left", "right"))
            arm = [schema.index[f"{side}_{p}"] for p in ("elbow", "wrist")]
            ax = [pts[i][0] for i in arm]
            ay = [pts[i][1] for i in arm]
            draw.rectangle((min(ax) - 6, min(ay) - 6, max(ax) + 6, max(ay) + 6), fill=(90, 90, 100))
            occluded.update(arm)
        keypoints = []
        for i, (x, y) in enumerate(pts):
            inside = 0 <= x < img_w and 0 <= y < img_h
            v = V_OUTSIDE if not inside else (V_OCCLUDED if i in occluded else V_VISIBLE)
            keypoints.append(Keypoint(name=schema.names[i], x=min(max(x, 0), img_w - 1) if inside else 0.0,
                                      y=min(max(y, 0), img_h - 1) if inside else 0.0, v=v))
        x1, y1 = max(head[0], 0.0), max(head[1], 0.0)
        x2, y2 = min(head[2], img_w - 1.0), min(head[3], img_h - 1.0)
        head_index = None
        if x2 - x1 > 2 and y2 - y1 > 2:
            head_index = len(boxes)
            boxes.append(BoxAnnotation(class_id=0, left=x1, top=y1, width=x2 - x1, height=y2 - y1))
        pl, pt = max(bx, 0.0), max(by, 0.0)
        persons.append(PersonKeypoints(keypoints=keypoints, head_box_index=head_index,
                                       bbox=[pl, pt, min(bx + bw, img_w) - pl, min(by + bh, img_h) - pt]))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    size = [ImageSize(width=img_w, height=img_h)]
    return (buf.getvalue(), BoundingBoxLabel(image_size=size, annotations=boxes),
            KeypointLabel(image_size=size, keypoint_schema=schema.name, persons=persons))


def write_sample_version(root: str, settings: Settings, *, version: str = "v0001", n_train: int = 6,
                         n_val: int = 2, n_test: int = 2, seed: int = 0, img_w: int = 192,
                         img_h: int = 160) -> str:
    """Write images under ``<root>images/`` and a dataset version under ``<root>datasets/<version>/``.

    ``root`` is a local folder or an ``s3://`` prefix. Returns the version's URI (with a trailing slash).
    """
    schema = settings.schema_
    lines = []
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    for i, split in enumerate(splits):
        data, boxes, kps = draw_sample(schema, seed * 100_003 + i, img_w, img_h)
        uri = storage.join(root, "images", f"img{seed:03d}_{i:05d}.jpg")
        storage.write_bytes(uri, data, content_type="image/jpeg")
        lines.append(truth_line_from_labels(uri, boxes, kps, settings, job_name="sample",
                                            extra={"alp-split": split}))
    base = storage.join(root, settings.storage.datasets_prefix, version)
    write_manifest(storage.join(base, "manifest.jsonl"), lines)
    info = {"version": version, "keypoint_schema": schema.name, "images": len(lines),
            "splits": {s: splits.count(s) for s in ("train", "val", "test")}}
    storage.write_text(storage.join(base, "dataset.json"), json.dumps(info, indent=2))
    if not storage.is_s3(base):
        Path(base).mkdir(parents=True, exist_ok=True)
    return base.rstrip("/") + "/"
