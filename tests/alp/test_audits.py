"""The audits' guarantee: outcomes recorded per bundle, the precision's lower bound, its honest coverage."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st
from labeling_builders import human_line, truth_line

from alp.audits import AuditOutcome, bundle_guarantee, guarantee, record_batch_outcomes, wilson_lower_bound
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
