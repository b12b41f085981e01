"""A minimal V2 CodePipeline in moto (source + one CodeBuild step) for tests that start executions."""

from __future__ import annotations

import json

from alp import aws


def create_step_pipeline(name: str, artifact_bucket: str, step: str, role_name: str) -> None:
    """``name`` with the BatchManifestUri variable, an S3 source and a CodeBuild action ``step``."""
    role = aws.client("iam").create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"Service": "codepipeline.amazonaws.com"}}]}))["Role"]["Arn"]
    aws.client("codepipeline").create_pipeline(pipeline={
        "name": name, "roleArn": role, "pipelineType": "V2", "executionMode": "QUEUED",
        "variables": [{"name": "BatchManifestUri", "description": "batch manifest"}],
        "artifactStore": {"type": "S3", "location": artifact_bucket},
        "stages": [
            {"name": "Source", "actions": [{"name": "Source", "actionTypeId": {
                "category": "Source", "owner": "AWS", "provider": "S3", "version": "1"},
                "configuration": {"S3Bucket": artifact_bucket, "S3ObjectKey": "source/app.zip",
                                  "PollForSourceChanges": "false"}, "outputArtifacts": [{"name": "Source"}]}]},
            {"name": step, "actions": [{"name": step, "actionTypeId": {
                "category": "Build", "owner": "AWS", "provider": "CodeBuild", "version": "1"},
                "configuration": {"ProjectName": f"{name}-{step.lower()}"},
                "inputArtifacts": [{"name": "Source"}]}]},
        ]})
