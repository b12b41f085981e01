"""The champion/challenger gate: a pure decision over two metric dictionaries.

A challenger is approved when none of the headline metrics is worse than the champion's by more than
``tolerance`` (absolute; every headline metric is "higher is better"). With no champion (an empty
registry) the first bundle is approved: something has to start the loop. A headline metric the
challenger lacks (or that is not a finite number, e.g. visibility accuracy with no matched person)
while the champion has one rejects it; when neither has it, it cannot decide anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel


class MetricComparison(BaseModel):
    metric: str
    challenger: float | None
    champion: float | None
    delta: float | None
    passed: bool
    note: str = ""


class GateDecision(BaseModel):
    approved: bool
    cold_start: bool
    tolerance: float
    reason: str
    comparisons: list[MetricComparison]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def gate(
    challenger_metrics: Mapping[str, Any],
    champion_metrics: Mapping[str, Any] | None,
    tolerance: float,
    headline: Sequence[str],
) -> GateDecision:
    """Decide whether the challenger replaces the champion."""
    if tolerance < 0:
        raise ValueError("tolerance must be >= 0")
    if not headline:
        raise ValueError("the gate needs at least one headline metric")
    cold = not champion_metrics
    comparisons: list[MetricComparison] = []
    for name in headline:
        new = _number(challenger_metrics.get(name))
        old = _number(champion_metrics.get(name)) if champion_metrics else None
        if new is None and old is None:
            comparisons.append(MetricComparison(metric=name, challenger=None, champion=None, delta=None,
                                                passed=True, note="neither bundle has a value"))
        elif new is None:
            comparisons.append(MetricComparison(metric=name, challenger=None, champion=old, delta=None,
                                                passed=cold, note="challenger has no finite value"))
        elif old is None:
            comparisons.append(MetricComparison(metric=name, challenger=new, champion=None, delta=None,
                                                passed=True, note="no champion value to compare"))
        else:
            delta = new - old
            # a tiny epsilon so that "exactly at the tolerance" passes despite float rounding
            passed = delta >= -tolerance - 1e-12
            comparisons.append(MetricComparison(metric=name, challenger=new, champion=old, delta=delta,
                                                passed=passed, note="" if passed else "worse than tolerance"))
    failed = [c for c in comparisons if not c.passed]
    if failed:
        reason = "rejected: " + ", ".join(
            f"{c.metric} {c.note}" + (f" ({c.challenger:.4f} vs {c.champion:.4f})"
                                      if c.challenger is not None and c.champion is not None else "")
            for c in failed)
        return GateDecision(approved=False, cold_start=cold, tolerance=tolerance, reason=reason,
                            comparisons=comparisons)
    reason = ("approved: cold start (no champion yet)" if cold
              else f"approved: no headline metric worse than the champion's by more than {tolerance}")
    return GateDecision(approved=True, cold_start=cold, tolerance=tolerance, reason=reason, comparisons=comparisons)
