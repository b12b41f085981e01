"""One synthetic in-cabin frame with exact truth: head boxes, 17 keypoints and three-state visibility.

A scene is a cabin (windows, seats, headrests, dashboard, steering wheel) seen by a fixed camera
(``dashboard``: on the dashboard looking back; ``overhead``: at the roof console looking down), 1 to 3
occupants posed in 3D (:mod:`alp.synth.body`), drawn far-to-near by :class:`~alp.synth.paint.Painter`.
Visibility is read back from the painter's id map (see :mod:`alp.synth.paint`), so it reports what was
actually drawn in front of each point. Everything random comes from one generator seeded with
``(seed, index)``: the same pair gives the same picture and truth, whatever else is generated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFilter

from alp.schema import INCABIN17, KeypointSchema
from alp.synth.body import FACE_POINTS, ArmPose, Occupant, Role, pose_occupant
from alp.synth.camera import NEAR, Camera, clip_polygon_near
from alp.synth.paint import (
    RGB,
    Detail,
    Painter,
    Point,
    Primitive,
    capsule_points,
    convex_hull,
    ellipse_points,
    visibility_at,
)

Vec = NDArray[np.float64]
CameraKind = Literal["dashboard", "overhead"]
Mode = Literal["ir", "rgb"]
HardFactor = Literal["small", "occlusion", "out_of_frame", "dark", "blur"]
HARD_FACTORS: tuple[HardFactor, ...] = ("small", "occlusion", "out_of_frame", "dark", "blur")

# Seat hip points (x across, y up, z back), left-hand drive: the driver sits at +x (image right).
FRONT_X, FRONT_Z, REAR_Z = 0.37, 1.12, 2.08
REAR_XS = (-0.42, 0.0, 0.42)
WHEEL_CENTER = (0.37, 0.8, 0.72)
WHEEL_RADIUS, WHEEL_TILT = 0.18, math.radians(28.0)


@dataclass
class PersonTruth:
    """Truth for one occupant. ``keypoints`` is (K, 3): x, y in pixels and COCO visibility 2/1/0."""

    role: Role
    keypoints: NDArray[np.float64]
    head_box: tuple[float, float, float, float]  # left, top, width, height (clipped to the frame)
    bbox: tuple[float, float, float, float]  # tight box around the person's drawn (frontmost) pixels
    arm_poses: tuple[ArmPose, ArmPose]


@dataclass
class SceneTruth:
    seed: int
    index: int
    width: int
    height: int
    camera: CameraKind
    mode: Mode
    hard: bool
    factors: tuple[HardFactor, ...]
    persons: list[PersonTruth] = field(default_factory=list)


@dataclass
class SynthScene:
    image: Image.Image
    truth: SceneTruth


@dataclass
class _Style:
    skin: RGB
    hair: RGB
    hair_style: Literal["short", "long", "bald", "bangs"]
    shirt: RGB
    bare_forearms: bool
    trousers: RGB
    glasses: Literal["none", "clear", "sun"]
    mask: bool


@dataclass
class _Light:
    """Colour of a surface at a depth: IR frames are lit by the camera's own emitter (falls off with
    distance, no colour); RGB frames by the cabin's ambient light."""

    mode: Mode
    gain: float

    def __call__(self, color: RGB, depth: float, *, emissive: bool = False) -> RGB:
        if self.mode == "ir":
            g = 0.3 * color[0] + 0.55 * color[1] + 0.15 * color[2]
            f = 1.0 if emissive else float(np.clip((0.95 / max(depth, 0.2)) ** 1.6, 0.22, 1.35))
            v = int(np.clip(g * f * self.gain, 0, 255))
            return (v, v, v)
        f = 1.0 if emissive else float(np.clip(1.08 - 0.12 * depth, 0.6, 1.05))
        return tuple(int(np.clip(c * f * self.gain, 0, 255)) for c in color)  # type: ignore[return-value]


def _shade(c: RGB, k: float) -> RGB:
    return (int(min(255, c[0] * k)), int(min(255, c[1] * k)), int(min(255, c[2] * k)))


SKIN_TONES: tuple[RGB, ...] = ((236, 200, 170), (224, 178, 140), (198, 144, 104), (160, 110, 75),
                               (120, 80, 55), (90, 60, 42), (245, 215, 190))
HAIR_COLORS: tuple[RGB, ...] = ((25, 20, 18), (60, 40, 25), (110, 75, 40), (190, 160, 100), (150, 150, 150),
                                (40, 30, 28), (130, 50, 25))
CLOTHES: tuple[RGB, ...] = ((40, 60, 120), (150, 30, 40), (50, 110, 60), (200, 200, 200), (30, 30, 35),
                            (120, 120, 130), (200, 160, 60), (90, 50, 110), (220, 120, 60), (20, 90, 120))
TROUSERS: tuple[RGB, ...] = ((30, 40, 70), (25, 25, 28), (150, 130, 100), (70, 70, 75), (50, 60, 90))


def _pick(rng: np.random.Generator, options: tuple[RGB, ...]) -> RGB:
    c = options[int(rng.integers(len(options)))]
    k = float(rng.uniform(0.88, 1.12))
    return _shade(c, k)


def _sample_style(rng: np.random.Generator, hard: bool) -> _Style:
    hair_style: Literal["short", "long", "bald", "bangs"] = ("short", "long", "bald", "bangs")[
        int(rng.choice(4, p=[0.5, 0.3, 0.08, 0.12]))
    ]
    g = rng.random()
    glasses: Literal["none", "clear", "sun"] = "none"
    if g < (0.25 if hard else 0.1):
        glasses = "sun"
    elif g < 0.4:
        glasses = "clear"
    return _Style(
        skin=_pick(rng, SKIN_TONES), hair=_pick(rng, HAIR_COLORS), hair_style=hair_style,
        shirt=_pick(rng, CLOTHES), bare_forearms=bool(rng.random() < 0.35), trousers=_pick(rng, TROUSERS),
        glasses=glasses, mask=bool(rng.random() < (0.15 if hard else 0.03)),
    )


class _Scene:
    """Builds the primitives of one frame."""

    def __init__(self, cam: Camera, light: _Light, painter: Painter):
        self.cam, self.light, self.painter = cam, light, painter

    # --- projection helpers ------------------------------------------------------------------------
    def p2(self, p: Vec) -> tuple[Point, float]:
        xy, depth = self.cam.project(np.asarray(p).reshape(1, 3))
        return (float(xy[0, 0]), float(xy[0, 1])), float(depth[0])

    def px(self, metres: float, depth: float) -> float:
        return metres * self.cam.pixels_per_metre(depth)

    def poly3d(self, pts: list[tuple[float, float, float]], color: RGB, *, owner: str = "cabin",
               depth_bias: float = 0.0, emissive: bool = False, outline: float | None = 0.8,
               details: list[Detail] | None = None) -> Primitive | None:
        cam_pts = clip_polygon_near(self.cam.to_camera(np.array(pts, dtype=np.float64)))
        if len(cam_pts) < 3:
            return None
        z = cam_pts[:, 2]
        xy = np.stack([self.cam.cx + self.cam.focal * cam_pts[:, 0] / z,
                       self.cam.cy + self.cam.focal * cam_pts[:, 1] / z], axis=1)
        depth = float(z.mean()) + depth_bias
        c = self.light(color, depth, emissive=emissive)
        prim = Primitive("polygon", [(float(a), float(b)) for a, b in xy], c, depth, owner,
                         outline=_shade(c, outline) if outline else None, details=details or [])
        return self.painter.add(prim)

    # --- cabin -------------------------------------------------------------------------------------
    def cabin(self, rng: np.random.Generator, *, night: bool, occupied_front: set[float]) -> None:
        L = self.light
        trim = _pick(rng, ((70, 68, 66), (45, 45, 48), (110, 100, 90), (160, 150, 140)))
        seat = _pick(rng, ((45, 45, 50), (60, 55, 52), (150, 125, 95), (90, 35, 30), (30, 30, 34)))
        sky: RGB = (35, 38, 50) if night else _pick(rng, ((205, 220, 240), (230, 230, 225), (180, 200, 225)))
        # Rear window and side windows (outside light: not lit by the IR emitter).
        outside_detail = [] if night else self._window_details(rng)
        self.poly3d([(-0.58, 0.86, 2.7), (0.58, 0.86, 2.7), (0.5, 1.14, 2.62), (-0.5, 1.14, 2.62)], sky,
                    emissive=True, details=outside_detail)
        for sx in (-1.0, 1.0):
            x = 0.74 * sx
            self.poly3d([(x, 0.84, 0.55), (x, 0.84, 1.35), (x * 0.93, 1.16, 1.35), (x * 0.93, 1.16, 0.75)], sky,
                        emissive=True)
            self.poly3d([(x, 0.84, 1.47), (x, 0.84, 2.3), (x * 0.93, 1.14, 2.2), (x * 0.93, 1.16, 1.47)], sky,
                        emissive=True)
            # Door panel with the armrest.
            self.poly3d([(x, 0.05, 0.45), (x, 0.84, 0.45), (x, 0.84, 2.45), (x, 0.05, 2.45)], _shade(trim, 0.8))
            self.poly3d([(x * 0.96, 0.55, 0.75), (x * 0.96, 0.62, 0.75), (x * 0.96, 0.62, 1.3),
                         (x * 0.96, 0.55, 1.3)], _shade(trim, 0.6))
        # Rear bench: backrest, headrests, cushion.
        self.poly3d([(-0.68, 0.44, 2.3), (0.68, 0.44, 2.3), (0.66, 1.0, 2.46), (-0.66, 1.0, 2.46)], seat)
        for rx in REAR_XS:
            self.poly3d([(rx - 0.12, 1.03, 2.46), (rx + 0.12, 1.03, 2.46), (rx + 0.11, 1.16, 2.47),
                         (rx - 0.11, 1.16, 2.47)], _shade(seat, 0.9))
        self.poly3d([(-0.68, 0.44, 1.75), (0.68, 0.44, 1.75), (0.68, 0.46, 2.3), (-0.68, 0.46, 2.3)],
                    _shade(seat, 1.1))
        # Front seats: cushion, backrest, headrest (the headrest can hide a rear passenger's head).
        for sx in (-FRONT_X, FRONT_X):
            k = 1.0 if sx in occupied_front else 1.05
            self.poly3d([(sx - 0.26, 0.44, 0.82), (sx + 0.26, 0.44, 0.82), (sx + 0.26, 0.46, 1.3),
                         (sx - 0.26, 0.46, 1.3)], _shade(seat, 1.15 * k))
            self.poly3d([(sx - 0.27, 0.46, 1.32), (sx + 0.27, 0.46, 1.32), (sx + 0.25, 1.02, 1.44),
                         (sx - 0.25, 1.02, 1.44)], _shade(seat, k), depth_bias=0.03,
                        details=self._seam(sx, seat))
            for post in (-0.07, 0.07):
                a, da = self.p2(np.array([sx + post, 1.02, 1.45]))
                b, _ = self.p2(np.array([sx + post, 1.08, 1.46]))
                self.painter.add(Primitive("line", [a, b], L((140, 140, 140), da), da + 0.01, "cabin",
                                           width=max(1, int(self.px(0.012, da)))))
            self.poly3d([(sx - 0.13, 1.06, 1.46), (sx + 0.13, 1.06, 1.46), (sx + 0.12, 1.26, 1.48),
                         (sx - 0.12, 1.26, 1.48)], _shade(seat, 0.95))
        # Centre console and dashboard.
        self.poly3d([(-0.11, 0.56, 0.62), (0.11, 0.56, 0.62), (0.11, 0.58, 1.3), (-0.11, 0.58, 1.3)],
                    _shade(trim, 0.55))
        self.poly3d([(-0.11, 0.3, 0.62), (0.11, 0.3, 0.62), (0.11, 0.56, 0.62), (-0.11, 0.56, 0.62)],
                    _shade(trim, 0.45))
        dash: RGB = _shade(trim, 0.5)
        self.poly3d([(-0.85, 0.8, 0.3), (0.85, 0.8, 0.3), (0.85, 0.82, 0.62), (-0.85, 0.82, 0.62)], dash,
                    depth_bias=-0.2)
        self.poly3d([(-0.85, 0.45, 0.62), (0.85, 0.45, 0.62), (0.85, 0.82, 0.62), (-0.85, 0.82, 0.62)],
                    _shade(dash, 0.8), depth_bias=-0.2)

    def _seam(self, sx: float, seat: RGB) -> list[Detail]:
        a, _ = self.p2(np.array([sx, 0.5, 1.34]))
        b, _ = self.p2(np.array([sx, 0.98, 1.43]))
        return [Detail("line", [a, b], _shade(seat, 0.75), 1)]

    def _window_details(self, rng: np.random.Generator) -> list[Detail]:
        out: list[Detail] = []
        for _ in range(int(rng.integers(0, 4))):
            x = float(rng.uniform(-0.45, 0.35))
            w = float(rng.uniform(0.05, 0.2))
            a, _ = self.p2(np.array([x, 0.87, 2.69]))
            b, _ = self.p2(np.array([x + w, 0.87 + rng.uniform(0.05, 0.2), 2.69]))
            out.append(Detail("ellipse", [a, b], _pick(rng, ((60, 110, 60), (90, 90, 95), (140, 140, 150)))))
        return out

    def steering_wheel(self, driver_sign: float) -> tuple[Vec, Vec, Vec, Vec]:
        """Draw the wheel; returns its centre, the two in-plane axes and the normal pointing at the driver."""
        c = np.array([WHEEL_CENTER[0] * driver_sign, WHEEL_CENTER[1], WHEEL_CENTER[2]])
        e1 = np.array([1.0, 0.0, 0.0])
        e2 = np.array([0.0, math.cos(WHEEL_TILT), math.sin(WHEEL_TILT)])
        normal = np.array([0.0, -math.sin(WHEEL_TILT), math.cos(WHEEL_TILT)])
        t = np.linspace(0.0, 2.0 * np.pi, 36, endpoint=False)
        rim = c + WHEEL_RADIUS * (np.outer(np.cos(t), e1) + np.outer(np.sin(t), e2))
        xy, depth = self.cam.project(rim)
        if float(depth.min()) < NEAR * 2:
            return c, e1, e2, normal
        (cx, cy), dc = self.p2(c)
        black = self.light((28, 28, 30), dc)
        col_end, dcol = self.p2(c + normal * 0.25 - np.array([0.0, 0.05, 0.0]))
        self.painter.add(Primitive("line", [col_end, (cx, cy)], _shade(black, 1.2), dcol,
                                   "cabin", width=max(2, int(self.px(0.07, dc)))))
        for ang in (0.0, np.pi, -np.pi / 2):
            end, _ = self.p2(c + WHEEL_RADIUS * (math.cos(ang) * e1 + math.sin(ang) * e2))
            self.painter.add(Primitive("line", [(cx, cy), end], _shade(black, 1.3), dc + 0.002, "cabin",
                                       width=max(2, int(self.px(0.03, dc)))))
        hub = ellipse_points((cx, cy), np.array([[self.px(0.06, dc), 0.0], [0.0, self.px(0.05, dc)]]), 16)
        self.painter.add(Primitive("polygon", hub, _shade(black, 1.5), dc + 0.001, "cabin",
                                   outline=black))
        self.painter.add(Primitive("ring", [(float(x), float(y)) for x, y in xy], black, dc - 0.01, "cabin",
                                   width=max(2, int(self.px(0.036, dc))),
                                   details=[]))
        return c, e1, e2, normal

    # --- occupants ---------------------------------------------------------------------------------
    def occupant(self, occ: Occupant, style: _Style, tag: str, torso_belt: bool
                 ) -> tuple[dict[str, list[Primitive]], list[Point]]:
        """Add an occupant's primitives; returns each keypoint's owning primitives and the head outline."""
        proj = {name: self.p2(p) for name, p in occ.joints.items()}
        own: dict[str, list[Primitive]] = {}
        d_torso = self._torso(occ, style, tag, torso_belt)
        head_outline = self._head(occ, style, tag, proj, d_torso, own)
        # Limbs: thighs and shins, upper arms, forearms, hands (depth = the limb's own, slightly forward).
        for side in ("left", "right"):
            self._leg(occ, style, side, tag, own)
            self._arm(occ, style, side, tag, proj, own)
        return own, head_outline

    def _torso(self, occ: Occupant, style: _Style, tag: str, torso_belt: bool) -> float:
        """Torso: hull of a box around shoulders and hips, and the seat belt; returns its depth (the chest's)."""
        L, j = self.light, occ.joints
        s = occ.scale
        l_axis, u_axis, f_axis = occ.torso_rot[:, 0], occ.torso_rot[:, 1], occ.torso_rot[:, 2]
        corners = []
        for base, half in ((j["neck"] - u_axis * 0.03 * s, 0.2 * s), (j["hip_center"] - u_axis * 0.02, 0.17 * s)):
            for sl in (-1.0, 1.0):
                for sf in (-1.0, 1.0):
                    corners.append(base + l_axis * sl * half + f_axis * sf * 0.09 * s)
        cxy, _ = self.cam.project(np.array(corners))
        chest = j["neck"] * 0.6 + j["hip_center"] * 0.4 + f_axis * 0.05
        _, d_torso = self.p2(chest)
        hull = convex_hull([(float(x), float(y)) for x, y in cxy])
        shirt = L(style.shirt, d_torso)
        if torso_belt:
            sign = 1.0 if occ.joints["neck"][0] < 0 else -1.0  # the belt comes down from the door side
            a, _ = self.p2(j["neck"] * 0.45 + j["left_shoulder" if sign > 0 else "right_shoulder"] * 0.55
                           + f_axis * 0.09 * s)
            b, _ = self.p2(j["right_hip" if sign > 0 else "left_hip"] * 0.8 + j["hip_center"] * 0.2 + f_axis * 0.1 * s)
            belt = Primitive("line", [a, b], L((35, 35, 38), d_torso), d_torso - 0.06, tag,
                             width=max(2, int(self.px(0.045, d_torso))))
            self.painter.add(belt)
        self.painter.add(Primitive("polygon", hull, shirt, d_torso, tag, outline=_shade(shirt, 0.7), details=[]))
        return d_torso

    def _head(self, occ: Occupant, style: _Style, tag: str, proj: dict[str, tuple[Point, float]], d_torso: float,
              own: dict[str, list[Primitive]]) -> list[Point]:
        """Head, face features, hair, neck (recorded in ``own``); returns the skull's outline."""
        s = occ.scale
        (hx, hy), d_head_real = self.p2(occ.head_center)
        d_head = min(d_head_real, d_torso - 0.03)
        axes2d = self._ellipsoid_axes(occ)
        head_outline = ellipse_points((hx, hy), axes2d, 32)
        skin = self.light(style.skin, d_head)
        # A soft highlight on the upper face, inside the skull's outline (colour only).
        rx, ry = float(np.abs(axes2d[0]).max()), float(np.abs(axes2d[1]).max())
        glow = [(hx - 0.7 * rx, hy - 0.75 * ry), (hx + 0.4 * rx, hy + 0.35 * ry)]
        self.painter.add(Primitive("polygon", head_outline, skin, d_head, tag, outline=_shade(skin, 0.75),
                                   details=[Detail("ellipse", glow, _shade(skin, 1.08))]))
        neck_top, _ = self.p2(occ.head_center - occ.head_rot[:, 1] * occ.head_radii[1] * 0.55)
        neck_prim = self.painter.add(Primitive("line", [proj["neck"][0], neck_top], _shade(skin, 0.92),
                                               d_head + 0.015, tag, width=max(2, int(self.px(0.1 * s, d_head)))))
        own["neck"] = [neck_prim]
        self._hair(occ, style, axes2d, (hx, hy), d_head, tag)
        for name, (az, el, rf) in FACE_POINTS.items():
            (fx, fy), d_real = proj[name]
            d_feat = d_head + (d_real - d_head_real)
            own[name] = [self._face_feature(name, (fx, fy), d_feat, occ, style, az, el, rf, skin, tag)]
        if style.glasses != "none" or style.mask:
            self._face_wear(occ, style, d_head, d_head_real, tag)
        return head_outline

    def _leg(self, occ: Occupant, style: _Style, side: str, tag: str, own: dict[str, list[Primitive]]) -> None:
        """Thigh, shin and foot of one side; the hip point belongs to the thigh, the ankle to shin and foot."""
        j, s = occ.joints, occ.scale
        hip, knee, ankle = j[f"{side}_hip"], j[f"{side}_knee"], j[f"{side}_ankle"]
        thigh = self._limb(hip, knee, 0.08 * s, 0.065 * s, style.trousers, tag)
        shin = self._limb(knee, ankle, 0.055 * s, 0.045 * s, style.trousers, tag)
        foot_c = ankle + np.array([0.0, -0.03, -0.08 * s])
        (fx, fy), dfoot = self.p2(foot_c)
        r = self.px(0.06 * s, dfoot)
        foot = self.painter.add(Primitive("polygon", ellipse_points((fx, fy), np.diag([r, r * 0.6]), 14),
                                          self.light((30, 30, 32), dfoot), min(dfoot, shin.depth) - 0.005, tag))
        own[f"{side}_hip"] = [thigh]
        own[f"{side}_ankle"] = [shin, foot]

    def _arm(self, occ: Occupant, style: _Style, side: str, tag: str, proj: dict[str, tuple[Point, float]],
             own: dict[str, list[Primitive]]) -> None:
        """Upper arm, forearm and hand of one side, recorded as the owners of shoulder, elbow and wrist."""
        j, s = occ.joints, occ.scale
        shoulder, elbow, wrist = j[f"{side}_shoulder"], j[f"{side}_elbow"], j[f"{side}_wrist"]
        upper = self._limb(shoulder, elbow, 0.05 * s, 0.042 * s, style.shirt, tag, bias=0.03)
        fore_color = style.skin if style.bare_forearms else style.shirt
        fore = self._limb(elbow, wrist, 0.042 * s, 0.033 * s, fore_color, tag, bias=0.03)
        direction = wrist - elbow
        direction = direction / max(float(np.linalg.norm(direction)), 1e-9)
        # The hand: an oval from the wrist along the forearm (a loose fist), covering the wrist point. It
        # sits at the wrist's depth: a hand gripping the wheel from behind disappears behind the rim.
        (wx, wy), dwrist = proj[f"{side}_wrist"]
        (tx, ty), dhand = self.p2(wrist + direction * 0.085 * s)
        k = self.px(1.0, dhand)
        hand_skin = self.light(style.skin, dhand)
        hand = self.painter.add(Primitive("polygon", capsule_points((wx, wy), (tx, ty), 0.03 * s * k,
                                                                    0.036 * s * k), hand_skin,
                                          min(dwrist - 0.005, fore.depth - 0.002), tag,
                                          outline=_shade(hand_skin, 0.75)))
        own[f"{side}_shoulder"] = [upper]
        own[f"{side}_elbow"] = [upper, fore]
        own[f"{side}_wrist"] = [fore, hand]

    def _limb(self, a: Vec, b: Vec, ra: float, rb: float, color: RGB, tag: str, bias: float = 0.02) -> Primitive:
        (ax, ay), da = self.p2(a)
        (bx, by), db = self.p2(b)
        depth = (da + db) / 2.0 - bias
        c = self.light(color, depth)
        pts = capsule_points((ax, ay), (bx, by), self.px(ra, da), self.px(rb, db))
        hi = Detail("line", [(ax + (bx - ax) * 0.15, ay + (by - ay) * 0.15), (ax + (bx - ax) * 0.85, ay + (by - ay) * 0.85)],
                    _shade(c, 1.15), max(1, int(self.px(min(ra, rb) * 0.6, depth))))
        prim = Primitive("polygon", pts, c, depth, tag, outline=_shade(c, 0.65), details=[hi])
        return self.painter.add(prim)

    def _ellipsoid_axes(self, occ: Occupant) -> NDArray[np.float64]:
        """2D semi-axes of the head's silhouette (orthographic at the head's depth: exact for an ellipsoid)."""
        cam_c = self.cam.to_camera(occ.head_center.reshape(1, 3))[0]
        scale = self.cam.focal / max(float(cam_c[2]), NEAR)
        m = np.zeros((2, 2))
        for i in range(3):
            v = self.cam.to_camera((occ.head_center + occ.head_rot[:, i] * occ.head_radii[i]).reshape(1, 3))[0] - cam_c
            p = v[:2] * scale
            m += np.outer(p, p)
        vals, vecs = np.linalg.eigh(m)
        return np.asarray(vecs * np.sqrt(np.maximum(vals, 1e-6)))

    def _hair(self, occ: Occupant, style: _Style, axes2d: NDArray[np.float64], c: Point, d_head: float,
              tag: str) -> None:
        if style.hair_style == "bald":
            return
        L = self.light
        hair = L(style.hair, d_head)
        rz = occ.head_radii[2]
        # Volume behind the head (seen around the skull's top and sides).
        up2d, _ = self.p2(occ.head_center + occ.head_rot[:, 1] * occ.head_radii[1])
        up = np.array([up2d[0] - c[0], up2d[1] - c[1]])
        back_axes = axes2d * 1.12
        center = (c[0] + up[0] * 0.08, c[1] + up[1] * 0.08)
        if style.hair_style == "long":
            back_axes = axes2d * np.array([1.2, 1.45])
            center = (c[0] - up[0] * 0.35, c[1] - up[1] * 0.35)
        self.painter.add(Primitive("polygon", ellipse_points(center, back_axes, 28), _shade(hair, 0.85),
                                   d_head + rz * 0.6, tag))
        # Fringe: the part of the head outline above the hairline, in front of the face.
        line = {"short": 0.45, "long": 0.4, "bangs": 0.05}[style.hair_style]
        t = np.linspace(0.0, 2.0 * np.pi, 40, endpoint=False)
        outline = np.array(c) + np.outer(np.cos(t), axes2d[:, 0] * 1.04) + np.outer(np.sin(t), axes2d[:, 1] * 1.04)
        upn = up / max(float(np.linalg.norm(up)), 1e-9)
        height = (outline - np.array(c)) @ upn / max(float(np.linalg.norm(up)), 1e-9)
        cap = outline[height > line]
        if len(cap) >= 3:
            self.painter.add(Primitive("polygon", [(float(x), float(y)) for x, y in cap], hair,
                                       d_head - rz * 1.05, tag))
        if style.hair_style == "long":
            # Side locks hang over the ears.
            for sign in (-1.0, 1.0):
                top, dt = self.p2(occ.head_center + occ.head_rot[:, 0] * sign * occ.head_radii[0] * 0.95
                                  + occ.head_rot[:, 1] * occ.head_radii[1] * 0.4)
                bottom, _ = self.p2(occ.head_center + occ.head_rot[:, 0] * sign * occ.head_radii[0] * 1.0
                                    - occ.head_rot[:, 1] * occ.head_radii[1] * 0.9
                                    - occ.head_rot[:, 2] * occ.head_radii[2] * 0.3)
                if dt < d_head + rz * 0.3:  # only the side that faces the camera hangs in front
                    self.painter.add(Primitive("polygon", capsule_points(top, bottom, self.px(0.03, dt),
                                                                         self.px(0.02, dt)),
                                               hair, d_head - rz * 1.05, tag))

    def _face_feature(self, name: str, xy: Point, depth: float, occ: Occupant, style: _Style, az: float,
                      el: float, rf: float, skin: RGB, tag: str) -> Primitive:
        L = self.light
        k = self.px(1.0, depth)
        x, y = xy
        if name.endswith("eye"):
            r = max(0.8, 0.013 * k)
            white = L((225, 220, 215), depth)
            brow_y = y - 2.2 * r
            details = [Detail("ellipse", [(x - r * 0.5, y - r * 0.5), (x + r * 0.5, y + r * 0.5)],
                              L((40, 30, 25), depth)),
                       Detail("line", [(x - r * 1.2, brow_y), (x + r * 1.2, brow_y - r * 0.2)], _shade(L(style.hair, depth), 0.9),
                              max(1, int(r * 0.5)))]
            pts = ellipse_points(xy, np.diag([r * 1.3, r * 0.75]), 12)
            return self.painter.add(Primitive("polygon", pts, white, depth, tag, outline=_shade(skin, 0.6),
                                              details=details))
        if name == "nose":
            r = max(0.8, 0.014 * k)
            pts = [(x, y - r * 1.8), (x + r, y + r * 0.6), (x - r, y + r * 0.6)]
            return self.painter.add(Primitive("polygon", pts, _shade(skin, 0.85), depth, tag))
        if name == "mouth":
            r = max(0.8, 0.022 * k)
            pts = ellipse_points(xy, np.diag([r, r * 0.35]), 12)
            return self.painter.add(Primitive("polygon", pts, L((150, 70, 70), depth), depth, tag))
        r = max(0.8, 0.02 * k)  # ears
        pts = ellipse_points(xy, np.diag([r * 0.7, r * 1.2]), 12)
        return self.painter.add(Primitive("polygon", pts, _shade(skin, 0.9), depth, tag,
                                          outline=_shade(skin, 0.7)))

    def _face_wear(self, occ: Occupant, style: _Style, d_head: float, d_head_real: float, tag: str) -> None:
        L = self.light
        front = occ.head_rot[:, 2]
        if style.glasses != "none":
            for name in ("left_eye", "right_eye"):
                p = occ.joints[name] + front * 0.015
                (x, y), d = self.p2(p)
                dd = d_head + (d - d_head_real)
                r = self.px(0.02, d)
                pts = ellipse_points((x, y), np.diag([r * 1.2, r * 0.85]), 14)
                if style.glasses == "sun":
                    self.painter.add(Primitive("polygon", pts, L((20, 20, 22), dd), dd, tag, outline=L((5, 5, 5), dd)))
                else:
                    self.painter.add(Primitive("ring", pts, L((30, 30, 30), dd), dd, tag, width=1))
        if style.mask:
            pts3 = []
            for az in np.linspace(-75.0, 75.0, 9):
                for el in (-5.0, -55.0):
                    pts3.append(occ.face_point(float(az), el, 1.08))
            xy, depth = self.cam.project(np.array(pts3))
            front_pts = [(float(a), float(b)) for a, b in xy]
            dd = d_head + (float(depth.min()) - d_head_real) - 0.02
            self.painter.add(Primitive("polygon", convex_hull(front_pts), L((215, 225, 235), dd), dd, tag,
                                       outline=L((150, 160, 170), dd)))


def _choose_camera(rng: np.random.Generator, kind: CameraKind, size: tuple[int, int],
                   factors: tuple[HardFactor, ...]) -> Camera:
    small = "small" in factors
    shift = (0.0, 0.0)
    yaw = float(rng.normal(0.0, 2.0))
    if "out_of_frame" in factors:
        shift = (float(rng.choice([-1.0, 1.0]) * rng.uniform(0.15, 0.3)), float(rng.uniform(-0.15, 0.2)))
        yaw += float(rng.choice([-1.0, 1.0]) * rng.uniform(4.0, 10.0))
    if kind == "dashboard":
        hfov = float(rng.uniform(138.0, 148.0)) if small else float(rng.uniform(104.0, 118.0))
        pos = (float(rng.normal(0.0, 0.02)), float(rng.uniform(0.98, 1.05)), float(rng.uniform(0.36, 0.42)))
        pitch = float(rng.uniform(8.0, 15.0))
    else:
        hfov = float(rng.uniform(140.0, 150.0)) if small else float(rng.uniform(112.0, 124.0))
        pos = (float(rng.normal(0.0, 0.02)), float(rng.uniform(1.2, 1.25)), float(rng.uniform(0.5, 0.58)))
        pitch = float(rng.uniform(28.0, 36.0))
    return Camera.looking_back(pos, pitch_deg=pitch, yaw_deg=yaw, hfov_deg=hfov, size=size, shift=shift)


def _illumination(rng: np.random.Generator, w: int, h: int, mode: Mode) -> NDArray[np.float32]:
    """Smooth light field: a side gradient (the window side) and the lens vignette."""
    xs = np.linspace(-1.0, 1.0, w, dtype=np.float32)
    ys = np.linspace(-1.0, 1.0, h, dtype=np.float32)
    gx = float(rng.uniform(-0.2, 0.2))
    gy = float(rng.uniform(-0.12, 0.12))
    vig = float(rng.uniform(0.15, 0.35 if mode == "ir" else 0.25))
    field = (1.0 + gy * ys)[:, None] + (gx * xs)[None, :]
    field -= vig * ((ys**2)[:, None] + (xs**2)[None, :] * 0.8)
    return np.clip(field, 0.1, 1.5).astype(np.float32)


def scene_rng(seed: int, index: int) -> np.random.Generator:
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0 (got {seed}, {index})")
    return np.random.default_rng(np.random.SeedSequence([seed, index, 0x5EED]))


def render_scene(seed: int, index: int, *, size: tuple[int, int] = (640, 480), hard_share: float = 0.3,
                 hard: bool | None = None, schema: KeypointSchema = INCABIN17,
                 camera: CameraKind | None = None, mode: Mode | None = None) -> SynthScene:
    """Render frame ``index`` of the data set seeded ``seed``; deterministic in ``(seed, index, size,
    hard_share)``. ``hard``/``camera``/``mode`` force a choice (tests use them); otherwise they are drawn."""
    if schema.name != "incabin17":
        raise ValueError(f"the generator draws the incabin17 skeleton, not {schema.name!r}")
    if not 0.0 <= hard_share <= 1.0:
        raise ValueError(f"hard_share must be within [0, 1], got {hard_share}")
    w, h = size
    if w < 32 or h < 32:
        raise ValueError(f"image size {w}x{h} is too small (at least 32x32)")
    plan = _plan_frame(scene_rng(seed, index), size, hard_share, hard=hard, camera=camera, mode=mode)
    drawn = _draw_with_findable_heads(plan, size)
    truth = SceneTruth(seed=seed, index=index, width=w, height=h, camera=plan.camera_kind, mode=plan.mode,
                       hard=plan.hard, factors=plan.factors, persons=_person_truths(drawn, plan, schema, w, h))
    image = _finish(drawn.picture, plan.finish_rng, plan.mode, plan.factors, plan.night)
    return SynthScene(image=image, truth=truth)


@dataclass
class _Seat:
    """One occupant, with everything drawn for them before the frame is painted."""

    role: Role
    place: Vec  # the seat's hip point
    jitter: Vec  # how far from it this occupant sits
    style: _Style
    hard_pose: bool
    grip: Vec  # the driver's two hand positions on the rim, each in [-1, 1]
    pose_seed: int


@dataclass
class _FramePlan:
    """Everything one frame draws from its generator before it paints, drawn in a fixed order."""

    hard: bool
    camera_kind: CameraKind
    mode: Mode
    factors: tuple[HardFactor, ...]
    camera: Camera
    night: bool
    light: _Light
    driver_sign: float  # +1 left-hand drive (the driver sits at +x), -1 right-hand drive
    seats: list[_Seat]
    cabin_seed: int
    finish_rng: np.random.Generator  # the optics and sensor noise of :func:`_finish`


_Drawn = tuple[int, Occupant, dict[str, list[Primitive]], list[Point]]  # seat, pose, owners, head outline


@dataclass
class _DrawnFrame:
    scene: _Scene
    people: list[_Drawn]
    picture: Image.Image
    id_map: NDArray[np.int32]


def _plan_frame(rng: np.random.Generator, size: tuple[int, int], hard_share: float, *, hard: bool | None,
                camera: CameraKind | None, mode: Mode | None) -> _FramePlan:
    """Draw the frame's choices. The order of the draws is part of the data set: changing it changes
    every picture of every seed."""
    is_hard = bool(rng.random() < hard_share) if hard is None else hard
    cam_kind: CameraKind = camera or ("dashboard" if rng.random() < 0.6 else "overhead")
    frame_mode: Mode = mode or ("ir" if rng.random() < 0.5 else "rgb")
    factors: tuple[HardFactor, ...] = ()
    if is_hard:
        k = 1 + int(rng.random() < 0.4)
        picked = sorted(int(i) for i in rng.choice(len(HARD_FACTORS), size=k, replace=False))
        factors = tuple(HARD_FACTORS[i] for i in picked)
    cam = _choose_camera(rng, cam_kind, size, factors)
    night = frame_mode == "rgb" and ("dark" in factors or rng.random() < 0.15)
    gain = float(rng.uniform(0.12, 0.3)) if "dark" in factors else float(rng.uniform(0.75, 1.1))
    light = _Light(frame_mode, gain if not night or "dark" in factors else gain * 0.55)
    driver_sign = 1.0 if rng.random() < 0.7 else -1.0  # left- or right-hand drive
    places = _seat_places(rng, driver_sign)
    jitter = rng.normal(0.0, 1.0, size=(len(places), 3)) * np.array([0.03, 0.01, 0.04])
    styles = [_sample_style(rng, "occlusion" in factors) for _ in places]
    hard_poses = [is_hard and ("occlusion" in factors or rng.random() < 0.3) for _ in places]
    grips = [rng.uniform(-1.0, 1.0, size=2) for _ in places]
    finish_rng = np.random.default_rng(rng.integers(0, 2**63 - 1))
    pose_seeds = rng.integers(0, 2**63 - 1, size=len(places))
    cabin_seed = int(rng.integers(0, 2**63 - 1))
    seats = [_Seat(role, place, jitter[i], styles[i], hard_poses[i], grips[i], int(pose_seeds[i]))
             for i, (role, place) in enumerate(places)]
    return _FramePlan(hard=is_hard, camera_kind=cam_kind, mode=frame_mode, factors=factors, camera=cam,
                      night=night, light=light, driver_sign=driver_sign, seats=seats, cabin_seed=cabin_seed,
                      finish_rng=finish_rng)


def _seat_places(rng: np.random.Generator, driver_sign: float) -> list[tuple[Role, Vec]]:
    """Who sits where. The driver's seat is always taken; like anyone else, the driver is left out of the
    frame (not drawn, so no unlabeled person remains) only when the camera would hide their head."""
    n_people = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    seats: list[tuple[Role, Vec]] = [("driver", np.array([FRONT_X * driver_sign, 0.44, FRONT_Z]))]
    if n_people >= 2:
        if rng.random() < 0.7:
            seats.append(("passenger", np.array([-FRONT_X * driver_sign, 0.44, FRONT_Z])))
        else:
            seats.append(("rear", np.array([REAR_XS[int(rng.integers(3))], 0.47, REAR_Z])))
    if n_people >= 3:
        taken = {float(p[0]) for r, p in seats if r == "rear"}
        if len(seats) == 2 and seats[1][0] == "rear":
            seats.append(("passenger", np.array([-FRONT_X * driver_sign, 0.44, FRONT_Z])))
        else:
            free = [x for x in REAR_XS if x not in taken]
            seats.append(("rear", np.array([free[int(rng.integers(len(free)))], 0.47, REAR_Z])))
    return seats


def _draw_with_findable_heads(plan: _FramePlan, size: tuple[int, int]) -> _DrawnFrame:
    """Paint the frame; an occupant whose head is almost entirely hidden (a rear passenger behind a
    headrest) is moved away and the frame painted again, so every person in the truth has a findable head."""
    w, h = size
    active = list(range(len(plan.seats)))
    for _attempt in range(len(plan.seats) + 1):
        drawn = _draw(plan, size, active)
        dropped = _hidden_heads(drawn.people, drawn.scene.painter, drawn.id_map, w, h)
        if not dropped or len(active) == 1:
            break
        active = [i for i in active if i not in dropped] or active[:1]
    return drawn


def _draw(plan: _FramePlan, size: tuple[int, int], active: list[int]) -> _DrawnFrame:
    """Paint the cabin, the wheel and the ``active`` occupants."""
    painter = Painter(size, plan.light((150, 145, 140), 2.0))
    sc = _Scene(plan.camera, plan.light, painter)
    occupied = {float(plan.seats[i].place[0]) for i in active if plan.seats[i].role != "rear"}
    sc.cabin(np.random.default_rng(plan.cabin_seed), night=plan.night, occupied_front=occupied)
    wheel = sc.steering_wheel(plan.driver_sign)
    people: list[_Drawn] = []
    for i in active:
        seat = plan.seats[i]
        occ = _pose(seat, wheel)
        own, head_outline = sc.occupant(occ, seat.style, f"p{i}", torso_belt=seat.role != "rear")
        people.append((i, occ, own, head_outline))
    picture, id_map = painter.render()
    return _DrawnFrame(scene=sc, people=people, picture=picture, id_map=id_map)


def _pose(seat: _Seat, wheel: tuple[Vec, Vec, Vec, Vec]) -> Occupant:
    """The occupant's 3D pose; the driver's hands hold the wheel (centre, in-plane axes, normal)."""
    grips = None
    if seat.role == "driver":
        wc, e1, e2, normal = wheel
        g = seat.grip
        # Ten-to-two, give or take; the hand closes around the rim from the driver's side.
        angles = (math.radians(35.0 + 20.0 * g[0]), math.radians(145.0 + 20.0 * g[1]))
        grips = tuple(wc + WHEEL_RADIUS * (math.cos(a) * e1 + math.sin(a) * e2) + normal * 0.035
                      for a in angles)
    return pose_occupant(np.random.default_rng(seat.pose_seed), seat.role, seat.place + seat.jitter,
                         wheel_grips=grips, hard=seat.hard_pose)  # type: ignore[arg-type]


def _person_truths(drawn: _DrawnFrame, plan: _FramePlan, schema: KeypointSchema, w: int,
                   h: int) -> list[PersonTruth]:
    """Each drawn occupant's keypoints with the visibility the painted picture shows, head box and box."""
    primitives = drawn.scene.painter.primitives
    person_of = np.zeros(len(primitives) + 1, dtype=np.int32)
    for k, (i, _, _, _) in enumerate(drawn.people, 1):
        for prim in primitives:
            if prim.owner == f"p{i}":
                person_of[prim.order] = k
    owner_map = person_of[drawn.id_map]
    persons = []
    for k, (i, occ, own, head_outline) in enumerate(drawn.people, 1):
        kps = np.zeros((schema.num_keypoints, 3))
        for ki, name in enumerate(schema.names):
            x, y = (float(v) for v in drawn.scene.p2(occ.joints[name])[0])
            order = max(p.order for p in own[name])
            kps[ki] = (x, y, visibility_at(drawn.id_map, x, y, order))
        persons.append(PersonTruth(role=plan.seats[i].role, keypoints=kps, head_box=_head_box(head_outline, w, h),
                                   bbox=_mask_box(owner_map == k), arm_poses=occ.arm_poses))
    return persons


def _hidden_heads(people: list[_Drawn], painter: Painter, id_map: NDArray[np.int32], w: int, h: int) -> set[int]:
    """Occupants whose head shows less than a quarter of itself (behind a seat, or out of the frame)."""
    dropped: set[int] = set()
    for i, _occ, _own, outline in people:
        xs = [p[0] for p in outline]
        ys = [p[1] for p in outline]
        x0, x1 = max(0, int(min(xs))), min(w, int(max(xs)) + 1)
        y0, y1 = max(0, int(min(ys))), min(h, int(max(ys)) + 1)
        full = math.pi / 4.0 * (max(xs) - min(xs)) * (max(ys) - min(ys))
        if x1 <= x0 or y1 <= y0 or full <= 0:
            dropped.add(i)
            continue
        tag = f"p{i}"
        window = id_map[y0:y1, x0:x1]
        person_ids = np.zeros(len(painter.primitives) + 1, dtype=bool)
        person_ids[[p.order for p in painter.primitives if p.owner == tag]] = True
        shown = float(person_ids[window].sum())
        if shown < 0.25 * full:
            dropped.add(i)
    return dropped


def _head_box(outline: list[Point], w: int, h: int) -> tuple[float, float, float, float]:
    """The drawn head (skull plus a little hair volume), clipped to the frame."""
    xs = np.array([p[0] for p in outline])
    ys = np.array([p[1] for p in outline])
    cx, cy = (xs.max() + xs.min()) / 2.0, (ys.max() + ys.min()) / 2.0
    hw, hh = (xs.max() - xs.min()) / 2.0 * 1.06, (ys.max() - ys.min()) / 2.0 * 1.06
    x0, y0 = max(0.0, cx - hw), max(0.0, cy - hh)
    x1, y1 = min(float(w), cx + hw), min(float(h), cy + hh)
    return (round(x0, 2), round(y0, 2), round(max(0.0, x1 - x0), 2), round(max(0.0, y1 - y0), 2))


def _mask_box(mask: NDArray[np.bool_]) -> tuple[float, float, float, float]:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return (0.0, 0.0, 0.0, 0.0)
    cols = np.flatnonzero(mask.any(axis=0))
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0]))


def _finish(picture: Image.Image, rng: np.random.Generator, mode: Mode, factors: tuple[HardFactor, ...],
            night: bool) -> Image.Image:
    """Optics and sensor: blur, uneven light, noise; IR frames end grey (stored as RGB for every consumer)."""
    w, h = picture.size
    if "blur" in factors:
        picture = picture.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.8, 3.0)) * min(1.0, w / 640.0) ** 0.5))
    else:
        picture = picture.filter(ImageFilter.BoxBlur(float(rng.uniform(0.3, 0.8)) * min(1.0, w / 640.0) ** 0.5))
    if mode == "ir":
        picture = picture.getchannel(0)  # grey already: one channel is a third of the work
    arr = np.asarray(picture, dtype=np.float32)
    field = _illumination(rng, w, h, mode)
    sigma = float(rng.uniform(9.0, 16.0)) if ("dark" in factors or night) else float(rng.uniform(1.5, 5.0))
    noise = _noise(rng, h, w) * np.float32(sigma)
    if arr.ndim == 3:
        arr *= field[:, :, None]
        arr += noise[:, :, None]
    else:
        arr *= field
        arr += noise
    np.clip(arr, 0, 255, out=arr)
    out = Image.fromarray(arr.astype(np.uint8))
    return out.convert("RGB") if mode == "ir" else out


_NOISE_TABLE: NDArray[np.float32] | None = None
_NOISE_TABLE_SIZE = 1 << 21


def _noise(rng: np.random.Generator, h: int, w: int) -> NDArray[np.float32]:
    """Unit Gaussian sensor noise: a window of a fixed table at a seeded offset (same bytes every run,
    and far cheaper than drawing 300k normals per frame)."""
    global _NOISE_TABLE
    if _NOISE_TABLE is None:
        _NOISE_TABLE = np.random.default_rng(20240101).standard_normal(_NOISE_TABLE_SIZE, dtype=np.float32)
    n = h * w
    if n >= _NOISE_TABLE_SIZE // 2:
        return rng.standard_normal((h, w), dtype=np.float32)
    start = int(rng.integers(0, _NOISE_TABLE_SIZE - n))
    return _NOISE_TABLE[start:start + n].reshape(h, w)
