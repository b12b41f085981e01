"""A contact sheet with the truth drawn, for a person to check by eye.

Visible keypoints are filled dots, occluded ones hollow rings, points outside the frame are not drawn;
skeleton edges join points that are in the frame; head boxes are rectangles. One colour per person.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from alp.schema import INCABIN17, V_OCCLUDED, V_VISIBLE, KeypointSchema

PERSON_COLORS = ((255, 64, 64), (64, 200, 255), (255, 210, 40), (120, 255, 120), (230, 100, 255))


def draw_truth(image: Image.Image, persons: Sequence[tuple[NDArray[np.float64], Sequence[float] | None]],
               schema: KeypointSchema = INCABIN17, scale: float = 1.0) -> Image.Image:
    """Return a copy of ``image`` with each person's keypoints (K, 3) and head box (l, t, w, h) drawn."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    r = max(2.0, 2.5 * scale)
    for n, (kps, head_box) in enumerate(persons):
        color = PERSON_COLORS[n % len(PERSON_COLORS)]
        pts = np.asarray(kps, dtype=np.float64) * np.array([scale, scale, 1.0])
        for a, b in schema.skeleton_idx:
            if pts[a, 2] > 0 and pts[b, 2] > 0:
                draw.line([(pts[a, 0], pts[a, 1]), (pts[b, 0], pts[b, 1])], fill=color, width=1)
        for x, y, v in pts:
            box = (x - r, y - r, x + r, y + r)
            if v == V_VISIBLE:
                draw.ellipse(box, fill=color, outline=(0, 0, 0))
            elif v == V_OCCLUDED:
                draw.ellipse(box, outline=color, width=max(1, int(r / 2)))
        if head_box is not None:
            left, top, w, h = (float(v) * scale for v in head_box)
            draw.rectangle((left, top, left + w, top + h), outline=color, width=max(1, int(scale + 0.5)))
    return out


def contact_sheet(tiles: Sequence[Image.Image], *, columns: int = 4, tile_width: int = 320,
                  captions: Sequence[str] | None = None) -> Image.Image:
    """Arrange already-annotated pictures in a grid (each scaled to ``tile_width``)."""
    if not tiles:
        raise ValueError("contact sheet needs at least one picture")
    cols = max(1, min(columns, len(tiles)))
    rows = (len(tiles) + cols - 1) // cols
    w0, h0 = tiles[0].size
    tile_h = int(round(tile_width * h0 / w0))
    sheet = Image.new("RGB", (cols * tile_width + (cols + 1) * 4, rows * (tile_h + 14) + 4), (25, 25, 25))
    draw = ImageDraw.Draw(sheet)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        x, y = 4 + c * (tile_width + 4), 4 + r * (tile_h + 14)
        sheet.paste(tile.resize((tile_width, tile_h), Image.Resampling.BILINEAR), (x, y))
        if captions:
            draw.text((x + 2, y + tile_h), captions[i][:60], fill=(220, 220, 220))
    return sheet
