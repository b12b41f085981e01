"""The champion/challenger gate (pure)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from training.gate import gate

HEADLINE = ("box_map50", "kpt_oks_map50", "visibility_accuracy")


def test_given_an_empty_registry_the_first_bundle_is_approved():
    d = gate({"box_map50": 0.1, "kpt_oks_map50": 0.0, "visibility_accuracy": 0.3}, None, 0.01, HEADLINE)
    assert d.approved and d.cold_start and "cold start" in d.reason


def test_a_challenger_within_tolerance_is_approved_and_a_worse_one_rejected():
    champion = {"box_map50": 0.80, "kpt_oks_map50": 0.70, "visibility_accuracy": 0.75}
    within = {"box_map50": 0.795, "kpt_oks_map50": 0.90, "visibility_accuracy": 0.75}
    assert gate(within, champion, 0.01, HEADLINE).approved
    worse = {"box_map50": 0.90, "kpt_oks_map50": 0.60, "visibility_accuracy": 0.80}
    d = gate(worse, champion, 0.01, HEADLINE)
    assert not d.approved and not d.cold_start
    assert "kpt_oks_map50" in d.reason and "box_map50" not in d.reason
    failed = [c.metric for c in d.comparisons if not c.passed]
    assert failed == ["kpt_oks_map50"]


def test_exactly_at_the_tolerance_passes():
    champion = {"box_map50": 0.8}
    assert gate({"box_map50": 0.8 - 0.05}, champion, 0.05, ("box_map50",)).approved


@pytest.mark.parametrize("bad", [None, math.nan, math.inf, "0.9", True])
def test_a_missing_or_non_finite_challenger_metric_rejects(bad):
    d = gate({"box_map50": bad}, {"box_map50": 0.1}, 0.5, ("box_map50",))
    assert not d.approved and "no finite value" in d.reason
    # ... but not on a cold start, and not when the champion has no value either
    assert gate({"box_map50": bad}, None, 0.5, ("box_map50",)).approved
    assert gate({"box_map50": bad, "x": 1.0}, {"box_map50": None, "x": 1.0}, 0.0, ("box_map50", "x")).approved


def test_a_metric_the_champion_never_had_does_not_block():
    d = gate({"box_map50": 0.5, "new_metric": 0.1}, {"box_map50": 0.5}, 0.0, ("box_map50", "new_metric"))
    assert d.approved


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        gate({}, None, -0.1, HEADLINE)
    with pytest.raises(ValueError):
        gate({}, None, 0.1, ())


unit = st.floats(0.0, 1.0)


@given(champ=st.tuples(unit, unit, unit), chall=st.tuples(unit, unit, unit), tol=st.floats(0.0, 0.2))
def test_approved_iff_no_metric_drops_by_more_than_the_tolerance(champ, chall, tol):
    d = gate(dict(zip(HEADLINE, chall)), dict(zip(HEADLINE, champ)), tol, HEADLINE)
    assert d.approved == all(n >= o - tol - 1e-12 for n, o in zip(chall, champ))
