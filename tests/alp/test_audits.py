"""The audits' guarantee: outcomes recorded per bundle, the precision's lower bound, its honest coverage."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st
from labeling_builders import human_line, truth_line

from alp.audits import (
    AuditOutcome,
    bundle_guarantee,
    guarantee,
    learn_thresholds,
    record_batch_outcomes,
    wilson_lower_bound,
)
from alp.labeling.workflow import LABELING_KEY
from alp.manifest import ManifestLine, write_manifest
from alp.settings import Settings

SETTINGS = Settings()


def test_the_lower_bound_covers_the_true_precision_in_at_least_95_percent_of_draws() -> None:
    """Synthetic audits: for each true precision and sample size, 1,000 batches of audits; the 95% interval's
    lower end stays at or under the truth in >= 95% of them (a one-sided miss rate of about 2.5% expected)."""
    rng = random.Random(7)
    for p in (0.8, 0.9, 0.95, 0.98):
        for n in (30, 100, 400):
            covered = sum((wilson_lower_bound(sum(rng.random() < p for _ in range(n)), n) or 0.0) <= p
                          for _ in range(1000))
            assert covered >= 950, (p, n, covered)


@given(st.integers(0, 500), st.integers(1, 500))
def test_the_lower_bound_is_a_probability_under_the_observed_share(successes: int, n: int) -> None:
    successes = min(successes, n)
    bound = wilson_lower_bound(successes, n)
    assert bound is not None and 0.0 <= bound <= successes / n + 1e-12


def _outcomes(rows: list[tuple[float, bool]], route: str = "audit") -> list[AuditOutcome]:
    return [AuditOutcome(source_ref=f"s3://u/i{i}.jpg", bundle_id="b1", route=route, score=score, agreed=ok)
            for i, (score, ok) in enumerate(rows)]


def test_the_score_threshold_is_the_lowest_that_keeps_the_bound_and_too_few_audits_decide_nothing() -> None:
    rows = [(0.9 - i * 0.001, True) for i in range(200)] + [(0.3 - i * 0.001, i % 2 == 0) for i in range(60)]
    g = guarantee(_outcomes(rows), target=0.95, min_audits=30)
    assert g.audits == 260 and g.agreed == 230 and g.holds is False  # 88% audited: under the target
    assert g.score_threshold is not None

    def bound_from(t: float) -> float:
        kept = [ok for score, ok in rows if score >= t]
        return wilson_lower_bound(sum(kept), len(kept)) or 0.0

    # the audited images scoring at or above it keep the bound; no lower audited score does
    assert bound_from(g.score_threshold) >= 0.95
    assert all(bound_from(score) < 0.95 for score, _ in rows if score < g.score_threshold)
    few = guarantee(_outcomes(rows[:10]), target=0.95, min_audits=30)
    assert few.holds is None and few.score_threshold is None
    # images people labeled because the judgement doubted them are not audits of auto-labels
    assert guarantee(_outcomes(rows, route="human"), target=0.95, min_audits=30).audits == 0


def test_merge_records_whether_each_proposal_agreed_with_peoples_label(tmp_path) -> None:
    """Given a batch whose audit images the model proposed right and whose human images it missed a person on,
    when the outcomes are recorded, then the audits agree, the human ones do not, and the bundle's guarantee
    reads them back."""
    batch = str(tmp_path / "data" / "batches" / "b7") + "/"
    human_lines, labeled = [], []
    for i in range(6):
        ref = f"s3://unlabeled/incoming/a{i}.jpg"
        truth = truth_line(ref, SETTINGS, persons=2, seed=i)
        route = "audit" if i < 4 else "human"
        human_lines.append(human_line(ref, truth, SETTINGS, route=route, seed=i))
        labels = {k: truth.data[k] for k in SETTINGS.labeling.label_keys}
        labeled.append(ManifestLine({"source-ref": ref, **labels, LABELING_KEY: {"audit": route == "audit"}}))
    write_manifest(batch + "inference/human.jsonl", human_lines)
    write_manifest(batch + "labeling/labeled.jsonl", labeled)
    data_root = str(tmp_path / "data") + "/"
    outcomes = record_batch_outcomes(batch, data_root, SETTINGS)
    assert [(o.route, o.agreed) for o in outcomes] == [("audit", True)] * 4 + [("human", False)] * 2
    g = bundle_guarantee(data_root, SETTINGS.with_overrides({"judgement.min_audits": 4}), "bundle-test")
    assert (g.audits, g.agreed, g.precision) == (4, 4, 1.0) and g.lower_bound is not None and g.lower_bound < 1.0
    assert record_batch_outcomes(batch, data_root, SETTINGS) == outcomes  # a re-run writes the same


def _parts(rows: list[tuple[float, bool]], part: str = "person-0", route: str = "human") -> list[AuditOutcome]:
    return [AuditOutcome(source_ref=f"s3://u/i{i}.jpg", bundle_id="b1", route=route, score=score, agreed=ok,
                         part=part, blind=True) for i, (score, ok) in enumerate(rows)]


def test_a_learned_threshold_is_the_lowest_score_whose_parts_keep_the_bound() -> None:
    rows = [(0.9 - i * 0.001, True) for i in range(200)] + [(0.3 - i * 0.001, i % 2 == 0) for i in range(60)]
    learned = learn_thresholds(_parts(rows), target=0.95, min_audits=30)
    persons = learned["persons"]
    assert persons.outcomes == 260 and persons.threshold is not None and persons.threshold < 0.3
    kept = [ok for score, ok in rows if score >= persons.threshold]
    assert persons.accepted == len(kept) and (wilson_lower_bound(sum(kept), len(kept)) or 0) >= 0.95
    assert all((wilson_lower_bound(sum(ok for s, ok in rows if s >= t), sum(1 for s, _ in rows if s >= t)) or 0)
               < 0.95 for t, _ in rows if t < persons.threshold)
    assert learned["heads"].threshold is None and learned["heads"].outcomes == 0
    # head-box outcomes are learned apart from persons'; whole-image outcomes teach neither
    heads = learn_thresholds(_parts(rows, part="heads") + _parts(rows, part="image"), 0.95, 30)
    assert heads["heads"].threshold == persons.threshold and heads["persons"].outcomes == 0
    assert learn_thresholds(_parts(rows[:20]), 0.95, 30)["persons"].threshold is None  # too few: configured
    # prefilled parts (people tend to keep what is drawn) and parts a structural check sent to people teach nothing
    prefilled = [o.model_copy(update={"blind": False}) for o in _parts(rows)]
    structural = [o.model_copy(update={"structural": True}) for o in _parts(rows)]
    assert learn_thresholds(prefilled + structural, 0.95, 30)["persons"].outcomes == 0
    # tied scores come along together: a threshold never splits parts of the same score
    tied = learn_thresholds(_parts([(0.5, True)] * 100 + [(0.4, False)] * 5 + [(0.4, True)] * 95), 0.95, 30)
    assert tied["persons"].threshold == 0.5 and tied["persons"].accepted == 100


def test_learned_thresholds_keep_the_true_precision_at_the_target_in_at_least_90_percent_of_draws() -> None:
    """Synthetic parts whose chance of being right rises with the score (p(s) = 0.7 + 0.3 s, s uniform): 300
    batches of 400 labeled parts each; the threshold learned from each keeps the true precision of the parts above
    it (0.7 + 0.3 (1 + t) / 2) at or above the target 0.9 in at least 90% of them, although the threshold is the
    lowest of many scanned."""
    rng = random.Random(11)
    held = 0
    learned_any = 0
    for _ in range(300):
        scores = [rng.random() for _ in range(400)]
        rows = [(s, rng.random() < 0.7 + 0.3 * s) for s in scores]
        t = learn_thresholds(_parts(rows), target=0.9, min_audits=30)["persons"].threshold
        learned_any += t is not None
        held += t is None or 0.7 + 0.3 * (1 + t) / 2 >= 0.9
    assert learned_any >= 270 and held >= 270, (learned_any, held)
