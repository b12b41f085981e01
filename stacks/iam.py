"""Scoped IAM statements, built from bucket names and prefixes, with their cdk-nag acknowledgements.

Statements name exact actions (never ``*`` or ``service:*``). Resource wildcards appear only for objects
under one of the project's own bucket prefixes or for resources the project names itself (``<prefix>-*``
jobs, the model package group's versions); each such resource is acknowledged once on the role that holds
it, naming the finding and why the wildcard is needed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from aws_cdk import Aws, Stack, Token
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import IConstruct

from alp.settings import Settings
from stacks.secure_defaults import acknowledge

READ_OBJECT = ("s3:GetObject", "s3:GetObjectVersion")
WRITE_OBJECT = ("s3:PutObject", "s3:AbortMultipartUpload")
ECR_PULL = ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability")
# arn:<partition>:rekognition:<region>:<account>:project/<name>/version/<version>/<timestamp> (the same form
# inference/head_backends.py parses at run time; checked here so a bad ARN fails the synth, not a batch).
_PROJECT_VERSION_ARN = re.compile(
    r"^(?P<service>arn:aws[a-z-]*:rekognition:[a-z0-9-]+:\d{12}):project/(?P<project>[^/]+)/version/[^/]+/\d+$")


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


def pull_images(policy: ScopedPolicy, repository_arns: Iterable[str]) -> None:
    """Pull images from exactly these ECR repositories (plus the registry login, which takes no resource)."""
    repositories = list(dict.fromkeys(repository_arns))  # one statement, each repository once
    if repositories:
        policy.allow(list(ECR_PULL), repositories)
    policy.allow(["ecr:GetAuthorizationToken"], ["*"], sid="EcrLogin",
                 reason="ecr:GetAuthorizationToken has no resource-level permissions; the image pulls themselves "
                        "are scoped to the repositories of the training and processing images.")


def rekognition_project_arns(version_arn: str) -> tuple[str, str]:
    """(project ARN pattern, project-version ARN) of a Custom Labels model version.

    A project's ARN ends in the project's own creation timestamp (``project/<name>/<timestamp>``), which the
    version's ARN does not carry: the pattern names the project and leaves that timestamp to ``*``."""
    m = _PROJECT_VERSION_ARN.match(version_arn)
    if not m:
        raise ValueError(f"settings.inference.rekognition_project_version_arn {version_arn!r} is not a Rekognition "
                         "Custom Labels project-version ARN "
                         "(arn:aws:rekognition:<region>:<account>:project/<name>/version/<version>/<timestamp>)")
    return f"{m['service']}:project/{m['project']}/*", version_arn


def grant_rekognition_head_detector(policy: ScopedPolicy, settings: Settings) -> bool:
    """What :class:`inference.head_backends.RekognitionHeadDetector` calls, when the settings select it.

    ``status()`` looks the project up by name (DescribeProjects) and the version's status in it
    (DescribeProjectVersions); ``open()``/``close()`` start and stop the model version; ``detect()`` runs it.
    Resources as the Service Authorization Reference defines them: DescribeProjects takes none (``*``),
    DescribeProjectVersions the project, the other three the project version. The images it sends by S3
    reference are read with the caller's own grant on the unlabeled bucket. Returns whether it granted."""
    inference = settings.inference
    if inference.head_detector_backend != "rekognition-custom-labels" or not inference.rekognition_project_version_arn:
        return False
    project, version = rekognition_project_arns(inference.rekognition_project_version_arn)
    policy.allow(["rekognition:DetectCustomLabels", "rekognition:StartProjectVersion",
                  "rekognition:StopProjectVersion"], [version], sid="RekognitionHeadModel")
    policy.allow(["rekognition:DescribeProjectVersions"], [project], sid="RekognitionHeadModelStatus",
                 reason="The head model's own Custom Labels project; its ARN ends in the project's creation "
                        "timestamp, which the configured version ARN does not carry.")
    policy.allow(["rekognition:DescribeProjects"], ["*"], sid="RekognitionFindProject",
                 reason="rekognition:DescribeProjects supports no resource-level permissions; the head backend "
                        "asks only for its own project (ProjectNames filter).")
    return True


def is_token(value: str) -> bool:
    return Token.is_unresolved(value)
