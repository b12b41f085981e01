#!/usr/bin/env python3
"""CDK app: read the settings once, build the Lambda asset and the stack, add cdk-nag, synthesize.

``CDK_OUTDIR=cdk.out python app.py`` (or ``npx cdk synth``) writes the templates offline, without
credentials. Override one setting with ``-c alp:<dotted.path>=<value>``.
"""

from __future__ import annotations

import os
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from alp.lambda_asset import build_lambda_asset
from alp.settings import settings_from_context
from stacks.pipeline_stack import ActiveLabelingStack, cdk_json_context

ROOT = Path(__file__).resolve().parent
LAMBDA_ASSET_DIR = ROOT / "build" / "lambda-asset"


def main(outdir: str | None = None) -> cdk.App:
    """Synthesize into ``outdir`` (default: ``$CDK_OUTDIR``, set by the CLI and ``make synth``)."""
    app = cdk.App(context=cdk_json_context(ROOT / "cdk.json"), outdir=outdir)
    settings = settings_from_context(app.node.get_all_context())
    account = os.environ.get("CDK_DEFAULT_ACCOUNT")
    ActiveLabelingStack(
        app, f"{settings.storage.resource_prefix.capitalize()}ActiveLabelingPipeline",
        settings=settings,
        lambda_code_dir=build_lambda_asset(ROOT, LAMBDA_ASSET_DIR),
        env=cdk.Environment(account=account, region=settings.region),
        description="Active-learning annotation pipeline: head boxes and keypoints (Ground Truth + YOLO-pose)",
    )
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    app.synth()
    return app


if __name__ == "__main__":
    main()
