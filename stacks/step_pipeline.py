"""Render a declared pipeline (:class:`alp.steps.PipelineSpec`) into a CodePipeline V2 with CodeBuild steps.

Source: the project's own code as an S3 source. The stack zips the repository folder at synth time and
deploys the zip into the pipeline's artifact bucket under ``source/``; the pipeline reads it from there. No
GitHub or CodeStar connection is needed, the deployed code is exactly the code that was synthesized, and a
``cdk deploy`` of a new version updates the object the next execution reads.

Every step becomes one stage holding one CodeBuild action whose buildspec installs the project and runs
``alp steps run <pipeline> <Step>``: the command line itself comes from :mod:`alp.steps`, the same
declaration the local runner executes. Pipeline variables reach the build as the environment variables the
:class:`alp.steps.Variable` names, through ``#{variables.<Name>}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Duration, Fn
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_codepipeline as codepipeline
from aws_cdk import aws_codepipeline_actions as actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from constructs import Construct

from alp.settings import PROCESSING_WAIT_MARGIN_MINUTES, SETTINGS_ENV, Settings
from alp.steps import DATA_ROOT_ENV, LABELING_PIPELINE, PipelineSpec, Step
from stacks.iam import ScopedPolicy
from stacks.nag import (
    acknowledge_artifact_grant,
    acknowledge_codebuild_default_logs,
    acknowledge_codebuild_vpc,
)
from stacks.secure_defaults import acknowledge, log_group

SOURCE_PREFIX = "source/"
SOURCE_EXCLUDES = (
    ".git", ".venv", "node_modules", "cdk.out", "build", "runs", ".alp", "demo-run", "bench-out", "rehearsal-run",
    "**/__pycache__", "*.egg-info", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis",
    "*.onnx", "*.pt",
)
# What CDK's artifact grants give the pipeline role (read/write) and the build role (read the source).
PIPELINE_ARTIFACT_ACTIONS = ("s3:GetObject*", "s3:GetBucket*", "s3:List*", "s3:DeleteObject*", "s3:Abort*")
BUILD_ARTIFACT_ACTIONS = ("s3:GetObject*", "s3:GetBucket*", "s3:List*")
EXECUTION_ID_ENV = "ALP_PIPELINE_EXECUTION_ID"
BUILD_IMAGE = codebuild.LinuxBuildImage.STANDARD_7_0  # Ubuntu 22.04 with Python 3.11
_COMPUTE_TYPES = {
    "BUILD_GENERAL1_SMALL": codebuild.ComputeType.SMALL, "BUILD_GENERAL1_MEDIUM": codebuild.ComputeType.MEDIUM,
    "BUILD_GENERAL1_LARGE": codebuild.ComputeType.LARGE, "BUILD_GENERAL1_2XLARGE": codebuild.ComputeType.X2_LARGE,
}


# The labeling pipeline's Infer step: above inference.processing_threshold_images it runs the batch as a
# SageMaker Processing job and waits for it in the build.
INFER_STEP = (LABELING_PIPELINE.name, LABELING_PIPELINE.step("Infer").name)


def step_timeout_minutes(spec: PipelineSpec, step: Step, settings: Settings) -> int:
    """The build timeout of ``step``: its declared one, raised for the Infer step to cover the longest
    Processing job the settings allow plus the margin the build needs around it. The settings cap the job's
    runtime so that this stays within CodeBuild's 2160 minutes."""
    minutes = step.timeout_minutes
    if (spec.name, step.name) == INFER_STEP:
        job_minutes = math.ceil(settings.inference.processing_max_runtime_seconds / 60)
        minutes = max(minutes, job_minutes + PROCESSING_WAIT_MARGIN_MINUTES)
    return minutes


def step_command(spec: PipelineSpec, step: Step) -> str:
    return f"alp steps run {spec.name} {step.name}"


def buildspec(spec: PipelineSpec, step: Step) -> dict[str, object]:
    """The buildspec of one step: install the project (with the training extras when the step needs
    them), then run the declared step."""
    target = '".[train]"' if step.needs_training_extras else "."
    install = []
    if step.needs_training_extras:
        # PyPI's torch wheels for Linux are CUDA builds (several GB); CodeBuild only prepares data, exports
        # and drives SageMaker, so take the CPU builds of the pinned versions from PyTorch's CPU index first.
        install.append("python -m pip install --disable-pip-version-check -q -c constraints.txt "
                       "--index-url https://download.pytorch.org/whl/cpu torch torchvision")
    install.append(f"python -m pip install --disable-pip-version-check -q -c constraints.txt {target}")
    return {
        "version": "0.2",
        "env": {"shell": "bash"},
        "phases": {
            "install": {
                "runtime-versions": {"python": "3.11"},
                "commands": install,
            },
            "build": {"commands": [step_command(spec, step)]},
        },
    }


@dataclass(frozen=True)
class StepNetwork:
    """Where a pipeline's CodeBuild steps run when they must reach a service inside a VPC (the hosted Label
    Studio): the VPC, its subnets with a route out (the steps install packages) and their security groups."""

    vpc: ec2.IVpc
    subnets: ec2.SubnetSelection
    security_groups: Sequence[ec2.ISecurityGroup]


class SourceBundle(Construct):
    """The repository folder, zipped at synth time and deployed unextracted into ``bucket``/source/."""

    def __init__(self, scope: Construct, construct_id: str, *, repo_root: Path, bucket: s3.IBucket) -> None:
        super().__init__(scope, construct_id)
        self.bucket = bucket
        deployment = s3deploy.BucketDeployment(
            self, "Deployment",
            sources=[s3deploy.Source.asset(str(repo_root), exclude=list(SOURCE_EXCLUDES))],
            destination_bucket=bucket,
            destination_key_prefix=SOURCE_PREFIX,
            extract=False,
            prune=True,  # only source/: an older bundle becomes a noncurrent version and expires
            retain_on_delete=False,
        )
        self.object_key = SOURCE_PREFIX + Fn.select(0, deployment.object_keys)


class StepPipeline(Construct):
    """One CodePipeline V2 (QUEUED executions) for ``spec``; ``build_policy`` takes the step grants.

    QUEUED, not the default SUPERSEDED: every execution is one batch (or one dataset version) and must run
    to the end; a superseded batch would never be merged. ``step_environment`` adds environment variables
    to single steps' builds (step name -> variables), ``environment`` to every step's, beside the settings
    URI and data root every step gets. ``network`` runs the builds inside a VPC.
    """

    def __init__(self, scope: Construct, construct_id: str, *, spec: PipelineSpec, pipeline_name: str,
                 settings: Settings, artifact_bucket: s3.IBucket, source: SourceBundle, settings_uri: str,
                 data_root: str, step_environment: Mapping[str, Mapping[str, str]] | None = None,
                 environment: Mapping[str, str] | None = None, network: StepNetwork | None = None) -> None:
        super().__init__(scope, construct_id)
        unknown = set(step_environment or {}) - {step.name for step in spec.steps}
        if unknown:
            raise ValueError(f"pipeline {spec.name!r} has no step {sorted(unknown)} to give environment variables")
        self.spec = spec
        self.pipeline_role = iam.Role(self, "PipelineRole",
                                      assumed_by=iam.ServicePrincipal("codepipeline.amazonaws.com"),
                                      description=f"CodePipeline {pipeline_name}: source and build orchestration")
        self.build_role = iam.Role(self, "BuildRole", assumed_by=iam.ServicePrincipal("codebuild.amazonaws.com"),
                                   description=f"CodeBuild steps of {pipeline_name}")
        self.build_policy = ScopedPolicy(self.build_role)
        self.build_logs = log_group(self, "BuildLogs", name=f"/aws/codebuild/{pipeline_name}",
                                    retention_days=settings.observability.log_retention_days)

        source_output = codepipeline.Artifact("Source")
        stages = [codepipeline.StageProps(stage_name="Source", actions=[actions.S3SourceAction(
            action_name="Source", bucket=source.bucket, bucket_key=source.object_key, output=source_output,
            trigger=actions.S3Trigger.NONE,  # executions are started by the batcher or an operator, not commits
        )])]
        self.projects: dict[str, codebuild.PipelineProject] = {}
        variable_env = {
            v.env: codebuild.BuildEnvironmentVariable(value=f"#{{variables.{v.name}}}") for v in spec.variables
        }
        variable_env[EXECUTION_ID_ENV] = codebuild.BuildEnvironmentVariable(
            value="#{codepipeline.PipelineExecutionId}")
        for step in spec.steps:
            project = codebuild.PipelineProject(
                self, f"{step.name}Project",
                project_name=f"{pipeline_name}-{step.name.lower()}",
                description=step.description,
                build_spec=codebuild.BuildSpec.from_object(buildspec(spec, step)),
                environment=codebuild.BuildEnvironment(
                    build_image=BUILD_IMAGE,
                    compute_type=_COMPUTE_TYPES[settings.compute.codebuild_compute_type],
                    privileged=False,
                ),
                environment_variables={
                    SETTINGS_ENV: codebuild.BuildEnvironmentVariable(value=settings_uri),
                    DATA_ROOT_ENV: codebuild.BuildEnvironmentVariable(value=data_root),
                    **{name: codebuild.BuildEnvironmentVariable(value=value)
                       for name, value in {**(environment or {}),
                                           **(step_environment or {}).get(step.name, {})}.items()},
                },
                role=self.build_role,
                vpc=network.vpc if network else None,
                subnet_selection=network.subnets if network else None,
                security_groups=list(network.security_groups) if network else None,
                timeout=Duration.minutes(step_timeout_minutes(spec, step, settings)),
                logging=codebuild.LoggingOptions(cloud_watch=codebuild.CloudWatchLoggingOptions(
                    log_group=self.build_logs, prefix=step.name.lower())),
                grant_report_group_permissions=False,
            )
            acknowledge(project, "AwsSolutions-CB4",
                        "The build produces no artifacts of its own: steps write to the data bucket (SSE-S3, TLS "
                        "only) and CodePipeline artifacts sit in the SSE-S3 artifact bucket; a customer KMS key "
                        "would add cost without protecting additional data.")
            self.projects[step.name] = project
            stages.append(codepipeline.StageProps(stage_name=step.name, actions=[actions.CodeBuildAction(
                action_name=step.name, project=project, input=source_output, environment_variables=variable_env,
            )]))

        self.pipeline = codepipeline.Pipeline(
            self, "Pipeline",
            pipeline_name=pipeline_name,
            pipeline_type=codepipeline.PipelineType.V2,
            execution_mode=codepipeline.ExecutionMode.QUEUED,
            variables=[codepipeline.Variable(variable_name=v.name, description=v.description,
                                             default_value=v.default or None) for v in spec.variables],
            artifact_bucket=artifact_bucket,
            role=self.pipeline_role,
            use_pipeline_role_for_actions=True,
            restart_execution_on_update=False,
            stages=stages,
        )
        acknowledge_artifact_grant(self.pipeline_role, artifact_bucket, PIPELINE_ARTIFACT_ACTIONS, "CodePipeline")
        acknowledge_artifact_grant(self.build_role, artifact_bucket, BUILD_ARTIFACT_ACTIONS, "the CodeBuild steps")
        acknowledge_codebuild_default_logs(self.build_role, self.projects.values())
        if network is not None:
            acknowledge_codebuild_vpc(self.build_role, self.projects.values())
