"""Seated occupants in 3D: a posed ``incabin17`` skeleton with natural joint limits.

Pure geometry, no drawing. Each occupant gets a person-local frame (``l`` = the person's left, ``u`` = up,
``f`` = the direction they face, towards the camera at the front), a torso lean and turn, a head turn
within human limits, and one of a set of arm poses solved with two-bone inverse kinematics (the elbow
falls where a real elbow would, the wrist is pulled back when the target is out of reach).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

Vec = NDArray[np.float64]
Role = Literal["driver", "passenger", "rear"]
ArmPose = Literal["wheel", "lap", "face", "phone", "raised", "armrest", "console", "crossed", "behind_head"]

# Local basis -> cabin: the person faces the camera (-z), their left is +x (a mirror image, as the camera
# sees them), up is +y.
_B = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])

# Face features on the head ellipsoid: (azimuth from the nose towards the person's left, elevation), degrees,
# and a radius factor (>1 protrudes: the nose tip, the ears stick out of the skull's silhouette).
FACE_POINTS: dict[str, tuple[float, float, float]] = {
    "left_eye": (30.0, 8.0, 0.97),
    "right_eye": (-30.0, 8.0, 0.97),
    "left_ear": (92.0, 2.0, 1.12),
    "right_ear": (-92.0, 2.0, 1.12),
    "nose": (0.0, -8.0, 1.12),
    "mouth": (0.0, -34.0, 0.98),
}


def rot_u(a: float) -> Vec:
    """Turn about the up axis (yaw): positive turns the face towards the person's left."""
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_l(a: float) -> Vec:
    """Tilt about the left axis (pitch): positive tips up towards the face direction (nod down / lean forward)."""
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_f(a: float) -> Vec:
    """Roll about the facing axis: positive tilts the head towards the person's left shoulder."""
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass
class Occupant:
    """One posed occupant: 3D joints in the cabin frame plus what the renderer needs to draw them."""

    role: Role
    scale: float
    joints: dict[str, Vec]
    head_center: Vec
    head_radii: tuple[float, float, float]  # across, up, front-back (metres)
    head_rot: Vec  # cabin-frame rotation of the head (columns: left, up, face direction)
    torso_rot: Vec
    arm_poses: tuple[ArmPose, ArmPose]  # (left, right)
    face_depth_sign: dict[str, float] = field(default_factory=dict)

    def face_point(self, az_deg: float, el_deg: float, radius_factor: float) -> Vec:
        az, el = math.radians(az_deg), math.radians(el_deg)
        rx, ry, rz = self.head_radii
        local = np.array([math.sin(az) * math.cos(el) * rx, math.sin(el) * ry, math.cos(az) * math.cos(el) * rz])
        return np.asarray(self.head_center + self.head_rot @ (local * radius_factor))

    def facing(self, az_deg: float, el_deg: float) -> Vec:
        """Outward surface direction (cabin frame) at a point of the head."""
        az, el = math.radians(az_deg), math.radians(el_deg)
        local = np.array([math.sin(az) * math.cos(el), math.sin(el), math.cos(az) * math.cos(el)])
        return np.asarray(self.head_rot @ local)


def _unit(v: Vec) -> Vec:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-9 else v


def solve_elbow(shoulder: Vec, target: Vec, upper: float, fore: float, pole: Vec) -> tuple[Vec, Vec]:
    """Two-bone IK: the elbow and the reachable wrist for a wrist target; the elbow bends towards ``pole``."""
    d_vec = target - shoulder
    dist = float(np.linalg.norm(d_vec))
    direction = _unit(d_vec) if dist > 1e-9 else _unit(pole)
    dist = min(max(dist, abs(upper - fore) + 0.02), (upper + fore) * 0.995)
    wrist = shoulder + direction * dist
    cos_a = (upper**2 + dist**2 - fore**2) / (2.0 * upper * dist)
    alpha = math.acos(max(-1.0, min(1.0, cos_a)))
    perp = pole - direction * float(pole @ direction)
    if float(np.linalg.norm(perp)) < 1e-6:
        perp = np.array([0.0, -1.0, 0.0]) - direction * float(-direction[1])
    perp = _unit(perp)
    elbow = shoulder + upper * (math.cos(alpha) * direction + math.sin(alpha) * perp)
    return elbow, wrist


def pose_occupant(rng: np.random.Generator, role: Role, hip_center: Vec, *,
                  wheel_grips: tuple[Vec, Vec] | None = None, arm_poses: tuple[ArmPose, ArmPose] | None = None,
                  hard: bool = False) -> Occupant:
    """Sample a natural seated pose. ``wheel_grips`` (left hand, right hand targets) only for the driver."""
    s = float(np.clip(rng.normal(1.0, 0.07), 0.82, 1.18))
    turn_limit = 0.9 if hard else 0.5
    torso_yaw = float(rng.normal(0.0, 0.12 if not hard else 0.3))
    torso_fwd = float(rng.uniform(-0.28, 0.05 if not hard else 0.3))  # seated people lean back on the backrest
    torso_side = float(rng.normal(0.0, 0.05 if not hard else 0.12))
    r_torso = _B @ rot_u(torso_yaw) @ rot_l(torso_fwd) @ rot_f(torso_side)
    l_axis, u_axis, f_axis = r_torso[:, 0], r_torso[:, 1], r_torso[:, 2]

    neck = hip_center + u_axis * 0.50 * s
    joints: dict[str, Vec] = {"neck": neck, "hip_center": hip_center}
    sw, hw = 0.175 * s, 0.105 * s
    joints["left_shoulder"] = neck + l_axis * sw - u_axis * 0.035 * s
    joints["right_shoulder"] = neck - l_axis * sw - u_axis * 0.035 * s
    joints["left_hip"] = hip_center + l_axis * hw
    joints["right_hip"] = hip_center - l_axis * hw

    # Head: yaw within +-80 degrees, pitch and roll within comfortable limits.
    head_yaw = float(np.clip(rng.normal(0.0, turn_limit * 0.6), -1.4, 1.4))
    if rng.random() < (0.25 if hard else 0.1):
        head_yaw = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.35))  # looking sideways
    head_pitch = float(np.clip(rng.normal(0.05, 0.15 if not hard else 0.3), -0.5, 0.7))
    head_roll = float(np.clip(rng.normal(0.0, 0.08), -0.3, 0.3))
    head_rot = r_torso @ rot_u(head_yaw - torso_yaw * 0.5) @ rot_l(head_pitch) @ rot_f(head_roll)
    hs = s * float(rng.uniform(0.92, 1.08))
    head_radii = (0.078 * hs, 0.108 * hs, 0.098 * hs)
    head_center = neck + u_axis * 0.15 * s + f_axis * 0.025 * s + head_rot[:, 1] * 0.03 * s

    # Legs: thighs forward along the seat cushion, shins down to the floor.
    spread = float(rng.uniform(0.0, 0.08))
    for side, sign in (("left", 1.0), ("right", -1.0)):
        hip = joints[f"{side}_hip"]
        knee = hip + np.array([0.0, 0.07, 0.0]) + _B @ np.array([sign * spread, 0.0, 0.43 * s])
        ankle = knee + np.array([0.0, -0.42 * s, 0.0]) + _B @ np.array([sign * 0.02, 0.0, 0.08 * s])
        joints[f"{side}_knee"], joints[f"{side}_ankle"] = knee, ankle

    # Arms.
    if arm_poses is None:
        arm_poses = _sample_arm_poses(rng, role, hard, wheel_grips is not None)
    upper, fore = 0.29 * s, 0.255 * s
    for idx, (side, sign) in enumerate((("left", 1.0), ("right", -1.0))):
        shoulder = joints[f"{side}_shoulder"]
        pose = arm_poses[idx]
        target = _wrist_target(rng, pose, sign, joints, head_center, l_axis, u_axis, f_axis, s,
                               None if wheel_grips is None else wheel_grips[idx])
        pole = -u_axis * 1.0 + l_axis * sign * 0.7 - f_axis * 0.3
        if pose in ("raised", "behind_head", "phone"):
            pole = l_axis * sign * 1.0 - u_axis * 0.4
        elbow, wrist = solve_elbow(shoulder, target, upper, fore, pole)
        joints[f"{side}_elbow"], joints[f"{side}_wrist"] = elbow, wrist

    occupant = Occupant(role=role, scale=s, joints=joints, head_center=head_center, head_radii=head_radii,
                        head_rot=head_rot, torso_rot=r_torso, arm_poses=arm_poses)
    for name, (az, el, rf) in FACE_POINTS.items():
        joints[name] = occupant.face_point(az, el, rf)
    return occupant


def _sample_arm_poses(rng: np.random.Generator, role: Role, hard: bool, has_wheel: bool) -> tuple[ArmPose, ArmPose]:
    common: list[ArmPose] = ["lap", "lap", "armrest", "console", "face", "phone", "crossed"]
    hard_extra: list[ArmPose] = ["face", "raised", "behind_head", "phone"]
    pool = common + (hard_extra if hard else ["raised"])
    if has_wheel:
        r = rng.random()
        if r < 0.55:
            return ("wheel", "wheel")
        one: ArmPose = pool[int(rng.integers(len(pool)))]
        if r < 0.8:
            return ("wheel", one)
        if r < 0.95:
            return (one, "wheel")
    left: ArmPose = pool[int(rng.integers(len(pool)))]
    right: ArmPose = pool[int(rng.integers(len(pool)))]
    if left == "crossed" or right == "crossed":
        return ("crossed", "crossed")
    return (left, right)


def _wrist_target(rng: np.random.Generator, pose: ArmPose, sign: float, joints: dict[str, Vec], head: Vec,
                  l_axis: Vec, u_axis: Vec, f_axis: Vec, s: float, grip: Vec | None) -> Vec:
    j = rng.uniform(-1.0, 1.0, size=3) * 0.025
    side = "left" if sign > 0 else "right"
    hip, shoulder = joints[f"{side}_hip"], joints[f"{side}_shoulder"]
    if pose == "wheel" and grip is not None:
        return grip + j * 0.5
    if pose == "wheel" or pose == "lap":
        return hip + f_axis * rng.uniform(0.16, 0.3) * s + u_axis * 0.13 * s - l_axis * sign * 0.03 + j
    if pose == "face":
        return head + f_axis * 0.16 * s + l_axis * sign * rng.uniform(-0.02, 0.06) - u_axis * rng.uniform(0.0, 0.08) + j
    if pose == "phone":
        return head + l_axis * sign * 0.13 * s + f_axis * 0.03 - u_axis * 0.03 + j
    if pose == "raised":
        return shoulder + u_axis * rng.uniform(0.3, 0.48) * s + l_axis * sign * 0.12 + f_axis * 0.12 + j
    if pose == "armrest":
        return shoulder + l_axis * sign * 0.2 * s - u_axis * 0.32 * s + f_axis * 0.22 * s + j
    if pose == "console":
        return joints["hip_center"] + f_axis * 0.35 * s - l_axis * sign * 0.22 + u_axis * 0.12 + j
    if pose == "crossed":
        other = "right" if sign > 0 else "left"
        return joints[f"{other}_shoulder"] * 0.45 + joints[f"{other}_hip"] * 0.55 + f_axis * 0.14 * s + j
    # behind_head: the hand rests behind the skull, so the camera cannot see the wrist.
    return head - f_axis * 0.11 * s + l_axis * sign * 0.05 + u_axis * 0.03 + j
