"""``alp evaluate-bundle``: metrics on the frozen test split and the champion/challenger gate."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.evaluate import EvaluationReport


def _evaluate(args: argparse.Namespace) -> int:
    from alp.observability import emit_metrics
    from alp.settings import load_settings
    from training.evaluate import evaluate_and_gate

    settings = load_settings()
    report = evaluate_and_gate(args.bundle, args.dataset, settings, report_uri=args.report, plot_uri=args.plot)
    emit_metrics("Evaluate", {
        **{name: report.metrics[name] for name in settings.training.gate_metrics
           if report.metrics.get(name) is not None},
        "approved": 1.0 if report.approved else 0.0,
    }, namespace=settings.observability.metrics_namespace)
    print(report.to_json(indent=None) if args.json else _summary(report))
    # A rejected bundle is a normal outcome: the Register step records it as Rejected.
    return 0


def _summary(report: EvaluationReport) -> str:
    gate = report.gate
    lines = [f"bundle {report.bundle_id} on {report.test_images} test images: "
             f"{'APPROVED' if gate.approved else 'REJECTED'} ({gate.reason})"]
    for c in gate.comparisons:
        champ = "-" if c.champion is None else f"{c.champion:.4f}"
        new = "-" if c.challenger is None else f"{c.challenger:.4f}"
        lines.append(f"  {c.metric:<22} {new:>8}  champion {champ:>8}  {'ok' if c.passed else 'WORSE'}")
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("evaluate-bundle", help="evaluate a bundle on the test split and gate it")
    p.add_argument("--bundle", required=True, help="bundle folder or s3:// prefix")
    p.add_argument("--dataset", required=True, help="dataset version folder (its test split is used)")
    p.add_argument("--report", help="where to write report.json (a PNG of the metrics goes beside it)")
    p.add_argument("--plot", help="PNG of the metrics across versions (default: beside the report)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_evaluate)
