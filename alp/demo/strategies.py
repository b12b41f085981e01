"""The label-savings bench's random baseline.

The bench compares two ways to spend the same per-round human budget ``B``: the judgement's
(:mod:`inference.budget`: people get the ``B`` images it is least sure of, the rest of its doubts are deferred)
and ``random`` (``B`` images drawn at random go to people, the same model's predictions auto-label the rest of
the batch). Both are swapped in after the Infer step by rewriting its outputs
(:func:`inference.budget.reroute_batch`); the Label and Merge steps then run unchanged.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from alp.manifest import ManifestLine
from alp.settings import Settings
from inference.budget import BudgetedRouting, route_within_budget


def route_randomly(auto: Sequence[ManifestLine], human: Sequence[ManifestLine], budget: int, rng: random.Random,
                   settings: Settings) -> BudgetedRouting:
    """``budget`` images drawn at random for people, the rest auto-labeled (the bench's baseline)."""
    return route_within_budget(auto, human, budget, "random", rng, settings)
