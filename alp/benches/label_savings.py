"""The label-savings bench's result: its types and the pure arithmetic over them (labels to a target, the
judgement/random ratio, auto-label precision and the judgement score's diagnostics, cost per 100k images),
plus the plot. :mod:`alp.benches.active_learning` runs the bench and fills these in."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from alp.automation import AutomationFigures

if TYPE_CHECKING:
    from alp.demo.state import RoundRecord

STRATEGIES: tuple[Literal["judgement", "random"], ...] = ("judgement", "random")
LABEL_RATIO_GOAL = 0.5  # the judgement should need at most half the human labels random selection needs
SCORE_BINS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


class RunSizes(BaseModel):
    """The sizes of every run of the bench (the demo's flags of the same names)."""

    rounds: int = Field(description="rounds after the cold start")
    pool: int = Field(description="synthetic pool size")
    test_images: int = Field(description="frozen test set size")
    seed_images: int = Field(description="round 0's random seed set")
    width: int = Field(description="synthetic image width")
    height: int = Field(description="synthetic image height")
    imgsz: int = Field(description="training/inference size, a multiple of 32")
    epochs: int = Field(description="epochs per model per round")
    batch: int = Field(description="training batch size")


class RoundPoint(AutomationFigures):
    """One round of one run: the human labels spent so far and the candidate on the frozen test set."""

    round: int
    human_labels: int
    auto_labels: int = 0
    deferred: int = 0
    box_map50: float | None = None
    kpt_oks_map50: float | None = None
    visibility_accuracy: float | None = None
    approved: bool | None = None

    @classmethod
    def of(cls, r: RoundRecord) -> RoundPoint:
        return cls(round=r.round, human_labels=r.human_labels_total, auto_labels=r.auto, deferred=r.deferred,
                   box_map50=r.box_map50, kpt_oks_map50=r.kpt_oks_map50,
                   visibility_accuracy=r.visibility_accuracy, approved=r.approved,
                   **{k: getattr(r, k) for k in AutomationFigures.model_fields})


AUTOMATION_FIELDS = tuple(k for k in AutomationFigures.model_fields if k != "thresholds")
# issue targets for the last round of the judgement runs (mean over seeds): (field, at least / at most, value)
AUTOMATION_TARGETS: tuple[tuple[str, Literal["min", "max"], float], ...] = (
    ("auto_precision_truth", "min", 0.95), ("auto_share_persons", "min", 0.4), ("human_seconds_ratio", "max", 0.5),
    ("visibility_accuracy", "min", 0.80),
)


class AutomationSummary(BaseModel):
    """One strategy's automation in the last round, mean over the seeds, and how honest the audits were."""

    last_round: dict[str, float | None]
    # share of batches (every seed, rounds after the cold start) whose truth precision of the auto-accepted parts
    # lies inside the audits' 95% interval; null when no batch had both
    audit_interval_coverage: float | None
    batches_with_audits: int
    targets_met: dict[str, bool | None]


def automation_summary(runs: Sequence[Sequence[RoundPoint]]) -> AutomationSummary:
    """Mean last-round figures over the runs of one strategy, the audits' coverage of the truth, the targets."""
    last: dict[str, float | None] = {}
    for key in (*AUTOMATION_FIELDS, "visibility_accuracy"):
        values = [getattr(rows[-1], key) for rows in runs if rows and getattr(rows[-1], key) is not None]
        last[key] = round(statistics.fmean(values), 4) if values else None
    covered = checked = 0
    for rows in runs:
        for r in rows[1:]:
            if None in (r.auto_precision_truth, r.audit_precision_low95, r.audit_precision_high95):
                continue
            checked += 1
            covered += (r.audit_precision_low95 or 0.0) <= (r.auto_precision_truth or 0.0) <= \
                (r.audit_precision_high95 or 0.0)
    met: dict[str, bool | None] = {}
    for key, kind, value in AUTOMATION_TARGETS:
        got = last.get(key)
        met[key] = None if got is None else (got >= value if kind == "min" else got <= value)
    return AutomationSummary(last_round=last, audit_interval_coverage=round(covered / checked, 4) if checked else None,
                             batches_with_audits=checked, targets_met=met)


class SeedResult(BaseModel):
    """Both strategies' runs of one seed."""

    seed: int
    human_budget_per_round: int = 0
    rounds: dict[str, list[RoundPoint]]  # per strategy
    # images the judgement still doubted after the last round: back in the queue, not lost
    deferred_at_end: dict[str, int] = Field(default_factory=dict)
    labels_to_target_judgement: float | None = None
    labels_to_target_random: float | None = None


class TargetRatio(BaseModel):
    """Mean human labels to a target per strategy, their ratio, and its bound when only random fell short."""

    judgement: float | None = None
    random: float | None = None
    label_ratio: float | None = None
    label_ratio_at_most: float | None = None  # left out of the JSON when there is no bound

    @model_serializer(mode="wrap")
    def _without_missing_bound(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("label_ratio_at_most") is None:
            data.pop("label_ratio_at_most", None)
        return data


class ScoreBin(BaseModel):
    score: str
    images: int
    precision: float | None


class ScoreDiagnostics(BaseModel):
    """How well the judgement score tells right auto-labels from wrong ones (see :func:`score_diagnostics`)."""

    images: int
    precision: float | None
    auroc: float | None
    by_score: list[ScoreBin]


class CostEstimate(BaseModel):
    """Estimated cost of 100,000 images: the pipeline (people for its human share + compute) vs all by hand."""

    pipeline_usd: float
    pipeline_human_usd: float
    pipeline_compute_usd: float
    all_human_usd: float
    saving_ratio: float
    # people paid by the second (alp/effort.py) rather than per image: their seconds over labeling it all by hand
    human_seconds_ratio: float | None = None
    pipeline_usd_by_effort: float | None = None
    saving_ratio_by_effort: float | None = None


class ActiveLearningResult(BaseModel):
    """What ``alp bench active-learning`` prints (``--json``)."""

    bench: Literal["active-learning"] = "active-learning"
    quick: bool
    seeds: list[int]
    sizes: RunSizes
    jobs: int
    target_kpt_oks_map50: float
    label_ratio: float | None
    # when only the random runs fell short of the target: the ratio is below this bound
    label_ratio_at_most: float | None
    label_ratio_goal: float = LABEL_RATIO_GOAL
    # true / false when the ratio or its bound settles it; null when neither does
    label_ratio_goal_met: bool | None
    labels_to_target_judgement: float | None
    labels_to_target_random: float | None
    label_ratio_by_target: dict[str, TargetRatio]
    auto_label_precision: dict[str, float | None]
    auto_labeled_images_checked: dict[str, int]
    # per strategy: the last round's automation (per part), the audits' honesty and the issue's targets
    automation: dict[str, AutomationSummary] = Field(default_factory=dict)
    # The random strategy auto-labels images of every score, so its auto-labels show how well the score
    # separates right from wrong labels over the whole range (judgement's only cover its least doubtful).
    judgement_score: ScoreDiagnostics
    human_share: float
    human_share_after_cold_start: float
    cost_per_100k_images: CostEstimate
    # wall seconds of the Infer and training steps per uploaded image, with threads_per_run threads each
    compute_seconds_per_image: float
    threads_per_run: int | Literal["every core"]
    per_seed: list[SeedResult]
    notes: list[str]
    plot: str | None
    seconds: float


def labels_to_target(curve: Sequence[tuple[int, float | None]], target: float) -> float | None:
    """Human labels at which the metric first reaches ``target`` (linear between rounds); None if never."""
    prev: tuple[int, float] | None = None
    for labels, value in curve:
        if value is None:
            continue
        if value >= target:
            if prev is None or prev[1] >= target:
                return float(labels)
            x0, y0 = prev
            return x0 + (target - y0) * (labels - x0) / (value - y0)
        prev = (labels, value)
    return None


def kpt_curve(rows: Sequence[RoundPoint]) -> list[tuple[int, float | None]]:
    """(human labels so far, kpt_oks_map50) per round: the curve the target is read from."""
    return [(r.human_labels, r.kpt_oks_map50) for r in rows]


def ratio_at(per_seed: Sequence[SeedResult], target: float) -> TargetRatio:
    """Mean labels to ``target`` per strategy over the seeds (None unless every seed reached it), and the ratio.

    When every seed's judgement run reached the target and some random run did not, the ratio is unknown but
    bounded: that random run would have needed more than the labels it spent, so ``label_ratio_at_most`` is
    the judgement's mean over the random runs' mean of (labels to target, or all labels spent).
    """
    means: dict[str, float | None] = {}
    spent: list[float] = []
    for name in STRATEGIES:
        values = [labels_to_target(kpt_curve(s.rounds[name]), target) for s in per_seed]
        means[name] = statistics.fmean(v for v in values if v is not None) if values and None not in values else None
        if name == "random":
            spent = [v if v is not None else float(s.rounds[name][-1].human_labels)
                     for v, s in zip(values, per_seed, strict=True) if s.rounds[name]]
    j, r = means["judgement"], means["random"]
    out = TargetRatio(judgement=j, random=r, label_ratio=round(j / r, 4) if j is not None and r else None)
    if j is not None and r is None and spent and statistics.fmean(spent) > 0:
        out.label_ratio_at_most = round(j / statistics.fmean(spent), 4)
    return out


def goal_met(headline: TargetRatio, goal: float = LABEL_RATIO_GOAL) -> bool | None:
    """Whether the label ratio is at most ``goal``: from the ratio itself, or from its upper bound when the
    random runs fell short of the target (a bound at or under the goal settles it; one above does not)."""
    ratio, bound = headline.label_ratio, headline.label_ratio_at_most
    if ratio is not None:
        return ratio <= goal
    if bound is not None and bound <= goal:
        return True
    return None


def cost_per_100k(human_share: float, compute_seconds_per_image: float, price_task: float,
                  price_hour: float, human_seconds_ratio: float | None = None) -> CostEstimate:
    """Estimated cost of 100,000 images: the pipeline (people for its human share + compute) vs all by hand;
    with ``human_seconds_ratio``, also with people's cost in proportion to their seconds (a prefilled task that
    only needs confirming costs less than drawing everything)."""
    n = 100_000
    human = human_share * n * price_task
    compute = compute_seconds_per_image * n / 3600.0 * price_hour
    all_human = n * price_task
    by_effort = None if human_seconds_ratio is None else human_seconds_ratio * all_human + compute
    return CostEstimate(pipeline_usd=round(human + compute, 2), pipeline_human_usd=round(human, 2),
                        pipeline_compute_usd=round(compute, 2), all_human_usd=round(all_human, 2),
                        saving_ratio=round((human + compute) / all_human, 4) if all_human else 0.0,
                        human_seconds_ratio=human_seconds_ratio,
                        pipeline_usd_by_effort=None if by_effort is None else round(by_effort, 2),
                        saving_ratio_by_effort=None if by_effort is None or not all_human
                        else round(by_effort / all_human, 4))


def score_diagnostics(outcomes: Sequence[tuple[float | None, bool]]) -> ScoreDiagnostics:
    """How well the judgement score tells right auto-labels from wrong ones.

    ``auroc``: the chance that a right auto-label scores higher than a wrong one (0.5 = the score carries no
    information; null unless both kinds occur); ``by_score``: precision per score bin, the numbers to pick
    ``judgement.*_threshold`` from. Images without a score (nothing detected) count as score 0.
    """
    scored = [(0.0 if score is None else score, ok) for score, ok in outcomes]
    right = [sc for sc, ok in scored if ok]
    wrong = [sc for sc, ok in scored if not ok]
    auroc = None
    if right and wrong:
        wins = sum((r > w) + 0.5 * (r == w) for r in right for w in wrong)
        auroc = round(wins / (len(right) * len(wrong)), 4)
    bins = []
    for lo, hi in zip(SCORE_BINS, SCORE_BINS[1:], strict=False):
        inside = [ok for sc, ok in scored if lo <= sc < hi or (hi == SCORE_BINS[-1] and sc == hi)]
        bins.append(ScoreBin(score=f"[{lo}, {hi}{']' if hi == SCORE_BINS[-1] else ')'}", images=len(inside),
                             precision=round(sum(inside) / len(inside), 4) if inside else None))
    return ScoreDiagnostics(images=len(scored), precision=round(len(right) / len(scored), 4) if scored else None,
                            auroc=auroc, by_score=bins)


def plot_label_savings(per_seed: Sequence[SeedResult], target: float, path: Path) -> Path:
    """Frozen-test kpt_oks_map50 and box_map50 against human labels: both strategies, every seed, the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"judgement": "#2e6f9e", "random": "#c4572a"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for ax, metric in zip(axes, ("kpt_oks_map50", "box_map50"), strict=True):
        for name, colour in colours.items():
            for i, seed in enumerate(per_seed):
                rows = seed.rounds[name]
                ax.plot([r.human_labels for r in rows], [getattr(r, metric) or 0.0 for r in rows], marker="o",
                        color=colour, alpha=0.75, label=name if i == 0 else None)
        if metric == "kpt_oks_map50":
            ax.axhline(target, color="#555555", linestyle="--", linewidth=1, label=f"target {target}")
        ax.set_xlabel("human labels so far (same budget per round for both)")
        ax.set_ylabel(f"{metric} (frozen test set)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"Label savings: judgement vs random selection, {len(per_seed)} seed(s), one line per seed")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
