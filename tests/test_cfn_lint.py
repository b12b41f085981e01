"""cfn-lint on every synthesized template: 0 errors (W3005, DependsOn next to GetAtt, is normal CDK output)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("aws_cdk")

import aws_cdk as cdk  # noqa: E402

from alp.lambda_asset import build_lambda_asset  # noqa: E402
from alp.settings import settings_from_context  # noqa: E402
from stacks.pipeline_stack import ActiveLabelingStack, cdk_json_context  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CFN_LINT_ERROR_BIT = 2  # cfn-lint's exit code is a bit mask: 2 errors, 4 warnings, 8 informational


@pytest.mark.parametrize("overrides", [{}, {"alp:trigger.batching_window_seconds": 0,
                                            "alp:storage.unlabeled_prefix": "",
                                            "alp:inference.head_detector_backend": "rekognition-custom-labels",
                                            "alp:inference.rekognition_project_version_arn":
                                                "arn:aws:rekognition:us-east-1:123456789012:project/heads/version/v1/1"}],
                         ids=["defaults", "edge-settings"])
def test_given_the_synthesized_templates_then_cfn_lint_reports_no_errors(tmp_path: Path, overrides: dict[str, object]) -> None:
    outdir = tmp_path / "cdk.out"
    context = {**cdk_json_context(ROOT / "cdk.json"), **overrides}
    app = cdk.App(context=context, outdir=str(outdir))
    settings = settings_from_context(app.node.get_all_context())
    ActiveLabelingStack(app, "AlpActiveLabelingPipeline", settings=settings,
                        lambda_code_dir=build_lambda_asset(ROOT, tmp_path / "asset"),
                        env=cdk.Environment(region=settings.region))
    app.synth()
    templates = sorted(str(p) for p in outdir.glob("*.template.json"))
    assert templates
    cfn_lint = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or "cfn-lint"
    done = subprocess.run([cfn_lint, "--ignore-checks", "W3005", "--", *templates],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode & CFN_LINT_ERROR_BIT == 0, done.stdout + done.stderr
    assert done.returncode == 0, f"cfn-lint warnings:\n{done.stdout}"
