"""Lambda functions of the pipeline: the two Ground Truth functions and the helper that builds any of them.

All functions share one code asset (``lambdas/`` + ``alp`` + pydantic, built by :mod:`alp.lambda_asset`),
run on python3.11 x86_64 (the interpreter the asset's compiled pydantic_core was taken from), and each has
its own role, its own log group with explicit retention, and an explicit timeout and memory size.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from constructs import Construct

from alp.resources import ResourceNames
from alp.settings import SETTINGS_ENV, Settings
from stacks.iam import ScopedPolicy
from stacks.secure_defaults import acknowledge, function_log_group

RUNTIME = lambda_.Runtime.PYTHON_3_11
RUNTIME_REASON = (
    "python3.11 matches the interpreter whose compiled pydantic_core is packaged into the asset without Docker; "
    "moving to a newer runtime means building the asset with that Python."
)


@dataclass(frozen=True)
class FunctionSpec:
    construct_id: str
    function_name: str
    handler: str
    description: str
    timeout_seconds: int
    memory_mb: int


class PipelineFunction(Construct):
    """One Lambda function with its own role (logs only, grants added by the caller) and log group."""

    def __init__(self, scope: Construct, construct_id: str, *, spec: FunctionSpec, code: lambda_.Code,
                 settings: Settings, settings_uri: str) -> None:
        super().__init__(scope, construct_id)
        self.log_group = function_log_group(self, "Logs", function_name=spec.function_name,
                                            retention_days=settings.observability.log_retention_days)
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                             description=f"Execution role of {spec.function_name}")
        self.policy = ScopedPolicy(self.role)
        self.policy.allow(["logs:CreateLogStream", "logs:PutLogEvents"], [self.log_group.log_group_arn])
        self.function = lambda_.Function(
            self, "Function",
            function_name=spec.function_name,
            description=spec.description,
            runtime=RUNTIME,
            architecture=lambda_.Architecture.X86_64,
            handler=spec.handler,
            code=code,
            role=self.role,
            timeout=Duration.seconds(spec.timeout_seconds),
            memory_size=spec.memory_mb,
            log_group=self.log_group,
            environment={SETTINGS_ENV: settings_uri},
        )
        acknowledge(self.function, "AwsSolutions-L1", RUNTIME_REASON)


class GroundTruthFunctions(Construct):
    """Pre-annotation and post-annotation (consolidation) functions of the Ground Truth labeling jobs."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings, names: ResourceNames,
                 code: lambda_.Code, data_bucket: s3.IBucket, settings_uri: str) -> None:
        super().__init__(scope, construct_id)
        storage = settings.storage
        self.pre = PipelineFunction(self, "PreAnnotation", code=code, settings=settings, settings_uri=settings_uri,
                                    spec=FunctionSpec("PreAnnotation", names.pre_annotation_function,
                                                      "lambdas.gt_pre_annotation.handler",
                                                      "Ground Truth pre-annotation: manifest line -> task input",
                                                      timeout_seconds=30, memory_mb=256))
        self.post = PipelineFunction(self, "PostAnnotation", code=code, settings=settings, settings_uri=settings_uri,
                                     spec=FunctionSpec("PostAnnotation", names.post_annotation_function,
                                                       "lambdas.gt_post_annotation.handler",
                                                       "Ground Truth consolidation of worker answers",
                                                       timeout_seconds=300, memory_mb=1024))
        for fn in (self.pre, self.post):
            fn.policy.read_objects(data_bucket, [storage.config_key], "the deployed settings")
        # Consolidation reads the request payload Ground Truth writes into the job's output folder and
        # writes its worker-agreement report next to it.
        self.post.policy.read_write_objects(data_bucket, [storage.labeling_prefix, storage.batches_prefix],
                                            "labeling-job output folders (consolidation payloads and reports)")
        self.post.policy.list_bucket(data_bucket, [storage.labeling_prefix, storage.batches_prefix])

    @property
    def functions(self) -> tuple[lambda_.Function, lambda_.Function]:
        return (self.pre.function, self.post.function)
