"""Upload trigger: S3 Object Created -> EventBridge rule -> SQS (+ dead-letter queue) -> batcher Lambda.

The queue absorbs bursts and retries; the batcher (see :mod:`alp.batching`) turns one SQS batching window
into one batch manifest and one labeling-pipeline execution, with a DynamoDB ledger for exactly-once
batching across redeliveries. Failed records are reported per item and land in the dead-letter queue
after ``settings.trigger.max_receive_count`` attempts.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from alp.batching.ledger import LEDGER_KEY
from alp.resources import ResourceNames
from alp.settings import Settings
from stacks.functions import FunctionSpec, PipelineFunction
from stacks.secure_defaults import secure_queue

# SQS allows at most 10 messages per batch unless a batching window is set.
_MAX_BATCH_WITHOUT_WINDOW = 10


def queue_visibility_seconds(settings: Settings) -> int:
    """AWS's guidance: at least six times the function timeout, plus the batching window."""
    return 6 * settings.trigger.batcher_timeout_seconds + settings.trigger.batching_window_seconds


class UploadTrigger(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings, names: ResourceNames,
                 code: lambda_.Code, unlabeled_bucket: s3.IBucket, data_bucket: s3.IBucket,
                 labeling_pipeline_arn: str, settings_uri: str) -> None:
        super().__init__(scope, construct_id)
        trigger = settings.trigger
        self.dead_letter_queue = secure_queue(self, "DeadLetterQueue", queue_name=names.upload_dlq,
                                              visibility_timeout=Duration.seconds(30), retention=Duration.days(14))
        self.queue = secure_queue(
            self, "Queue", queue_name=names.upload_queue,
            visibility_timeout=Duration.seconds(queue_visibility_seconds(settings)),
            retention=Duration.days(4),
            dead_letter=sqs.DeadLetterQueue(queue=self.dead_letter_queue, max_receive_count=trigger.max_receive_count),
        )

        detail: dict[str, object] = {"bucket": {"name": [unlabeled_bucket.bucket_name]}}
        if settings.storage.unlabeled_prefix:
            detail["object"] = {"key": events.Match.prefix(settings.storage.unlabeled_prefix)}
        self.rule = events.Rule(
            self, "ObjectCreatedRule",
            rule_name=names.upload_rule,
            description="New uploads under the unlabeled prefix go to the batcher's queue",
            event_pattern=events.EventPattern(source=["aws.s3"], detail_type=["Object Created"], detail=detail),
            targets=[targets.SqsQueue(self.queue)],
        )

        # Ledger items expire after 30 days (TTL); the ledger only has to outlive SQS redeliveries.
        self.ledger = dynamodb.Table(
            self, "BatchLedger",
            table_name=names.batch_ledger_table,
            partition_key=dynamodb.Attribute(name=LEDGER_KEY, type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True),
            time_to_live_attribute="expires_at",
            removal_policy=RemovalPolicy.DESTROY,
        )

        self.batcher = PipelineFunction(
            self, "Batcher", code=code, settings=settings, settings_uri=settings_uri,
            spec=FunctionSpec("Batcher", names.batcher_function, "lambdas.batcher.handler",
                              "Batches upload events into one manifest and one labeling execution per window",
                              timeout_seconds=trigger.batcher_timeout_seconds, memory_mb=512),
        )
        window = trigger.batching_window_seconds
        self.batcher.function.add_event_source(sources.SqsEventSource(
            self.queue,
            batch_size=trigger.max_batch_records if window > 0 else min(trigger.max_batch_records,
                                                                          _MAX_BATCH_WITHOUT_WINDOW),
            max_batching_window=Duration.seconds(window) if window > 0 else None,
            report_batch_item_failures=True,
        ))
        policy = self.batcher.policy
        storage = settings.storage
        policy.allow(["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"], [self.ledger.table_arn])
        policy.read_objects(data_bucket, [storage.config_key], "the deployed settings")
        policy.write_objects(data_bucket, [storage.batches_prefix], "batch manifests and quarantine files")
        policy.allow(["codepipeline:StartPipelineExecution"], [labeling_pipeline_arn])
