"""Scoped IAM statements, built from bucket names and prefixes, with their cdk-nag acknowledgements.

Statements name exact actions (never ``*`` or ``service:*``). Resource wildcards appear only for objects
under one of the project's own bucket prefixes or for resources the project names itself (``<prefix>-*``
jobs, the model package group's versions); each such resource is acknowledged once on the role that holds
it, naming the finding and why the wildcard is needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from aws_cdk import Aws, Stack, Token
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import IConstruct

from stacks.secure_defaults import acknowledge

READ_OBJECT = ("s3:GetObject", "s3:GetObjectVersion")
WRITE_OBJECT = ("s3:PutObject", "s3:AbortMultipartUpload")


def finding_resource(scope: IConstruct, resource: str) -> str:
    """How cdk-nag prints a resource in a finding id (tokens become ``<LogicalId.Attr>`` / ``<AWS::X>``)."""
    stack = Stack.of(scope)
    resolved = stack.resolve(resource)
    return _render(resolved)


def _render(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if "Fn::Join" in value:
            sep, parts = value["Fn::Join"]
            return str(sep).join(_render(p) for p in parts)
        if "Ref" in value:
            return f"<{value['Ref']}>"
        if "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            return f"<{target[0]}.{target[1]}>" if isinstance(target, list) else f"<{target}>"
    return str(value)


class ScopedPolicy:
    """Adds scoped statements to one role and acknowledges each wildcard resource it introduces."""

    def __init__(self, role: iam.Role) -> None:
        self.role = role
        self._acknowledged: set[str] = set()

    def allow(self, actions: Sequence[str], resources: Sequence[str], *, reason: str | None = None,
              conditions: dict[str, object] | None = None, sid: str | None = None) -> None:
        for action in actions:
            if action == "*" or action.endswith(":*"):
                raise ValueError(f"refusing the all-actions grant {action!r}; name the actions")
        self.role.add_to_principal_policy(iam.PolicyStatement(
            sid=sid, actions=list(actions), resources=list(resources), conditions=conditions))
        for resource in resources:
            if "*" not in finding_resource(self.role, resource):
                continue
            if reason is None:
                raise ValueError(f"wildcard resource {resource!r} on {self.role.node.path} needs a reason")
            self.acknowledge_resource(resource, reason)

    def acknowledge_resource(self, resource: str, reason: str) -> None:
        finding = f"AwsSolutions-IAM5[Resource::{finding_resource(self.role, resource)}]"
        if finding not in self._acknowledged:
            self._acknowledged.add(finding)
            acknowledge(self.role, finding, reason)

    def read_objects(self, bucket: s3.IBucket, prefixes: Iterable[str], why: str) -> None:
        self._objects(bucket, prefixes, READ_OBJECT, f"Reads objects under its own prefix: {why}")

    def write_objects(self, bucket: s3.IBucket, prefixes: Iterable[str], why: str) -> None:
        self._objects(bucket, prefixes, WRITE_OBJECT, f"Writes objects under its own prefix: {why}")

    def read_write_objects(self, bucket: s3.IBucket, prefixes: Iterable[str], why: str) -> None:
        self._objects(bucket, prefixes, READ_OBJECT + WRITE_OBJECT,
                      f"Reads and writes objects under its own prefix: {why}")

    def copy_objects_onto_themselves(self, bucket: s3.IBucket, prefix: str, why: str) -> None:
        """``s3:PutObject`` under ``prefix`` for CopyObject requests only, whose source lies under the same
        prefix and whose metadata is replaced: a role holding it can give an image a new version (and new
        metadata) but cannot write bytes of its own there. Plus ``s3:GetBucketVersioning``: a copy onto
        itself is new work only in a versioned bucket, which the caller checks before copying."""
        self.allow(["s3:PutObject"], [bucket.arn_for_objects(f"{prefix}*")],
                   reason=f"Copies objects under its own prefix onto themselves: {why}",
                   conditions={"StringLike": {"s3:x-amz-copy-source": f"{bucket.bucket_name}/{prefix}*"},
                               "StringEquals": {"s3:x-amz-metadata-directive": "REPLACE"}})
        self.allow(["s3:GetBucketVersioning"], [bucket.bucket_arn])

    def list_bucket(self, bucket: s3.IBucket, prefixes: Iterable[str]) -> None:
        """``s3:ListBucket`` on the bucket, without an ``s3:prefix`` condition on purpose: S3 answers a GET
        or HEAD of a missing key with 404 (not 403) only when ListBucket is allowed for that request, and
        such requests carry no ``s3:prefix``. The steps rely on 404 to tell "not there yet" from "denied".
        ``prefixes`` documents what the role lists."""
        del prefixes
        self.allow(["s3:ListBucket"], [bucket.bucket_arn])

    def _objects(self, bucket: s3.IBucket, prefixes: Iterable[str], actions: Sequence[str], reason: str) -> None:
        resources = [bucket.arn_for_objects(f"{p}*") for p in sorted(set(prefixes))]
        self.allow(actions, resources, reason=reason)


def sagemaker_arn(resource: str) -> str:
    """ARN of a SageMaker resource in this stack's account and region (``training-job/alp-*``)."""
    return f"arn:{Aws.PARTITION}:sagemaker:{Aws.REGION}:{Aws.ACCOUNT_ID}:{resource}"


def pass_role(policy: ScopedPolicy, role: iam.IRole) -> None:
    """Allow handing ``role`` to SageMaker (training, processing and labeling jobs) and nothing else."""
    policy.allow(["iam:PassRole"], [role.role_arn],
                 conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}})


def is_token(value: str) -> bool:
    return Token.is_unresolved(value)
