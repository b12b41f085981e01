"""Alarms and the dashboard: dead letters, failed pipeline executions, quarantine share, batcher errors.

Alarms notify one SNS topic (encrypted with a customer key, since CloudWatch and EventBridge cannot publish
to a topic under the AWS-managed SNS key). The quarantine share comes from the metrics the steps publish
through :func:`alp.observability.emit_metrics` (namespace from the settings, dimension ``Step``).
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from alp.settings import Settings
from alp.steps import LABELING_PIPELINE

ROUTE_METRICS = ("images_auto", "images_human", "images_audit", "images_quarantine")
INFER_STEP = LABELING_PIPELINE.step("Infer").name
BATCH_STEP = "Batch"  # alp.batching.BATCH_METRICS_STEP
PERIOD = Duration.minutes(5)


def quarantine_share_expression(settings: Settings, step: str = INFER_STEP) -> cw.MathExpression:
    """Quarantined / all routed images of ``step`` (0 when nothing was routed in the period)."""
    metrics = {
        name.removeprefix("images_"): cw.Metric(namespace=settings.observability.metrics_namespace,
                                                metric_name=name, dimensions_map={"Step": step},
                                                statistic="Sum", period=PERIOD)
        for name in ROUTE_METRICS
    }
    total = "FILL(auto, 0) + FILL(human, 0) + FILL(audit, 0) + FILL(quarantine, 0)"
    return cw.MathExpression(expression=f"IF(({total}) > 0, FILL(quarantine, 0) / ({total}), 0)",
                             using_metrics=metrics, label="Quarantine share", period=PERIOD)


class Monitoring(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings, dashboard_name: str,
                 dead_letter_queue: sqs.IQueue, upload_queue: sqs.IQueue, batcher: lambda_.IFunction,
                 pipeline_names: Sequence[str]) -> None:
        super().__init__(scope, construct_id)
        key = kms.Key(self, "AlertsKey", enable_key_rotation=True,
                      description="Encrypts the pipeline's alert topic")
        for service in ("cloudwatch.amazonaws.com", "events.amazonaws.com"):
            key.add_to_resource_policy(iam.PolicyStatement(
                principals=[iam.ServicePrincipal(service)],
                actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=["*"],  # "*" = this key, in a key policy
            ))
        self.topic = sns.Topic(self, "Alerts", display_name="Active labeling pipeline alerts", master_key=key,
                               enforce_ssl=True)
        action = cw_actions.SnsAction(self.topic)

        self.dlq_alarm = cw.Alarm(
            self, "DeadLettersAlarm",
            alarm_description="Upload events reached the dead-letter queue: they were not batched. Inspect and redrive.",
            metric=dead_letter_queue.metric_approximate_number_of_messages_visible(period=Duration.minutes(1),
                                                                                   statistic="Maximum"),
            threshold=1, evaluation_periods=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        self.failed_rule = events.Rule(
            self, "PipelineFailedRule",
            description="A labeling or training pipeline execution failed",
            event_pattern=events.EventPattern(
                source=["aws.codepipeline"], detail_type=["CodePipeline Pipeline Execution State Change"],
                detail={"state": ["FAILED"], "pipeline": list(pipeline_names)}),
            targets=[targets.SnsTopic(self.topic)],
        )
        self.pipeline_failed_alarm = cw.Alarm(
            self, "PipelineFailedAlarm",
            alarm_description="A pipeline execution failed (EventBridge rule on CodePipeline state FAILED)",
            metric=cw.Metric(namespace="AWS/Events", metric_name="TriggeredRules",
                             dimensions_map={"RuleName": self.failed_rule.rule_name}, statistic="Sum", period=PERIOD),
            threshold=1, evaluation_periods=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        share = quarantine_share_expression(settings)
        self.quarantine_alarm = cw.Alarm(
            self, "QuarantineShareAlarm",
            alarm_description=(f"More than {settings.observability.quarantine_share_alarm:.0%} of the routed images "
                               "were quarantined (broken uploads or a failing model)"),
            metric=share, threshold=settings.observability.quarantine_share_alarm, evaluation_periods=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        self.batcher_errors_alarm = cw.Alarm(
            self, "BatcherErrorsAlarm",
            alarm_description="The batcher Lambda failed (its records return to the queue and are retried)",
            metric=batcher.metric_errors(period=PERIOD, statistic="Sum"), threshold=1, evaluation_periods=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        for alarm in (self.dlq_alarm, self.pipeline_failed_alarm, self.quarantine_alarm, self.batcher_errors_alarm):
            alarm.add_alarm_action(action)

        ns = settings.observability.metrics_namespace

        def step_metric(name: str, step: str, statistic: str = "Sum") -> cw.Metric:
            return cw.Metric(namespace=ns, metric_name=name, dimensions_map={"Step": step}, statistic=statistic,
                             period=PERIOD)

        self.dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=dashboard_name)
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Upload queue", left=[upload_queue.metric_approximate_number_of_messages_visible(),
                                                       dead_letter_queue.metric_approximate_number_of_messages_visible()]),
            cw.GraphWidget(title="Batcher", left=[batcher.metric_invocations(), batcher.metric_errors()],
                           right=[batcher.metric_duration()]),
            cw.GraphWidget(title="Batches", left=[step_metric(m, BATCH_STEP) for m in
                                                  ("objects_batched", "images_quarantine", "duplicate_events",
                                                   "failed_messages")]),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Images by route", stacked=True,
                           left=[step_metric(m, INFER_STEP) for m in ROUTE_METRICS]),
            cw.GraphWidget(title="Quarantine share", left=[share],
                           left_annotations=[cw.HorizontalAnnotation(
                               value=settings.observability.quarantine_share_alarm, label="alarm")]),
            cw.GraphWidget(title="Inference ms per image",
                           left=[step_metric("inference_ms_per_image", INFER_STEP, "Average")]),
            cw.GraphWidget(title="Labeling job seconds",
                           left=[step_metric("labeling_job_seconds", "Label", "Maximum")]),
            cw.GraphWidget(title="Challenger metrics (test split)",
                           left=[step_metric(m, "Evaluate", "Maximum") for m in settings.training.gate_metrics]),
            cw.AlarmStatusWidget(title="Alarms", alarms=[self.dlq_alarm, self.pipeline_failed_alarm,
                                                         self.quarantine_alarm, self.batcher_errors_alarm]),
        )
