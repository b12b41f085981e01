"""Names of every AWS resource, derived from the settings in one place.

The CDK stack creates resources with these names and the embedded (moto) mode of the demo creates the
same ones, so a step finds its bucket, queue, pipeline or model package group the same way in both.
"""

from __future__ import annotations

from dataclasses import dataclass

from alp.settings import Settings


@dataclass(frozen=True)
class ResourceNames:
    account: str
    region: str
    unlabeled_bucket: str
    data_bucket: str
    labeling_artifact_bucket: str
    training_artifact_bucket: str
    access_log_bucket: str
    upload_queue: str
    upload_dlq: str
    upload_rule: str
    batcher_function: str
    pre_annotation_function: str
    post_annotation_function: str
    labeling_pipeline: str
    training_pipeline: str
    model_package_group: str
    sagemaker_role: str
    # Exactly-once ledger of the upload batcher (DynamoDB); defaulted so direct constructions keep working.
    batch_ledger_table: str = ""
    # The split human step: the pipeline a completion event starts, the function that starts it and its two rules.
    labeling_completion_pipeline: str = ""
    completion_function: str = ""
    labeling_job_state_rule: str = ""
    waiting_check_rule: str = ""

    @classmethod
    def from_settings(cls, settings: Settings, account: str, region: str | None = None) -> ResourceNames:
        region = region or settings.region
        p = settings.storage.resource_prefix
        buckets = settings.storage.bucket_names(account, region)
        return cls(
            account=account,
            region=region,
            unlabeled_bucket=buckets["unlabeled"],
            data_bucket=buckets["data"],
            labeling_artifact_bucket=buckets["labeling_artifacts"],
            training_artifact_bucket=buckets["training_artifacts"],
            access_log_bucket=buckets["access_logs"],
            upload_queue=f"{p}-upload-events",
            upload_dlq=f"{p}-upload-events-dlq",
            upload_rule=f"{p}-unlabeled-object-created",
            batcher_function=f"{p}-batcher",
            pre_annotation_function=f"{p}-gt-pre-annotation",
            post_annotation_function=f"{p}-gt-post-annotation",
            labeling_pipeline=f"{p}-labeling",
            training_pipeline=f"{p}-training",
            model_package_group=f"{p}-model-bundles",
            sagemaker_role=f"{p}-sagemaker-execution",
            batch_ledger_table=f"{p}-batch-ledger",
            labeling_completion_pipeline=f"{p}-labeling-completion",
            completion_function=f"{p}-labeling-completion-trigger",
            labeling_job_state_rule=f"{p}-labeling-job-state-change",
            waiting_check_rule=f"{p}-waiting-batches-check",
        )

    @classmethod
    def for_function(cls, settings: Settings, function_arn: str) -> ResourceNames:
        """Resource names for the account and region of a running Lambda function (from its ARN)."""
        parts = function_arn.split(":")
        if len(parts) < 7 or parts[2] != "lambda":
            raise ValueError(f"not a Lambda function ARN: {function_arn!r}")
        return cls.from_settings(settings, account=parts[4], region=parts[3])

    @property
    def data_root(self) -> str:
        return f"s3://{self.data_bucket}/"
