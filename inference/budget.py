"""A fixed human budget per batch: the images the judgement is least sure of go to people, up to the budget.

``labeling.human_budget_share`` (a share of each batch) makes the Infer step apply it in the pipeline; the
label-savings bench applies the same routing (and its random baseline) after the Infer step. With the
``judgement`` strategy people get the ``B`` images the judgement function is least sure of (its own human
decisions first, lowest score first); the images its thresholds passed are auto-labeled; the images it sent to
people beyond the budget are **deferred**: back in the queue (``deferred.jsonl``, which the Requeue step sends
back), judged again by the next, better model. Nothing the judgement doubts is auto-labeled.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from alp import manifest, storage
from alp.manifest import (
    PREANNOTATION_KEY,
    ROUTE_KEY,
    ManifestLine,
    PartDecision,
    PartRoutes,
    PreAnnotation,
    Route,
    RouteInfo,
    ScoredBox,
    part_counts,
    read_manifest_if_present,
)
from alp.settings import Settings
from inference.judgement import part_draw

RANDOM_REASON = "random_selection: baseline strategy of the label-savings bench"


def rerouted(line: ManifestLine, route: Route, reason: str, bundle_id: str | None = None) -> ManifestLine:
    """``line`` with a new ``alp-route``: the judgement's score (and bundle, unless given) carried over."""
    old = line.route()
    return line.with_model(ROUTE_KEY, RouteInfo(route=route, reason=reason, score=old.score if old else None,
                                                bundle_id=bundle_id or (old.bundle_id if old else None)))


def auto_to_human(line: ManifestLine, settings: Settings, reason: str = RANDOM_REASON) -> ManifestLine:
    """An auto-labeled line turned into a human task pre-drawn with the model's labels."""
    head, kp = settings.labeling.head_label_attribute, settings.labeling.keypoint_label_attribute
    route = line.route()
    boxes = line.boxes(head)
    kps = line.keypoints(kp)
    scored: list[ScoredBox] = []
    size = None
    if boxes is not None:
        label, meta = boxes
        size = label.size
        confs = [o.confidence for o in meta.objects] + [0.0] * len(label.annotations)
        scored = [ScoredBox(left=a.left, top=a.top, width=a.width, height=a.height, score=confs[i])
                  for i, a in enumerate(label.annotations)]
    pre = PreAnnotation(route="human", reason=reason, image_size=size, boxes=scored,
                        persons=kps[0].persons if kps is not None else [],
                        bundle_id=route.bundle_id if route else None)
    return rerouted(line.without(*settings.labeling.label_keys).with_model(PREANNOTATION_KEY, pre), "human", reason)


def human_to_auto(line: ManifestLine, settings: Settings, strategy: str = "random") -> ManifestLine:
    """A human/audit line auto-labeled with the model's proposal it carries (what the model would write)."""
    pre = line.preannotation()
    if pre is None or pre.image_size is None:
        raise ValueError(f"{line.source_ref}: no pre-annotation with an image size to auto-label from")
    job = f"auto-{pre.bundle_id or 'model'}"
    # the model's proposal in the Ground Truth output formats, as the Infer step writes an auto-label
    box_label = manifest.BoundingBoxLabel(image_size=[pre.image_size], annotations=[
        manifest.BoxAnnotation(left=b.left, top=b.top, width=b.width, height=b.height) for b in pre.boxes])
    box_meta = manifest.BoxMetadata(objects=[manifest.ObjectConfidence(confidence=b.score) for b in pre.boxes],
                                    human_annotated="no", job_name=job)
    kp_label = manifest.KeypointLabel(image_size=[pre.image_size], keypoint_schema=settings.schema_.name,
                                      persons=pre.persons)
    kp_meta = manifest.KeypointMetadata(human_annotated="no", job_name=job)
    out = line.without(PREANNOTATION_KEY)
    out = out.with_boxes(settings.labeling.head_label_attribute, box_label, box_meta)
    out = out.with_keypoints(settings.labeling.keypoint_label_attribute, kp_label, kp_meta)
    return rerouted(out, "auto", f"{strategy}_selection: not drawn for people within the budget", pre.bundle_id)


@dataclass(frozen=True)
class BudgetedRouting:
    auto: list[ManifestLine]
    human: list[ManifestLine]
    deferred: list[ManifestLine] = dataclasses.field(default_factory=list)  # back in the queue, for a later round


Strategy = Literal["judgement", "random"]
STRATEGY_REASONS: dict[str, str] = {
    "judgement": "lowest_score: among the {budget} least confident images of the batch (judgement score)",
    "random": RANDOM_REASON,
}
DEFERRED_REASON = ("deferred: the judgement sent it to people, beyond this round's budget of {budget}; back in "
                   "the queue for the next round's model")
DEFERRED_FILE = "deferred.jsonl"
_Item = tuple[str, int]


NO_PROPOSAL_REASONS = ("no_model", "model_error")  # inference.judgement's reasons when nothing was predicted


def has_model_proposal(line: ManifestLine) -> bool:
    """True when a model predicted this image (an empty prediction counts; a cold start or a model error not)."""
    pre = line.preannotation()
    return (pre is not None and pre.image_size is not None and pre.bundle_id is not None
            and not pre.reason.startswith(NO_PROPOSAL_REASONS))


def _score_of(line: ManifestLine) -> float:
    """The judgement score on a line; images without one (no detections, model errors) rank least confident."""
    route = line.route()
    return route.score if route is not None and route.score is not None else float("-inf")


def _judged_human(line: ManifestLine) -> bool:
    """The judgement's thresholds sent this image to people (not an audit draw of a confident image)."""
    route = line.route()
    return route is not None and route.route == "human"


def route_within_budget(auto: Sequence[ManifestLine], human: Sequence[ManifestLine], budget: int,
                        strategy: Strategy, rng: random.Random, settings: Settings) -> BudgetedRouting:
    """``budget`` images of the batch go to people; input order is kept.

    ``judgement`` picks the images its thresholds sent to people first, least confident (lowest score)
    first, then the least confident of those it would auto-label (uncertainty sampling within a fixed
    budget); of the others, those its thresholds passed are auto-labeled and those it sent to people are
    deferred (never auto-labeled).
    ``random`` draws them at random and auto-labels every other image. Lines routed to people without a
    model proposal (cold start, model errors) cannot be auto-labeled, so they stay with people and count
    against the budget.
    """
    pool: list[_Item] = [*(("auto", i) for i in range(len(auto))), *(("human", i) for i in range(len(human)))]

    def line_of(item: _Item) -> ManifestLine:
        return auto[item[1]] if item[0] == "auto" else human[item[1]]

    forced = {("human", i) for i, line in enumerate(human) if not has_model_proposal(line)}
    free = [p for p in pool if p not in forced]
    k = max(0, min(budget - len(forced), len(free)))
    if strategy == "judgement":
        # The judgement's own decision first (every image its checks sent to people before any it would
        # auto-label, so a structural failure such as a head without a person is never outranked by a
        # merely lower score), then the score, then the key for a stable order.
        picked = sorted(free, key=lambda item: (not _judged_human(line_of(item)), _score_of(line_of(item)),
                                                line_of(item).source_ref))[:k]
    else:
        picked = rng.sample(free, k)
    chosen = forced | set(picked)
    reason = STRATEGY_REASONS[strategy].format(budget=budget)
    new_auto: list[ManifestLine] = []
    new_human: list[ManifestLine] = []
    deferred: list[ManifestLine] = []
    for item in pool:
        line = line_of(item)
        if item not in chosen and strategy == "judgement" and _judged_human(line):
            deferred.append(rerouted(line, "human", DEFERRED_REASON.format(budget=budget)))
        elif item in chosen:
            new_human.append(auto_to_human(line, settings, reason) if item[0] == "auto"
                             else rerouted(line, "human", reason))
        else:
            new_auto.append(line if item[0] == "auto" else human_to_auto(line, settings, strategy))
    return BudgetedRouting(new_auto, new_human, deferred)


def batch_budget(routable_images: int, share: float) -> int:
    """People's share of a batch, in images: at least one when the batch has any image to route."""
    return max(1, round(share * routable_images)) if routable_images else 0


def reroute_batch(inference_dir: str, budget: int, strategy: Strategy, seed: int,
                  settings: Settings) -> dict[str, int]:
    """Rewrite the Infer step's outputs in ``inference_dir`` with :func:`route_within_budget`; returns counts."""
    auto, human, quarantine = (read_manifest_if_present(storage.join(inference_dir, name))
                               for name in ("auto.jsonl", "human.jsonl", "quarantine.jsonl"))
    routed = route_within_budget(auto, human, budget, strategy, random.Random(seed), settings)
    storage.write_text(storage.join(inference_dir, "auto.jsonl"), manifest.dumps_lines(routed.auto))
    storage.write_text(storage.join(inference_dir, "human.jsonl"), manifest.dumps_lines(routed.human))
    storage.write_text(storage.join(inference_dir, "audit_model.jsonl"), "")
    storage.write_text(storage.join(inference_dir, DEFERRED_FILE), manifest.dumps_lines(routed.deferred))
    counts = {"auto": len(routed.auto), "human": len(routed.human), "audit": 0, "quarantine": len(quarantine),
              "deferred": len(routed.deferred)}
    _rewrite_summary(inference_dir, counts, {f"{strategy}_selection_within_budget": counts["human"]},
                     {"strategy": {"name": strategy, "human_budget": budget},
                      "parts": _part_counts([*routed.auto, *routed.human], settings)})
    return counts


MIN_AUDITS_REASON = ("audit: drawn to reach judgement.min_audits ({min_audits}) blind parts in this batch: "
                     "{parts}")


def _part_names(parts: PartRoutes | None) -> list[str]:
    return ["image"] if parts is None else ["heads", *(f"person-{i}" for i in range(len(parts.persons)))]


def _with_blind(parts: PartRoutes, chosen: set[str], reason: str) -> PartRoutes:
    """``parts`` with the ``chosen`` ones drawn blind: an auto part becomes an audit, a doubtful one stays with
    people but without the proposal."""
    def draw(decision: PartDecision, name: str) -> PartDecision:
        if name not in chosen:
            return decision
        if decision.route == "auto":
            return decision.model_copy(update={"route": "audit", "reason": reason, "blind": True})
        return decision.model_copy(update={"blind": True})

    return PartRoutes(heads=draw(parts.heads, "heads"),
                      persons=[draw(p, f"person-{i}") for i, p in enumerate(parts.persons)])


def auto_to_audit(line: ManifestLine, parts: set[str], settings: Settings, reason: str) -> ManifestLine:
    """An auto-labeled line turned into an audit item: the named parts go to people, blind, the others keep the
    model's labels."""
    route = line.route()
    old = route.parts if route is not None else None
    human = auto_to_human(line, settings, reason)
    pre = human.preannotation()
    assert pre is not None
    new_parts = None if old is None or "image" in parts else _with_blind(old, parts, reason)
    audit_pre = pre.model_copy(update={"route": "audit", "parts": new_parts})
    return rerouted(human.with_model(PREANNOTATION_KEY, audit_pre), "audit", reason)


def blind_parts(line: ManifestLine) -> int:
    """Parts of a line for people that are labeled blind (a whole image routed ``audit`` counts once)."""
    pre = line.preannotation()
    if pre is None:
        return 0
    if pre.parts is None:
        return int(pre.route == "audit")
    return sum(pre.blind(k) for k in (None, *range(len(pre.parts.persons))))


def ensure_min_audits(inference_dir: str, settings: Settings) -> dict[str, int] | None:
    """At least ``judgement.min_audits`` blind parts in the batch: when the draw gave fewer, the parts with the
    next lowest draws join the blind sample, whatever their route (the draw is seeded by the batch, so a re-run
    picks the same; a confident part becomes an audit, a doubtful one loses its prefill). Returns the new route
    counts, or None when nothing changed."""
    j = settings.judgement
    auto, human = (read_manifest_if_present(storage.join(inference_dir, name)) for name in ("auto.jsonl", "human.jsonl"))
    need = j.min_audits - sum(blind_parts(line) for line in human)
    if need <= 0 or j.audit_fraction <= 0:
        return None
    ranked: list[tuple[float, int, str]] = []  # (draw, line: auto first, then human, part)
    for i, line in enumerate(auto):
        route = line.route()
        ranked += [(part_draw(line.source_ref, name, j.audit_seed), i, name)
                   for name in _part_names(route.parts if route else None)]
    for i, line in enumerate(human):
        pre = line.preannotation()
        if pre is None or pre.parts is None or not has_model_proposal(line):
            continue  # whole images and cold starts: nothing to draw a part of
        ranked += [(part_draw(line.source_ref, name, j.audit_seed), len(auto) + i, name)
                   for k, name in zip((None, *range(len(pre.parts.persons))), _part_names(pre.parts), strict=True)
                   if not pre.blind(k)]
    chosen: dict[int, set[str]] = {}
    for _, i, name in sorted(ranked)[:need]:
        chosen.setdefault(i, set()).add(name)
    if not chosen:
        return None
    new_auto, new_human, models = [], list(human), []
    for i, line in enumerate(auto):
        if i not in chosen:
            new_auto.append(line)
            continue
        reason = MIN_AUDITS_REASON.format(min_audits=j.min_audits, parts=", ".join(sorted(chosen[i])))
        new_human.append(auto_to_audit(line, chosen[i], settings, reason))
        models.append(line)  # what the model would have written: the audit compares people's label with it
    for i, line in enumerate(human):
        names = chosen.get(len(auto) + i)
        pre = line.preannotation()
        if names and pre is not None and pre.parts is not None:
            reason = MIN_AUDITS_REASON.format(min_audits=j.min_audits, parts=", ".join(sorted(names)))
            new_human[i] = line.with_model(PREANNOTATION_KEY, pre.model_copy(
                update={"parts": _with_blind(pre.parts, names, reason)}))
    quarantine = read_manifest_if_present(storage.join(inference_dir, "quarantine.jsonl"))
    storage.write_text(storage.join(inference_dir, "auto.jsonl"), manifest.dumps_lines(new_auto))
    storage.write_text(storage.join(inference_dir, "human.jsonl"), manifest.dumps_lines(new_human))
    old_models = read_manifest_if_present(storage.join(inference_dir, "audit_model.jsonl"))
    storage.write_text(storage.join(inference_dir, "audit_model.jsonl"), manifest.dumps_lines([*old_models, *models]))
    audits = sum(1 for line in new_human if (r := line.route()) is not None and r.route == "audit")
    counts = {"auto": len(new_auto), "human": len(new_human) - audits, "audit": audits, "quarantine": len(quarantine)}
    _rewrite_summary(inference_dir, counts, None, {"min_audits_drawn": sum(len(v) for v in chosen.values()),
                                                   "parts": _part_counts([*new_auto, *new_human], settings)})
    return counts


PAUSED_REASON = ("paused: the audited precision of this model's auto-labels is under the target "
                 "(lower bound {lower} < judgement.target_precision {target}); people label everything until the "
                 "audits recover")


def pause_auto_labels(inference_dir: str, reason: str, settings: Settings) -> dict[str, int]:
    """Send every image the judgement would auto-label to people instead (prefilled with the model's labels);
    audit items stay audits. Returns the new route counts."""
    auto, human, quarantine = (read_manifest_if_present(storage.join(inference_dir, name))
                               for name in ("auto.jsonl", "human.jsonl", "quarantine.jsonl"))
    paused = [auto_to_human(line, settings, reason) for line in auto]
    storage.write_text(storage.join(inference_dir, "auto.jsonl"), "")
    storage.write_text(storage.join(inference_dir, "human.jsonl"), manifest.dumps_lines([*human, *paused]))
    audits = sum(1 for line in human if (r := line.route()) is not None and r.route == "audit")
    counts = {"auto": 0, "human": len(human) - audits + len(paused), "audit": audits, "quarantine": len(quarantine)}
    _rewrite_summary(inference_dir, counts, {"paused_below_target_precision": len(paused)},
                     {"paused": reason, "parts": _part_counts([*human, *paused], settings)})
    return counts


def _part_counts(lines: Sequence[ManifestLine], settings: Settings) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for line in lines:
        counts.update(part_counts(line, settings.labeling.keypoint_label_attribute))
    return dict(sorted(counts.items()))


def _rewrite_summary(inference_dir: str, counts: dict[str, int], human_reasons: dict[str, int] | None,
                     extra: dict[str, object]) -> None:
    """``summary.json`` with the new routes (what the judgement's thresholds alone decided kept beside them);
    refuses a rerouting that would lose an image."""
    summary_uri = storage.join(inference_dir, "summary.json")
    if not storage.exists(summary_uri):
        return
    summary = json.loads(storage.read_text(summary_uri))
    summary.setdefault("judgement_routes", summary.get("routes"))
    summary.setdefault("judgement_parts", summary.get("parts"))
    summary["routes"] = counts
    if human_reasons is not None:  # None: the people's images are the judgement's own, for its own reasons
        summary["human_reasons"] = human_reasons
    if isinstance(summary.get("inputs"), int) and summary["inputs"] != sum(counts.values()):
        raise RuntimeError(f"rerouting {inference_dir} lost images: {summary['inputs']} inputs, routed {counts}")
    summary["invariant"] = f"inputs {summary.get('inputs')} = " + " + ".join(f"{k} {v}" for k, v in counts.items())
    summary.update(extra)
    storage.write_text(summary_uri, json.dumps(summary, indent=2, sort_keys=True) + "\n")
