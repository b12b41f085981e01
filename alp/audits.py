"""How right the model is when it is sure: audit outcomes per bundle, and the precision the guarantee rests on.

Every image people label after the model proposed something (the judgement sent it to people, or drew it for
the audit sample of confident images) says whether the proposal agreed with people's label
(:func:`alp.agreement.auto_label_matches`). The Merge step records one outcome per such image under
``<data root><labeling_prefix>audit-outcomes/<bundle id>/<batch id>.jsonl`` (the score the judgement gave, its
route, agreed or not). The audit items are a random draw of the images the judgement would have auto-labeled,
so their share of agreements estimates the precision of auto-labels (with per-part routing, one outcome per part
people labeled: the image's head boxes, or one person's keypoints); :func:`guarantee` gives it with the lower
bound of its 95% interval (Wilson) and the lowest judgement score above which the audited images keep that lower
bound at or above ``judgement.target_precision``. The Infer step reports both for its bundle, using the outcomes
of that bundle only (an older model's audits say nothing about a new one).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from alp import storage
from alp.agreement import auto_label_matches, boxes_match, person_found
from alp.manifest import ManifestLine, PartRoutes, PreAnnotation, read_manifest_if_present
from alp.settings import Settings

OUTCOMES_FOLDER = "audit-outcomes"
Z_95 = 1.959963984540054  # two-sided 95% normal quantile


class AuditOutcome(BaseModel):
    source_ref: str
    bundle_id: str
    route: str
    score: float | None
    agreed: bool
    part: str = "image"  # "heads", "person-<k>" (per-part routing), or the whole image
    blind: bool = False  # people labeled it without the model's proposal (an audit, or a doubtful part drawn)
    structural: bool = False  # a check no threshold decides failed: the part is never auto at any threshold


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval for a binomial proportion (None without observations)."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - margin) / denom), min(1.0, (centre + margin) / denom)


def wilson_lower_bound(successes: int, n: int, z: float = Z_95) -> float | None:
    """Lower end of the Wilson score interval (None without observations)."""
    interval = wilson_interval(successes, n, z)
    return interval[0] if interval else None


@dataclass(frozen=True)
class Guarantee:
    """What the audits of one bundle say about its auto-labels."""

    audits: int
    agreed: int
    precision: float | None
    lower_bound: float | None
    target: float
    min_audits: int
    # the lowest judgement score whose audited images (score >= it) keep the lower bound >= target
    score_threshold: float | None
    upper_bound: float | None = None

    @property
    def enough_audits(self) -> bool:
        return self.audits >= self.min_audits

    @property
    def holds(self) -> bool | None:
        """Whether the audited precision's lower bound reaches the target (None: too few audits to say)."""
        if not self.enough_audits or self.lower_bound is None:
            return None
        return self.lower_bound >= self.target

    def as_json(self) -> dict[str, object]:
        return {"audits": self.audits, "agreed": self.agreed, "precision": self.precision,
                "lower_bound_95": self.lower_bound, "upper_bound_95": self.upper_bound, "target_precision": self.target, "min_audits": self.min_audits,
                "holds": self.holds, "score_threshold": self.score_threshold}


def guarantee(outcomes: Sequence[AuditOutcome], target: float, min_audits: int) -> Guarantee:
    """Pure: the audited precision of auto-labels (audit items only) and the lowest score threshold that keeps its
    lower bound at or above ``target`` over the audited images scoring at or above it."""
    audits = [o for o in outcomes if o.route == "audit"]
    agreed = sum(o.agreed for o in audits)
    n = len(audits)
    scored = sorted((o for o in audits if o.score is not None), key=lambda o: o.score or 0.0, reverse=True)
    threshold = None
    hits = 0
    for kept, o in enumerate(scored, start=1):  # widen the accepted set downwards; keep the lowest that holds
        hits += o.agreed
        bound = wilson_lower_bound(hits, kept)
        if kept >= min_audits and bound is not None and bound >= target:
            threshold = o.score
    interval = wilson_interval(agreed, n)
    return Guarantee(audits=n, agreed=agreed, precision=round(agreed / n, 6) if n else None,
                     lower_bound=None if interval is None else round(interval[0], 6),
                     upper_bound=None if interval is None else round(interval[1], 6),
                     target=target, min_audits=min_audits, score_threshold=threshold)


PART_KINDS = ("heads", "persons")


def part_kind(part: str) -> str | None:
    """``heads`` or ``persons`` for a per-part outcome; None for a whole-image one."""
    return "heads" if part == "heads" else "persons" if part.startswith("person-") else None


@dataclass(frozen=True)
class LearnedThreshold:
    """The lowest part score whose parts keep the audited precision's lower bound at or above the target."""

    kind: str
    outcomes: int  # parts of this kind people labeled with the model's proposal in front of them
    threshold: float | None  # None: too few outcomes, or no score reaches the target (the configured checks apply)
    accepted: int = 0  # outcomes scoring at or above the threshold
    agreed: int = 0
    lower_bound: float | None = None

    def as_json(self) -> dict[str, object]:
        return {"outcomes": self.outcomes, "threshold": self.threshold, "accepted": self.accepted,
                "agreed": self.agreed, "lower_bound_95": self.lower_bound}


def learn_thresholds(outcomes: Sequence[AuditOutcome], target: float, min_audits: int) -> dict[str, LearnedThreshold]:
    """Pure: per part kind, the lowest score ``t`` such that the blind-sampled parts scoring ``>= t`` agreed with
    the model often enough that the lower end of the 95% Wilson interval is at least ``target``, over at least
    ``min_audits`` such parts. The blind sample draws the same share of every part whatever its score and people
    label it without the proposal in front of them, so it is a uniform, unanchored sample of the parts a threshold
    would accept; prefilled parts are left out (people tend to keep what is drawn), and so are parts whose
    structural checks failed (no threshold would accept them)."""
    out = {}
    for kind in PART_KINDS:
        scored = sorted(((o.score, o.agreed) for o in outcomes
                         if o.blind and not o.structural and part_kind(o.part) == kind and o.score is not None),
                        reverse=True)
        best = LearnedThreshold(kind=kind, outcomes=len(scored), threshold=None)
        hits = 0
        for kept, (score, agreed) in enumerate(scored, start=1):
            hits += agreed
            # a threshold sits between distinct scores: the parts tied with the next one come along
            if kept < len(scored) and scored[kept][0] == score:
                continue
            bound = wilson_lower_bound(hits, kept)
            if kept >= min_audits and bound is not None and bound >= target:
                best = LearnedThreshold(kind=kind, outcomes=len(scored), threshold=score, accepted=kept,
                                        agreed=hits, lower_bound=round(bound, 6))
        out[kind] = best
    return out


def outcomes_dir(data_root: str, settings: Settings, bundle_id: str | None = None) -> str:
    base = storage.join(data_root, settings.storage.labeling_prefix.strip("/"), OUTCOMES_FOLDER).rstrip("/") + "/"
    return base + f"{bundle_id}/" if bundle_id else base


def batch_outcomes(batch_dir: str, settings: Settings) -> list[AuditOutcome]:
    """The outcomes of one labeled batch: the model's proposal (inference/human.jsonl) against people's label
    (labeling/labeled.jsonl), for every image with a proposal."""
    from inference.budget import has_model_proposal, human_to_auto

    batch_dir = batch_dir.rstrip("/") + "/"
    proposals = {line.source_ref: line for line in read_manifest_if_present(batch_dir + "inference/human.jsonl")
                 if isinstance(line.data.get("source-ref"), str)}
    out = []
    for labeled in read_manifest_if_present(batch_dir + "labeling/labeled.jsonl"):
        proposal = proposals.get(labeled.source_ref)
        if proposal is None or not has_model_proposal(proposal):
            continue
        pre, route = proposal.preannotation(), proposal.route()
        if pre is None or pre.bundle_id is None:
            continue
        if pre.parts is not None:
            out.extend(part_outcomes(labeled, pre, pre.parts, pre.bundle_id, settings))
            continue
        model_line = human_to_auto(proposal, settings)
        out.append(AuditOutcome(source_ref=labeled.source_ref, bundle_id=pre.bundle_id, route=pre.route,
                                score=route.score if route is not None else None,
                                agreed=auto_label_matches(model_line, labeled, settings), blind=pre.blind(None)))
    return out


def part_outcomes(labeled: ManifestLine, pre: PreAnnotation, parts: PartRoutes, bundle_id: str,
                  settings: Settings) -> list[AuditOutcome]:
    """One outcome per part people labeled: did the model's head boxes pair up with people's (IoU >= 0.5), did
    each proposed person match one of people's persons (OKS >= 0.5)?"""
    out = []
    boxes = labeled.boxes(settings.labeling.head_label_attribute)
    kps = labeled.keypoints(settings.labeling.keypoint_label_attribute)
    if parts.heads.route != "auto":
        agreed = boxes_match([a.xyxy for a in boxes[0].annotations] if boxes else [],
                             [(b.left, b.top, b.left + b.width, b.top + b.height) for b in pre.boxes])
        out.append(AuditOutcome(source_ref=labeled.source_ref, bundle_id=bundle_id, route=parts.heads.route,
                                score=parts.heads.score, agreed=agreed, part="heads", blind=pre.blind(None),
                                structural=parts.heads.structural))
    labeling = labeled.data.get("alp-labeling")
    sources = ((labeling or {}).get("parts") or {}).get("persons") if isinstance(labeling, dict) else None
    people = [p for i, p in enumerate(kps[0].persons if kps else [])
              if not isinstance(sources, list) or i >= len(sources) or sources[i] == "people"]
    for k, (person, decision) in enumerate(zip(pre.persons, parts.persons, strict=False)):
        if decision.route == "auto":
            continue
        out.append(AuditOutcome(source_ref=labeled.source_ref, bundle_id=bundle_id, route=decision.route,
                                score=decision.score, agreed=person_found(people, person, settings.schema_),
                                part=f"person-{k}", blind=pre.blind(k), structural=decision.structural))
    return out


def record_batch_outcomes(batch_dir: str, data_root: str, settings: Settings) -> list[AuditOutcome]:
    """Write the batch's outcomes, one file per bundle (a re-run rewrites the same bytes)."""
    outcomes = batch_outcomes(batch_dir, settings)
    batch = storage.basename(batch_dir.rstrip("/"))
    for bundle_id in sorted({o.bundle_id for o in outcomes}):
        lines = [json.dumps(o.model_dump(), sort_keys=True) for o in outcomes if o.bundle_id == bundle_id]
        storage.write_text(outcomes_dir(data_root, settings, bundle_id) + f"{batch}.jsonl", "\n".join(lines) + "\n",
                           content_type="application/jsonl")
    return outcomes


def bundle_outcomes(data_root: str, settings: Settings, bundle_id: str) -> list[AuditOutcome]:
    out = []
    for uri in storage.list_uris(outcomes_dir(data_root, settings, bundle_id)):
        for raw in storage.read_text(uri).splitlines():
            if raw.strip():
                out.append(AuditOutcome.model_validate_json(raw))
    return out


def bundle_thresholds(data_root: str, settings: Settings, bundle_id: str) -> dict[str, LearnedThreshold]:
    j = settings.judgement
    return learn_thresholds(bundle_outcomes(data_root, settings, bundle_id), j.target_precision, j.min_audits)


def bundle_guarantee(data_root: str, settings: Settings, bundle_id: str) -> Guarantee:
    j = settings.judgement
    return guarantee(bundle_outcomes(data_root, settings, bundle_id), j.target_precision, j.min_audits)

