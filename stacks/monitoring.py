"""Alarms and the dashboard: dead letters, failed pipeline executions, quarantine share, batcher and completion
trigger errors.

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
    metrics = {name.removeprefix("images_"): _step_metric(settings, name, step) for name in ROUTE_METRICS}
    total = "FILL(auto, 0) + FILL(human, 0) + FILL(audit, 0) + FILL(quarantine, 0)"
    return cw.MathExpression(expression=f"IF(({total}) > 0, FILL(quarantine, 0) / ({total}), 0)",
                             using_metrics=metrics, label="Quarantine share", period=PERIOD)


class Monitoring(Construct):
    """The alert topic, an alarm on each way the pipeline can fail quietly, and the dashboard."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings, dashboard_name: str,
                 dead_letter_queue: sqs.IQueue, upload_queue: sqs.IQueue, batcher: lambda_.IFunction,
                 pipeline_names: Sequence[str], completion_trigger: lambda_.IFunction | None = None) -> None:
        super().__init__(scope, construct_id)
        self.topic = self._alert_topic()
        self.dlq_alarm = self._alarm(
            "DeadLettersAlarm",
            "Upload events reached the dead-letter queue: they were not batched. Inspect and redrive.",
            dead_letter_queue.metric_approximate_number_of_messages_visible(period=Duration.minutes(1),
                                                                            statistic="Maximum"),
        )
        self.failed_rule = self._pipeline_failed_rule(pipeline_names)
        self.pipeline_failed_alarm = self._alarm(
            "PipelineFailedAlarm",
            "A pipeline execution failed (EventBridge rule on CodePipeline state FAILED)",
            cw.Metric(namespace="AWS/Events", metric_name="TriggeredRules",
                      dimensions_map={"RuleName": self.failed_rule.rule_name}, statistic="Sum", period=PERIOD),
        )
        share = quarantine_share_expression(settings)
        limit = settings.observability.quarantine_share_alarm
        self.quarantine_alarm = self._alarm(
            "QuarantineShareAlarm",
            f"More than {limit:.0%} of the routed images were quarantined (broken uploads or a failing model)",
            share, threshold=limit, comparison=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
        )
        # The Infer step publishes 1 when the audits put the bundle's precision lower bound under the target.
        self.auto_labeling_paused_alarm = self._alarm(
            "AutoLabelingPausedAlarm",
            f"Auto-labeling paused: the audited precision's 95% lower bound fell under "
            f"judgement.target_precision {settings.judgement.target_precision}; people label every image until "
            "the audits recover (inference/guarantee.json of the batch says by how much)",
            _step_metric(settings, "auto_labeling_paused", INFER_STEP, statistic="Maximum"),
        )
        self.batcher_errors_alarm = self._alarm(
            "BatcherErrorsAlarm",
            "The batcher Lambda failed (its records return to the queue and are retried)",
            batcher.metric_errors(period=PERIOD, statistic="Sum"),
        )
        # A failing completion trigger leaves batches waiting with nobody told (the scheduled check retries).
        self.completion_errors_alarm = None if completion_trigger is None else self._alarm(
            "CompletionTriggerErrorsAlarm",
            "The labeling-completion trigger failed: batches whose people are done wait (the next check retries)",
            completion_trigger.metric_errors(period=PERIOD, statistic="Sum"),
        )
        self.alarms = tuple(a for a in (self.dlq_alarm, self.pipeline_failed_alarm, self.quarantine_alarm,
                                        self.auto_labeling_paused_alarm, self.batcher_errors_alarm,
                                        self.completion_errors_alarm) if a is not None)
        action = cw_actions.SnsAction(self.topic)
        for alarm in self.alarms:
            alarm.add_alarm_action(action)
        self.dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=dashboard_name)
        self.dashboard.add_widgets(*self._intake_widgets(settings, upload_queue, dead_letter_queue, batcher))
        self.dashboard.add_widgets(*self._routing_widgets(settings, share))

    def _alert_topic(self) -> sns.Topic:
        """The topic every alarm notifies, under a customer key the alarm and event services may use."""
        key = kms.Key(self, "AlertsKey", enable_key_rotation=True,
                      description="Encrypts the pipeline's alert topic")
        for service in ("cloudwatch.amazonaws.com", "events.amazonaws.com"):
            key.add_to_resource_policy(iam.PolicyStatement(
                principals=[iam.ServicePrincipal(service)],
                actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=["*"],  # "*" = this key, in a key policy
            ))
        return sns.Topic(self, "Alerts", display_name="Active labeling pipeline alerts", master_key=key,
                         enforce_ssl=True)

    def _alarm(self, construct_id: str, description: str, metric: cw.IMetric, *, threshold: float = 1,
               comparison: cw.ComparisonOperator = cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
               ) -> cw.Alarm:
        """An alarm on one period of ``metric``; no data (nothing happened) is not a breach."""
        return cw.Alarm(self, construct_id, alarm_description=description, metric=metric, threshold=threshold,
                        evaluation_periods=1, comparison_operator=comparison,
                        treat_missing_data=cw.TreatMissingData.NOT_BREACHING)

    def _pipeline_failed_rule(self, pipeline_names: Sequence[str]) -> events.Rule:
        return events.Rule(
            self, "PipelineFailedRule",
            description="A labeling, labeling-completion or training pipeline execution failed",
            event_pattern=events.EventPattern(
                source=["aws.codepipeline"], detail_type=["CodePipeline Pipeline Execution State Change"],
                detail={"state": ["FAILED"], "pipeline": list(pipeline_names)}),
            targets=[targets.SnsTopic(self.topic)],
        )

    def _intake_widgets(self, settings: Settings, upload_queue: sqs.IQueue, dead_letter_queue: sqs.IQueue,
                        batcher: lambda_.IFunction) -> list[cw.IWidget]:
        """The first row: uploads waiting and dead-lettered, the batcher, the batches it cut."""
        return [
            cw.GraphWidget(title="Upload queue", left=[upload_queue.metric_approximate_number_of_messages_visible(),
                                                       dead_letter_queue.metric_approximate_number_of_messages_visible()]),
            cw.GraphWidget(title="Batcher", left=[batcher.metric_invocations(), batcher.metric_errors()],
                           right=[batcher.metric_duration()]),
            cw.GraphWidget(title="Batches", left=[_step_metric(settings, m, BATCH_STEP) for m in
                                                  ("objects_batched", "images_quarantine", "duplicate_events",
                                                   "failed_messages")]),
        ]

    def _routing_widgets(self, settings: Settings, share: cw.MathExpression) -> list[cw.IWidget]:
        """The second row: routes, quarantine share, inference and labeling times, the challenger, alarms."""
        return [
            cw.GraphWidget(title="Images by route", stacked=True,
                           left=[_step_metric(settings, m, INFER_STEP) for m in ROUTE_METRICS]),
            cw.GraphWidget(title="Quarantine share", left=[share],
                           left_annotations=[cw.HorizontalAnnotation(
                               value=settings.observability.quarantine_share_alarm, label="alarm")]),
            cw.GraphWidget(title="Inference ms per image",
                           left=[_step_metric(settings, "inference_ms_per_image", INFER_STEP, "Average")]),
            cw.GraphWidget(title="Labeling job seconds",
                           left=[_step_metric(settings, "labeling_job_seconds", "Label", "Maximum")]),
            cw.GraphWidget(title="Automation: parts auto-accepted, audited precision (95% lower bound)",
                           left=[_step_metric(settings, m, INFER_STEP, "Average") for m in
                                 ("auto_share_persons", "auto_share_heads", "audited_precision",
                                  "audited_precision_lower_bound")],
                           left_annotations=[cw.HorizontalAnnotation(value=settings.judgement.target_precision,
                                                                     label="target precision")]),
            cw.GraphWidget(title="Challenger metrics (test split)",
                           left=[_step_metric(settings, m, "Evaluate", "Maximum")
                                 for m in settings.training.gate_metrics]),
            cw.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms)),
        ]


def _step_metric(settings: Settings, name: str, step: str, statistic: str = "Sum") -> cw.Metric:
    """A metric the steps publish through :func:`alp.observability.emit_metrics`."""
    return cw.Metric(namespace=settings.observability.metrics_namespace, metric_name=name,
                     dimensions_map={"Step": step}, statistic=statistic, period=PERIOD)
