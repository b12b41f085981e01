"""Completion trigger of the split human step: two EventBridge rules -> one Lambda -> the completion pipeline.

- ``LabelingJobStateRule``: Ground Truth's ``SageMaker Ground Truth Labeling Job State Change`` for the
  project's own jobs (job ARN prefix ``labeling-job/<resource prefix>-``) once they are over (Completed,
  Failed, Stopped).
- ``WaitingCheckRule``: every ``labeling.studio.check_interval_minutes``, for both backends. Label Studio
  sends no event, so the check is how its batches finish; for Ground Truth it is the backstop of a lost event
  (it starts a Ground Truth batch only once its event is overdue, see :mod:`alp.labeling.completion`). A
  check costs one listing of the waiting index.

The function reads the waiting index and the deployed settings, and may start, list and read executions of
the completion pipeline only (listing spares a busy pipeline a second execution for a batch). EventBridge
invokes it asynchronously: Lambda retries a failed invocation twice, and the request tokens make a retry
start nothing twice.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from constructs import Construct

from alp.labeling.completion import (
    FINAL_JOB_STATES,
    LABELING_JOB_DETAIL_TYPE,
    LABELING_JOB_SOURCE,
    job_name_prefix,
    waiting_key_prefix,
)
from alp.resources import ResourceNames
from alp.settings import Settings
from stacks.functions import FunctionSpec, PipelineFunction
from stacks.iam import sagemaker_arn

FUNCTION_TIMEOUT_SECONDS = 60
EVENT_MAX_AGE = Duration.hours(6)


class CompletionTrigger(Construct):
    """The completion Lambda (``function``), its rules (``job_state_rule``, ``check_rule``)."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings, names: ResourceNames,
                 code: lambda_.Code, data_bucket: s3.IBucket, completion_pipeline_arn: str,
                 settings_uri: str) -> None:
        super().__init__(scope, construct_id)
        self.function = PipelineFunction(
            self, "Function", code=code, settings=settings, settings_uri=settings_uri,
            spec=FunctionSpec("Function", names.completion_function, "lambdas.labeling_completion.handler",
                              "Starts the labeling-completion pipeline for batches whose labeling job ended",
                              timeout_seconds=FUNCTION_TIMEOUT_SECONDS, memory_mb=256))
        policy = self.function.policy
        storage = settings.storage
        waiting = waiting_key_prefix(settings)
        policy.read_objects(data_bucket, [storage.config_key, waiting], "the deployed settings and the waiting index")
        # Only listings of the waiting index: the function never asks for a key it did not list.
        policy.allow(["s3:ListBucket"], [data_bucket.bucket_arn], conditions={"StringLike": {"s3:prefix": [f"{waiting}*"]}})
        policy.allow(["codepipeline:StartPipelineExecution", "codepipeline:ListPipelineExecutions",
                      "codepipeline:GetPipelineExecution"], [completion_pipeline_arn])

        target = targets.LambdaFunction(self.function.function, retry_attempts=4, max_event_age=EVENT_MAX_AGE)
        own_jobs = sagemaker_arn(f"labeling-job/{job_name_prefix(settings)}")
        self.job_state_rule = events.Rule(
            self, "LabelingJobStateRule",
            rule_name=names.labeling_job_state_rule,
            description="The project's Ground Truth labeling jobs that ended start the completion pipeline",
            event_pattern=events.EventPattern(
                source=[LABELING_JOB_SOURCE], detail_type=[LABELING_JOB_DETAIL_TYPE],
                resources=events.Match.prefix(own_jobs),
                detail={"LabelingJobStatus": sorted(FINAL_JOB_STATES)}),
            targets=[target],
        )
        interval = settings.labeling.studio.check_interval_minutes
        self.check_rule = events.Rule(
            self, "WaitingCheckRule",
            rule_name=names.waiting_check_rule,
            description=f"Every {interval} min: batches waiting on Label Studio (or on an overdue Ground Truth event)",
            schedule=events.Schedule.rate(Duration.minutes(interval)),
            targets=[target],
        )
        self.own_jobs_arn_prefix = own_jobs
