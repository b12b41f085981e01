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
        )

    @property
    def data_root(self) -> str:
        return f"s3://{self.data_bucket}/"
