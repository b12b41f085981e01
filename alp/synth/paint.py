"""Painter's-algorithm drawing with an id map: the depth order is explicit, so visibility is exact.

Every primitive is drawn twice with the same geometry: in colour into the picture and with its draw-order
id into an id map. After drawing, the id map says which primitive is frontmost at every pixel. A keypoint
belongs to a primitive (the wrist to the later-drawn of forearm and hand); it is visible exactly when the
frontmost primitive at its pixel was drawn no later than its own, i.e. nothing was painted over it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

Point = tuple[float, float]
RGB = tuple[int, int, int]
MAX_PRIMITIVES = 65_000


@dataclass
class Detail:
    """A colour-only decoration drawn inside its primitive's silhouette (highlight, pupil, eyebrow)."""

    kind: Literal["polygon", "line", "ellipse"]
    points: list[Point]
    color: RGB
    width: int = 1


@dataclass
class Primitive:
    kind: Literal["polygon", "line", "ring"]
    points: list[Point]
    color: RGB
    depth: float
    owner: str = ""
    outline: RGB | None = None
    width: int = 1
    details: list[Detail] = field(default_factory=list)
    order: int = -1  # draw order (1-based id in the id map), set by Painter.render


class Painter:
    """Collects primitives, draws them far-to-near, and keeps the id map of what ended up in front."""

    def __init__(self, size: tuple[int, int], background: RGB):
        self.size = size
        self.background = background
        self.primitives: list[Primitive] = []

    def add(self, prim: Primitive) -> Primitive:
        if len(prim.points) >= 2:
            self.primitives.append(prim)
        return prim

    def render(self) -> tuple[Image.Image, NDArray[np.int32]]:
        """Draw everything; returns the colour picture and the id map (0 = background)."""
        if len(self.primitives) > MAX_PRIMITIVES:
            raise ValueError(f"scene has {len(self.primitives)} primitives, more than {MAX_PRIMITIVES}")
        picture = Image.new("RGB", self.size, self.background)
        ids = Image.new("I", self.size, 0)
        draw, draw_ids = ImageDraw.Draw(picture), ImageDraw.Draw(ids)
        # Far to near; ties keep insertion order (sorted is stable), so a scene is drawn the same way every time.
        ordered = sorted(self.primitives, key=lambda p: -p.depth)
        for order, prim in enumerate(ordered, 1):
            prim.order = order
            _draw(draw, prim.kind, prim.points, prim.color, prim.outline, prim.width)
            _draw(draw_ids, prim.kind, prim.points, order, order if prim.outline else None, prim.width)
            for d in prim.details:
                _draw_detail(draw, d)
        for prim in self.primitives:
            if prim.order < 0:
                prim.order = 0
        return picture, np.asarray(ids, dtype=np.int32)


def _draw(draw: ImageDraw.ImageDraw, kind: str, pts: Sequence[Point], fill: RGB | int,
          outline: RGB | int | None, width: int) -> None:
    if kind == "polygon":
        if len(pts) >= 3:
            draw.polygon(list(pts), fill=fill, outline=outline)
    elif kind == "line":
        draw.line(list(pts), fill=fill, width=max(1, width), joint="curve")
        if width > 3:  # round caps, like a limb's or a rim's end
            r = width / 2.0
            for x, y in (pts[0], pts[-1]):
                draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    elif kind == "ring":
        closed = [*pts, pts[0], pts[1]]
        draw.line(closed, fill=fill, width=max(1, width), joint="curve")


def _draw_detail(draw: ImageDraw.ImageDraw, d: Detail) -> None:
    if d.kind == "polygon" and len(d.points) >= 3:
        draw.polygon(d.points, fill=d.color)
    elif d.kind == "line" and len(d.points) >= 2:
        draw.line(d.points, fill=d.color, width=max(1, d.width), joint="curve")
    elif d.kind == "ellipse" and len(d.points) == 2:
        (x0, y0), (x1, y1) = d.points
        draw.ellipse((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), fill=d.color)


def ellipse_points(center: Point, axes: NDArray[np.float64], n: int = 28) -> list[Point]:
    """Polygon of an ellipse given by its two 2D semi-axis vectors (columns of ``axes``)."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    pts = center + np.outer(np.cos(t), axes[:, 0]) + np.outer(np.sin(t), axes[:, 1])
    return [(float(x), float(y)) for x, y in pts]


def capsule_points(p0: Point, p1: Point, r0: float, r1: float, n_cap: int = 6) -> list[Point]:
    """Outline of a tapered limb from ``p0`` (radius ``r0``) to ``p1`` (radius ``r1``) with round ends."""
    a, b = np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64)
    d = b - a
    length = float(np.hypot(d[0], d[1]))
    if length < 1e-6:
        return ellipse_points((float(a[0]), float(a[1])), np.diag([max(r0, r1)] * 2), 12)
    ang = float(np.arctan2(d[1], d[0]))
    out: list[Point] = []
    for center, r, start in ((b, r1, ang - np.pi / 2), (a, r0, ang + np.pi / 2)):
        for t in np.linspace(start, start + np.pi, n_cap + 1):
            out.append((float(center[0] + r * np.cos(t)), float(center[1] + r * np.sin(t))))
    return out


def convex_hull(points: Sequence[Point]) -> list[Point]:
    """Andrew's monotone chain; returns the hull counter-clockwise without repeating the first point."""
    pts = sorted(set(points))
    if len(pts) <= 2:
        return list(pts)

    def cross(o: Point, a: Point, b: Point) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[Point] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[Point] = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def visibility_at(id_map: NDArray[np.int32], x: float, y: float, own_order: int) -> int:
    """COCO visibility of a point owned by the primitive drawn ``own_order``-th: 0 outside the frame,
    1 something was drawn over it, 2 visible."""
    h, w = id_map.shape
    if not (0.0 <= x < w and 0.0 <= y < h):
        return 0
    front = int(id_map[int(y), int(x)])
    return 2 if front <= own_order else 1
