"""``alp models``: the model registry (list, current champion, register a gated bundle)."""

from __future__ import annotations

import argparse
import json


def _row(b: object) -> dict[str, object]:
    from alp.registry import RegisteredBundle

    assert isinstance(b, RegisteredBundle)
    return b.model_dump(mode="json")


def _list(args: argparse.Namespace) -> int:
    from alp.registry import list_bundles
    from alp.settings import load_settings

    bundles = list_bundles(load_settings(), status=args.status)
    if args.json:
        print(json.dumps([_row(b) for b in bundles], sort_keys=True))
        return 0
    if not bundles:
        print("no bundles registered (cold start)")
        return 0
    print(f"{'version':>7}  {'status':<9} {'bundle_id':<34} {'dataset':<8} metrics")
    for b in bundles:
        metrics = " ".join(f"{k}={v:.3f}" for k, v in sorted(b.metrics.items()))
        print(f"{b.version:>7}  {b.status:<9} {b.bundle_id:<34} {b.dataset_version or '-':<8} {metrics}")
    return 0


def _current(args: argparse.Namespace) -> int:
    from alp.registry import latest_approved
    from alp.settings import load_settings

    champion = latest_approved(load_settings())
    if champion is None:
        print(json.dumps(None) if args.json else "no approved bundle (cold start)")
        return 0
    print(json.dumps(_row(champion), sort_keys=True) if args.json else champion.bundle_uri)
    return 0


def _register(args: argparse.Namespace) -> int:
    from alp.registry import register_bundle
    from alp.settings import load_settings
    from training.evaluate import read_evaluation_report

    report = read_evaluation_report(args.report)
    registered = register_bundle(
        load_settings(), args.bundle, approved=report.approved, metrics=report.metrics,
        report_uri=args.report, description=report.gate.reason, create_group_if_missing=args.create_group,
    )
    print(json.dumps(_row(registered), indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("models", help="the model registry (SageMaker model package group)")
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    p_list = sub.add_parser("list", help="every registered bundle, newest first")
    p_list.add_argument("--status", choices=["Approved", "Rejected", "PendingManualApproval"])
    p_list.add_argument("--json", action="store_true")
    p_list.set_defaults(func=_list)
    p_cur = sub.add_parser("current", help="the latest Approved bundle (what labeling runs)")
    p_cur.add_argument("--json", action="store_true")
    p_cur.set_defaults(func=_current)
    p_reg = sub.add_parser("register", help="register a bundle as Approved/Rejected from its evaluation report")
    p_reg.add_argument("--bundle", required=True)
    p_reg.add_argument("--report", required=True, help="report.json written by `alp evaluate-bundle`")
    p_reg.add_argument("--create-group", action="store_true",
                       help="create the model package group if missing (local/embedded mode only; the stack owns it)")
    p_reg.set_defaults(func=_register)
