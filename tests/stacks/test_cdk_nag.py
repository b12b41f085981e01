"""cdk-nag (AwsSolutions, v3 validation plugin): the real app synthesizes with 0 unacknowledged findings,
and every acknowledgement names exactly one real finding on the construct that holds it, with a reason."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("cdk_nag")

import aws_cdk as cdk  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402
from paths import REPO_ROOT  # noqa: E402

from alp.lambda_asset import build_lambda_asset  # noqa: E402
from alp.settings import settings_from_context  # noqa: E402
from stacks.pipeline_stack import ActiveLabelingStack, cdk_json_context  # noqa: E402

ROOT = REPO_ROOT
_ONE_FINDING = re.compile(r"^AwsSolutions-[A-Z]+\d+(\[(Action|Resource|Policy)::[^\]]+\])?$")
# Settings that add grants of their own: the Rekognition head backend (a DescribeProjects on "*", a project
# wildcard) on three roles, and a Processing image of the user's own instead of the built one.
REKOGNITION = {
    "alp:inference.head_detector_backend": "rekognition-custom-labels",
    "alp:inference.rekognition_project_version_arn":
        "arn:aws:rekognition:us-east-1:123456789012:project/heads/version/heads.v1/1767225600000",
    "alp:inference.processing_image_uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/alp-processing:1",
}

# Label Studio hosted by the stack, its load balancer internet-facing: the variant holding every acknowledgement
# of stacks/label_studio_service.py (tests/stacks/test_label_studio_service.py synthesizes both shapes).
LABEL_STUDIO = {
    "alp:labeling.backend": "label-studio",
    "alp:labeling.studio.certificate_arn": "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d-4e5f-6789-abcd-ef0123456789",
    "alp:labeling.studio.allowed_cidr": "100.20.0.0/16",
}


def _violations(report_path: Path) -> list[tuple[str, str]]:
    report = json.loads(report_path.read_text())
    return [(v["ruleName"], c["constructPath"])
            for plugin in report["pluginReports"] for v in plugin["violations"] for c in v["violatingConstructs"]]


def test_given_the_real_app_when_synthesized_with_the_nag_pack_then_nothing_is_unacknowledged(tmp_path: Path) -> None:
    """app.py's own main() (the nag pack added, cdk.json's context), in process: a finding would raise."""
    spec = importlib.util.spec_from_file_location("alp_cdk_app", ROOT / "app.py")
    assert spec is not None and spec.loader is not None
    app_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app_module)
    outdir = tmp_path / "cdk.out"
    app_module.main(outdir=str(outdir))
    report = outdir / "validation-report.json"
    if report.exists():
        assert [v for v in _violations(report) if v[0].startswith("AwsSolutions")] == []
    assert (outdir / "AlpActiveLabelingPipeline.template.json").is_file()


def _nag_app(outdir: Path, asset_dir: Path, overrides: dict[str, object]) -> cdk.App:
    app = cdk.App(context={**cdk_json_context(ROOT / "cdk.json"), **overrides}, outdir=str(outdir))
    settings = settings_from_context(app.node.get_all_context())
    ActiveLabelingStack(app, "AlpActiveLabelingPipeline", settings=settings,
                        lambda_code_dir=build_lambda_asset(ROOT, asset_dir),
                        env=cdk.Environment(region=settings.region))
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


def test_given_the_rekognition_backend_and_an_own_image_then_nothing_is_unacknowledged(tmp_path: Path) -> None:
    outdir = tmp_path / "cdk.out"
    _nag_app(outdir, tmp_path / "asset", REKOGNITION).synth()  # an unacknowledged finding would raise
    report = outdir / "validation-report.json"
    if report.exists():
        assert [v for v in _violations(report) if v[0].startswith("AwsSolutions")] == []


class _RecordingValidations:
    """Stands in for ``Validations.of(scope)``: records acknowledgements instead of applying them."""

    def __init__(self, real: Any, scope: Any, sink: list[tuple[str, str, str]]) -> None:
        self._real, self._scope, self._sink = real, scope, sink

    def acknowledge(self, *rules: Any) -> None:
        for rule in rules:
            self._sink.append((self._scope.node.path, rule.id, rule.reason))

    def add_plugins(self, *plugins: Any) -> None:
        self._real.add_plugins(*plugins)


@pytest.mark.parametrize("overrides", [{}, REKOGNITION, LABEL_STUDIO], ids=["defaults", "rekognition", "label-studio"])
def test_given_no_acknowledgements_then_each_one_we_make_matches_a_real_finding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: dict[str, object]) -> None:
    """Synthesize with acknowledgements switched off: the plugin must fail (so it is really active), and
    the findings it reports must be exactly those our acknowledgements name, each on or under its construct."""
    acknowledgements: list[tuple[str, str, str]] = []
    real_of = cdk.Validations.of
    monkeypatch.setattr(cdk.Validations, "of",
                        staticmethod(lambda scope: _RecordingValidations(real_of(scope), scope, acknowledgements)))
    outdir = tmp_path / "cdk.out"
    app = _nag_app(outdir, tmp_path / "asset", overrides)
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    findings = _violations(outdir / "validation-report.json")
    assert findings, "the nag pack reported nothing: it is not running"

    stale = []
    for path, finding, reason in acknowledgements:
        assert _ONE_FINDING.match(finding), f"{path}: {finding!r} does not name exactly one finding"
        assert len(reason.strip()) >= 30, f"{path}: {finding} has no real reason: {reason!r}"
        if not any(rule == finding and (p == path or p.startswith(path + "/")) for rule, p in findings):
            stale.append(f"{finding} on {path}")
    assert stale == [], "acknowledgements that match no finding"
    keys = [(path, finding) for path, finding, _ in acknowledgements]
    assert len(keys) == len(set(keys)), "an acknowledgement is repeated"
    for rule, path in findings:
        assert any(rule == f and (path == p or path.startswith(p + "/")) for p, f, _ in acknowledgements), (
            f"{rule} on {path} is not acknowledged")
