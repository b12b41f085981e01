"""cdk-nag acknowledgements for what CDK itself generates (grants and singleton handler functions).

Our own statements are acknowledged where they are written (:class:`stacks.iam.ScopedPolicy`). What is left
are statements CDK's L2 constructs write for us: the artifact-bucket grants of CodePipeline and CodeBuild,
CodeBuild's default log-group statement, and the singleton Lambdas behind ``BucketDeployment`` and the
bucket's EventBridge switch. Each acknowledgement names one finding on one construct.
"""

from __future__ import annotations

from collections.abc import Iterable

from aws_cdk import DefaultStackSynthesizer, Stack
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import IConstruct

from stacks.iam import finding_resource
from stacks.secure_defaults import acknowledge

BASIC_EXECUTION = "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
_BUCKET_DEPLOYMENT_ID = "Custom::CDKBucketDeployment8693BB64968944B69AAFB0CC9EB8756C"
BOOTSTRAP_QUALIFIER_CONTEXT = "@aws-cdk/core:bootstrapQualifier"
_NOTIFICATIONS_HANDLER_ID = "BucketNotificationsHandler050a0587b7544547bf325f094a3db834"


def acknowledge_artifact_grant(role: iam.IRole, bucket: s3.IBucket, actions: Iterable[str], who: str) -> None:
    """The read/write grant CDK gives ``role`` on a pipeline's artifact bucket (``s3:GetObject*`` etc.)."""
    reason = (f"CDK's grant for {who} on the pipeline's own artifact bucket; the action prefixes cover the "
              "object/version variants CodePipeline uses and apply to that one bucket only.")
    for action in actions:
        acknowledge(role, f"AwsSolutions-IAM5[Action::{action}]", reason)
    acknowledge(role, f"AwsSolutions-IAM5[Resource::{finding_resource(role, bucket.arn_for_objects('*'))}]",
                f"Objects of the pipeline's own artifact bucket, written by {who} under per-execution keys.")


def acknowledge_codebuild_default_logs(role: iam.IRole, projects: Iterable[codebuild.IProject]) -> None:
    """CodeBuild projects always get a statement for their default ``/aws/codebuild/<project>`` group."""
    stack = Stack.of(role)
    for project in projects:
        arn = (f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:/aws/codebuild/"
               f"{project.project_name}:*")
        acknowledge(role, f"AwsSolutions-IAM5[Resource::{finding_resource(role, arn)}]",
                    "CDK's default CodeBuild log statement: log streams of this one project's log group, one per build.")


def _child(stack: Stack, construct_id: str) -> IConstruct | None:
    return stack.node.try_find_child(construct_id)


def acknowledge_cdk_singletons(stack: Stack, *, deployment_buckets: Iterable[s3.IBucket]) -> None:
    """The BucketDeployment and bucket-notification handler functions CDK adds once per stack."""
    deployment = _child(stack, _BUCKET_DEPLOYMENT_ID)
    if deployment is not None:
        role = deployment.node.find_child("ServiceRole")
        acknowledge(role, f"AwsSolutions-IAM4[{BASIC_EXECUTION}]",
                    "CDK's BucketDeployment handler: the AWS managed basic-execution policy only lets it write its logs.")
        for action in ("s3:GetObject*", "s3:GetBucket*", "s3:List*", "s3:DeleteObject*", "s3:Abort*"):
            acknowledge(role, f"AwsSolutions-IAM5[Action::{action}]",
                        "CDK's BucketDeployment grant: copies deployed files into the destination bucket and prunes "
                        "old ones under the deployment's prefix.")
        qualifier = stack.node.try_get_context(BOOTSTRAP_QUALIFIER_CONTEXT) or DefaultStackSynthesizer.DEFAULT_QUALIFIER
        assets = (f"arn:<AWS::Partition>:s3:::cdk-{qualifier}-assets-{finding_resource(stack, stack.account)}-"
                  f"{finding_resource(stack, stack.region)}/*")
        acknowledge(role, f"AwsSolutions-IAM5[Resource::{assets}]",
                    "CDK's BucketDeployment reads its source zips from the CDK bootstrap asset bucket.")
        for bucket in deployment_buckets:
            acknowledge(role, f"AwsSolutions-IAM5[Resource::{finding_resource(stack, bucket.arn_for_objects('*'))}]",
                        "CDK's BucketDeployment writes the deployed files (settings, templates, source bundle) "
                        "into this project bucket.")
        acknowledge(deployment, "AwsSolutions-L1",
                    "CDK's BucketDeployment handler: its runtime is chosen by aws-cdk-lib, not by this project.")
    handler = _child(stack, _NOTIFICATIONS_HANDLER_ID)
    if handler is not None:
        acknowledge(handler.node.find_child("Role"), f"AwsSolutions-IAM4[{BASIC_EXECUTION}]",
                    "CDK's bucket-notification handler (turns on EventBridge delivery of the unlabeled bucket): "
                    "the AWS managed basic-execution policy only lets it write its logs.")


def acknowledge_codebuild_vpc(role: iam.IRole, projects: Iterable[codebuild.IProject]) -> None:
    """CodeBuild projects in a VPC: CDK grants the network-interface calls CodeBuild makes for each build
    (on the shared build role, plus one policy CDK attaches once, under the first project)."""
    eni = "arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:network-interface/*"
    acknowledge(role, f"AwsSolutions-IAM5[Resource::{eni}]",
                "CDK's grant for CodeBuild in a VPC: ec2:CreateNetworkInterfacePermission on the interfaces CodeBuild "
                "creates per build (their IDs are not known before), conditioned on the project's own subnets "
                "and on CodeBuild as the authorized service.")
    for project in projects:
        policy = project.node.try_find_child("PolicyDocument")
        if policy is not None:
            acknowledge(policy, "AwsSolutions-IAM5[Resource::*]",
                        "CDK's grant for CodeBuild in a VPC: ec2:CreateNetworkInterface and the ec2:Describe* calls "
                        "CodeBuild makes to attach each build to the VPC; the Describe* APIs take no resource and "
                        "the interfaces do not exist before the build.")
