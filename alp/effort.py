"""Seconds people spend labeling an image, with and without the model's proposals.

What the pipeline saves is people's time, not tasks: a prefilled task still costs a look at every proposal and
a fix of every wrong one. This module counts those seconds per action (the defaults and their sources:
``docs/effort.md``), so that a batch's effort can be set against labeling the same images by hand.

A head-box task is one image; a keypoint task is one person. Proposals are paired with the final label
(what people submitted): head boxes one-to-one by IoU (:func:`alp.geometry.match_boxes`), keypoints by their
position in the schema. A person always does the cheaper of fixing a proposal and throwing it away and labeling
by hand, so a proposal never costs more than labeling by hand plus deleting it.

Pure functions: no I/O, no clock; the same labels and settings give the same seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from alp.geometry import MIN_OKS_AREA, Box, keypoint_area, match_boxes
from alp.manifest import Keypoint, PersonKeypoints
from alp.settings import EffortSettings


class LTWHBox(Protocol):
    """A box as labels and proposals store it (``BoxAnnotation``, ``ScoredBox``, ``geometry.Box``)."""

    @property
    def left(self) -> float: ...

    @property
    def top(self) -> float: ...

    @property
    def width(self) -> float: ...

    @property
    def height(self) -> float: ...


@dataclass(frozen=True)
class Effort:
    """People's seconds on some images, and what labeling the same images by hand would have taken."""

    human_seconds: float = 0.0
    by_hand_seconds: float = 0.0

    def __add__(self, other: Effort) -> Effort:
        return Effort(self.human_seconds + other.human_seconds, self.by_hand_seconds + other.by_hand_seconds)

    @property
    def ratio(self) -> float | None:
        """Share of the by-hand time people still spent (below 1: proposals saved time); None without any."""
        return self.human_seconds / self.by_hand_seconds if self.by_hand_seconds > 0 else None


def head_task_seconds(proposed: Sequence[LTWHBox], final: Sequence[LTWHBox], effort: EffortSettings) -> float:
    """One image's head-box task: each final box was confirmed, adjusted or drawn, each unmatched proposal
    deleted. With no proposals this is the by-hand time."""
    matches = match_boxes(_boxes(final), _boxes(proposed), effort.head_match_iou)
    drawn, deleted = len(final) - len(matches), len(proposed) - len(matches)
    return (effort.head_task_overhead_seconds
            + drawn * effort.head_box_draw_seconds
            + deleted * effort.head_box_delete_seconds
            + sum(_matched_box_seconds(iou, effort) for _, _, iou in matches))


def person_task_seconds(proposed: PersonKeypoints | None, final: PersonKeypoints, effort: EffortSettings) -> float:
    """One person's keypoint task; ``proposed`` None (no proposal for this person) gives the by-hand time."""
    if proposed is None:
        pairs: list[tuple[Keypoint | None, Keypoint]] = [(None, f) for f in final.keypoints]
    elif len(proposed.keypoints) != len(final.keypoints):
        raise ValueError(f"the proposal has {len(proposed.keypoints)} keypoints, the final label "
                         f"{len(final.keypoints)}: not the same schema")
    else:
        pairs = list(zip(proposed.keypoints, final.keypoints, strict=True))
    tolerance = effort.keypoint_confirm_tolerance * person_scale(final)
    return effort.person_task_overhead_seconds + sum(_keypoint_seconds(p, f, tolerance, effort) for p, f in pairs)


def by_hand_seconds(final_boxes: Sequence[LTWHBox], final_persons: Sequence[PersonKeypoints],
                    effort: EffortSettings) -> float:
    """The baseline: the same image labeled with no proposals (its head-box task and one task per person)."""
    return (head_task_seconds((), final_boxes, effort)
            + sum(person_task_seconds(None, person, effort) for person in final_persons))


def person_scale(person: PersonKeypoints) -> float:
    """A person's size in pixels, the unit of the keypoint tolerance: the square root of its box's area, else of
    its placed keypoints' extent, at least 32 (COCO's OKS floor), so a tiny or point-like person still has one."""
    if person.bbox is not None:
        return math.sqrt(max(MIN_OKS_AREA, person.bbox[2] * person.bbox[3]))
    return math.sqrt(keypoint_area((k.x, k.y, k.v) for k in person.keypoints))


def _boxes(boxes: Sequence[LTWHBox]) -> list[Box]:
    return [Box(b.left, b.top, b.width, b.height) for b in boxes]


def _matched_box_seconds(iou: float, effort: EffortSettings) -> float:
    """A proposal matched to a final box: confirmed when close, adjusted otherwise, unless deleting it and
    drawing anew is quicker (settings where adjusting costs more than drawing)."""
    fix = effort.head_box_confirm_seconds if iou >= effort.head_confirm_iou else effort.head_box_adjust_seconds
    return min(fix, effort.head_box_delete_seconds + effort.head_box_draw_seconds)


def _by_hand_keypoint_seconds(final: Keypoint, effort: EffortSettings) -> float:
    """Placing a point by hand; a new point is visible, so an occluded one also needs its visibility set."""
    if final.v == 0:
        return 0.0
    return effort.keypoint_place_seconds + (effort.keypoint_visibility_seconds if final.v == 1 else 0.0)


def _keypoint_seconds(proposed: Keypoint | None, final: Keypoint, tolerance: float, effort: EffortSettings) -> float:
    by_hand = _by_hand_keypoint_seconds(final, effort)
    if proposed is None or proposed.v == 0:
        return by_hand
    if final.v == 0:
        return effort.keypoint_delete_seconds
    moved = math.dist((proposed.x, proposed.y), (final.x, final.y)) > tolerance
    fix = effort.keypoint_adjust_seconds if moved else effort.keypoint_confirm_seconds
    if proposed.v != final.v:
        fix += effort.keypoint_visibility_seconds
    return min(fix, effort.keypoint_delete_seconds + by_hand)
