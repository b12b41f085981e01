"""cfn-lint on every synthesized template: 0 errors (W3005, DependsOn next to GetAtt, is normal CDK output)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("aws_cdk")

import aws_cdk as cdk  # noqa: E402
from paths import REPO_ROOT  # noqa: E402

from alp.lambda_asset import build_lambda_asset  # noqa: E402
from alp.settings import settings_from_context  # noqa: E402
from stacks.pipeline_stack import ActiveLabelingStack, cdk_json_context  # noqa: E402

ROOT = REPO_ROOT
CFN_LINT_ERROR_BIT = 2  # cfn-lint's exit code is a bit mask: 2 errors, 4 warnings, 8 informational


EDGE_SETTINGS = {
    "alp:trigger.batching_window_seconds": 0,
    "alp:storage.unlabeled_prefix": "",
    "alp:inference.head_detector_backend": "rekognition-custom-labels",
    "alp:inference.rekognition_project_version_arn":
        "arn:aws:rekognition:us-east-1:123456789012:project/heads/version/v1/1",
}


def _synth(outdir: Path, asset: Path, overrides: dict[str, object]) -> list[str]:
    app = cdk.App(context={**cdk_json_context(ROOT / "cdk.json"), **overrides}, outdir=str(outdir))
    settings = settings_from_context(app.node.get_all_context())
    ActiveLabelingStack(app, "AlpActiveLabelingPipeline", settings=settings, lambda_code_dir=asset,
                        env=cdk.Environment(region=settings.region))
    app.synth()
    return sorted(str(p) for p in outdir.glob("*.template.json"))


def test_given_the_synthesized_templates_then_cfn_lint_reports_no_errors(tmp_path: Path) -> None:
    """The default settings and edge settings (no batching window, no prefix, Rekognition grants)."""
    asset = build_lambda_asset(ROOT, tmp_path / "asset")
    templates = _synth(tmp_path / "defaults", asset, {}) + _synth(tmp_path / "edge", asset, EDGE_SETTINGS)
    assert len(templates) == 2
    assert_cfn_lint_clean(templates)


def assert_cfn_lint_clean(templates: list[str]) -> None:
    """cfn-lint as ``make lint`` runs it: no errors, and no warnings either."""
    cfn_lint = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or "cfn-lint"
    done = subprocess.run([cfn_lint, "--ignore-checks", "W3005", "--", *templates],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode & CFN_LINT_ERROR_BIT == 0, done.stdout + done.stderr
    assert done.returncode == 0, f"cfn-lint warnings:\n{done.stdout}"
