"""Secure defaults for buckets, queues and function log groups, written once and reused by every construct.

Every bucket: public access blocked, TLS enforced by bucket policy, SSE-S3 encryption, bucket-owner object
ownership, server access logs to the access-log bucket. Every queue: SSE-SQS and TLS enforced. Every
Lambda: its own log group with explicit retention. cdk-nag acknowledgements go through :func:`acknowledge`,
which records exactly one finding on one construct with its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aws_cdk as cdk
from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct, IConstruct


def acknowledge(scope: IConstruct, finding: str, reason: str) -> None:
    """Acknowledge one cdk-nag finding (e.g. ``AwsSolutions-IAM5[Action::s3:GetObject*]``) on ``scope``."""
    if not reason.strip():
        raise ValueError(f"acknowledgement of {finding} needs a reason")
    cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=finding, reason=reason))


def _private_bucket(scope: Construct, construct_id: str, *, bucket_name: str, versioned: bool,
                    **props: Any) -> s3.Bucket:
    """What every bucket has: public access blocked, SSE-S3, TLS 1.2 only, objects owned by the bucket owner."""
    return s3.Bucket(
        scope,
        construct_id,
        bucket_name=bucket_name,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        encryption=s3.BucketEncryption.S3_MANAGED,  # the one S3 server access log delivery supports
        enforce_ssl=True,
        minimum_tls_version=1.2,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,  # no ACLs: log delivery is granted by policy
        versioned=versioned,
        **props,
    )


def secure_bucket(
    scope: Construct,
    construct_id: str,
    *,
    bucket_name: str,
    access_logs: s3.IBucket | None,
    versioned: bool,
    event_bridge: bool = False,
    lifecycle_rules: Sequence[s3.LifecycleRule] = (),
    cors: Sequence[s3.CorsRule] = (),
    removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
) -> s3.Bucket:
    """A private, encrypted, TLS-only bucket. ``access_logs`` None only for the access-log bucket itself."""
    return _private_bucket(
        scope,
        construct_id,
        bucket_name=bucket_name,
        versioned=versioned,
        event_bridge_enabled=event_bridge,
        server_access_logs_bucket=access_logs,
        server_access_logs_prefix=f"{construct_id.lower()}/" if access_logs is not None else None,
        lifecycle_rules=list(lifecycle_rules) or None,
        cors=list(cors) or None,
        removal_policy=removal_policy,
    )


def access_log_bucket(scope: Construct, construct_id: str, *, bucket_name: str, retention_days: int) -> s3.Bucket:
    """The server-access-log target (it does not log itself; cdk-nag's S1 recognises a log target)."""
    return _private_bucket(
        scope,
        construct_id,
        bucket_name=bucket_name,
        versioned=True,
        lifecycle_rules=[
            s3.LifecycleRule(id="expire-access-logs", expiration=Duration.days(max(retention_days, 90)),
                             noncurrent_version_expiration=Duration.days(7)),
        ],
        removal_policy=RemovalPolicy.RETAIN,
    )


def secure_queue(
    scope: Construct,
    construct_id: str,
    *,
    queue_name: str,
    visibility_timeout: Duration,
    retention: Duration,
    dead_letter: sqs.DeadLetterQueue | None = None,
) -> sqs.Queue:
    """An SQS queue with SSE-SQS (EventBridge can deliver to it without a KMS grant) and TLS enforced."""
    return sqs.Queue(
        scope,
        construct_id,
        queue_name=queue_name,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        visibility_timeout=visibility_timeout,
        retention_period=retention,
        dead_letter_queue=dead_letter,
        removal_policy=RemovalPolicy.DESTROY,
    )


def function_log_group(scope: Construct, construct_id: str, *, function_name: str, retention_days: int) -> logs.LogGroup:
    """The log group a function writes to, created up front so its retention is explicit."""
    return log_group(scope, construct_id, name=f"/aws/lambda/{function_name}", retention_days=retention_days)


def log_group(scope: Construct, construct_id: str, *, name: str, retention_days: int) -> logs.LogGroup:
    return logs.LogGroup(scope, construct_id, log_group_name=name,
                         retention=retention_enum(retention_days),
                         removal_policy=RemovalPolicy.DESTROY)


_RETENTION = {
    1: logs.RetentionDays.ONE_DAY, 3: logs.RetentionDays.THREE_DAYS, 5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK, 14: logs.RetentionDays.TWO_WEEKS, 30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS, 90: logs.RetentionDays.THREE_MONTHS, 120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS, 180: logs.RetentionDays.SIX_MONTHS, 365: logs.RetentionDays.ONE_YEAR,
}


def retention_enum(days: int) -> logs.RetentionDays:
    """The CDK enum member for a day count (settings allow exactly CloudWatch's values)."""
    if days not in _RETENTION:
        raise ValueError(f"log retention {days} days is not one CloudWatch Logs offers: {sorted(_RETENTION)}")
    return _RETENTION[days]
