"""A pinhole camera fixed in the cabin, and the cabin's coordinate frame.

Cabin frame (metres): ``x`` across the car (image right at zero yaw), ``y`` up from the floor, ``z`` from
the windscreen towards the rear. The camera sits at the front and looks rearwards (+z), pitched down
by ``pitch`` radians, so depth = distance along the viewing axis and larger means farther away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Vec = NDArray[np.float64]
NEAR = 0.05  # metres: geometry closer than this to the lens is cut away


@dataclass(frozen=True)
class Camera:
    """Pinhole camera; ``project`` maps cabin points (N, 3) to pixels (N, 2) and depths (N,)."""

    position: tuple[float, float, float]
    pitch: float
    yaw: float
    focal: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def looking_back(cls, position: tuple[float, float, float], *, pitch_deg: float, yaw_deg: float,
                     hfov_deg: float, size: tuple[int, int], shift: tuple[float, float] = (0.0, 0.0)) -> Camera:
        width, height = size
        focal = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
        return cls(position, math.radians(pitch_deg), math.radians(yaw_deg), focal,
                   width / 2.0 + shift[0] * width, height / 2.0 + shift[1] * height, width, height)

    def __post_init__(self) -> None:
        cp, sp = math.cos(self.pitch), math.sin(self.pitch)
        cyw, syw = math.cos(self.yaw), math.sin(self.yaw)
        forward = np.array([syw * cp, -sp, cyw * cp])
        right = np.array([cyw, 0.0, -syw])
        down = np.cross(right, forward)
        # Computed once: projection runs thousands of times per frame.
        object.__setattr__(self, "_rotation", np.stack([right, down, forward], axis=1))
        object.__setattr__(self, "_origin", np.asarray(self.position, dtype=np.float64))

    def to_camera(self, points: Vec) -> Vec:
        """Cabin points (N, 3) -> camera coordinates (N, 3): right, down, depth."""
        d = np.asarray(points, dtype=np.float64).reshape(-1, 3) - self._origin  # type: ignore[attr-defined]
        return np.asarray(d @ self._rotation)  # type: ignore[attr-defined]

    def project(self, points: Vec) -> tuple[Vec, Vec]:
        cam = self.to_camera(points)
        depth = cam[:, 2]
        xy = cam[:, :2] * (self.focal / np.maximum(depth, NEAR))[:, None] + (self.cx, self.cy)
        return xy, depth

    def pixels_per_metre(self, depth: float) -> float:
        return self.focal / max(depth, NEAR)


def clip_polygon_near(cam_points: Vec) -> Vec:
    """Cut a camera-space polygon (N, 3) at the near plane (Sutherland-Hodgman); may return < 3 points."""
    out: list[Vec] = []
    n = len(cam_points)
    for i in range(n):
        cur, nxt = cam_points[i], cam_points[(i + 1) % n]
        cur_in, nxt_in = cur[2] >= NEAR, nxt[2] >= NEAR
        if cur_in:
            out.append(cur)
        if cur_in != nxt_in:
            t = (NEAR - cur[2]) / (nxt[2] - cur[2])
            out.append(cur + t * (nxt - cur))
    return np.array(out).reshape(-1, 3)
