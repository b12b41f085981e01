"""Buckets of the pipeline and what the stack deploys into them (settings, Ground Truth templates)."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from constructs import Construct

from alp.resources import ResourceNames
from alp.settings import Settings
from stacks.secure_defaults import access_log_bucket, secure_bucket

# CodePipeline stores a pipeline's artifacts under the first 20 characters of its name.
_ARTIFACT_PREFIX_CHARS = 20


def pipeline_artifact_prefix(pipeline_name: str) -> str:
    return pipeline_name[:_ARTIFACT_PREFIX_CHARS] + "/"


# Training-job scratch in the training artifact bucket (training/sagemaker_job.py): the entry-point archive
# (content-addressed, re-uploaded when missing) and the jobs' raw outputs (copied into the bundle).
TRAINING_JOB_PREFIXES = ("code/", "jobs/")


def _artifact_rules(pipeline_name: str, retention_days: int, extra_prefixes: tuple[str, ...] = (),
                    other_pipelines: tuple[str, ...] = ()) -> list[s3.LifecycleRule]:
    """Expire the run artifacts of the pipelines sharing the bucket, never the current source bundle (it lives
    under ``source/``)."""
    return [
        s3.LifecycleRule(id="expire-pipeline-artifacts", prefix=pipeline_artifact_prefix(pipeline_name),
                         expiration=Duration.days(retention_days)),
        *(s3.LifecycleRule(id=f"expire-{other}-artifacts", prefix=pipeline_artifact_prefix(other),
                           expiration=Duration.days(retention_days)) for other in other_pipelines
          if pipeline_artifact_prefix(other) != pipeline_artifact_prefix(pipeline_name)),  # long prefixes meet
        *(s3.LifecycleRule(id=f"expire-{prefix.strip('/')}", prefix=prefix, expiration=Duration.days(retention_days))
          for prefix in extra_prefixes),
        s3.LifecycleRule(id="expire-old-versions", noncurrent_version_expiration=Duration.days(retention_days),
                         abort_incomplete_multipart_upload_after=Duration.days(7)),
    ]


def write_once_prefixes(settings: Settings) -> tuple[str, ...]:
    """The data bucket's prefixes whose objects are never replaced nor deleted: the dataset versions and the
    content-addressed copies of their images (docs/reliability.md, "Datasets that last")."""
    return (settings.storage.datasets_prefix, settings.storage.images_prefix)


class Storage(Construct):
    """The unlabeled-images bucket, the data bucket, one artifact bucket per pipeline and the access logs.

    The data bucket receives the deployed settings (``config/settings.json``, read by every step through
    ``ALP_SETTINGS_URI``) and the Ground Truth worker templates (``templates/``).
    """

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings, names: ResourceNames,
                 templates_dir: Path) -> None:
        super().__init__(scope, construct_id)
        retention = settings.storage.artifact_retention_days
        self.access_logs = access_log_bucket(self, "AccessLogs", bucket_name=names.access_log_bucket,
                                             retention_days=retention)
        self.unlabeled = secure_bucket(
            self, "Unlabeled", bucket_name=names.unlabeled_bucket, access_logs=self.access_logs, versioned=True,
            event_bridge=True,
            lifecycle_rules=[s3.LifecycleRule(id="abort-incomplete-uploads",
                                              abort_incomplete_multipart_upload_after=Duration.days(7)),
                             # Each round trip of the Requeue step leaves the older version (the same bytes)
                             # behind; the steps read the current version only.
                             s3.LifecycleRule(id="expire-old-versions",
                                              noncurrent_version_expiration=Duration.days(retention))],
            # The Ground Truth worker UI loads images straight from S3 (presigned GETs) in the browser.
            cors=[s3.CorsRule(allowed_methods=[s3.HttpMethods.GET], allowed_origins=["*"],
                              exposed_headers=["Access-Control-Allow-Origin"])],
        )
        self.data = secure_bucket(
            self, "Data", bucket_name=names.data_bucket, access_logs=self.access_logs, versioned=True,
            lifecycle_rules=[s3.LifecycleRule(id="abort-incomplete-uploads",
                                              abort_incomplete_multipart_upload_after=Duration.days(7))],
            cors=[s3.CorsRule(allowed_methods=[s3.HttpMethods.GET], allowed_origins=["*"],
                              exposed_headers=["Access-Control-Allow-Origin"])],
        )
        self._make_write_once(settings)
        # Versioned: a CodePipeline S3 source action requires it.
        self.labeling_artifacts = secure_bucket(
            self, "LabelingArtifacts", bucket_name=names.labeling_artifact_bucket, access_logs=self.access_logs,
            versioned=True, lifecycle_rules=_artifact_rules(names.labeling_pipeline, retention,
                                                            other_pipelines=(names.labeling_completion_pipeline,)),
        )
        self.training_artifacts = secure_bucket(
            self, "TrainingArtifacts", bucket_name=names.training_artifact_bucket, access_logs=self.access_logs,
            versioned=True, lifecycle_rules=_artifact_rules(names.training_pipeline, retention, TRAINING_JOB_PREFIXES),
        )

        self.settings_uri = f"s3://{names.data_bucket}/{settings.storage.config_key}"
        self.config_deployment = s3deploy.BucketDeployment(
            self, "Settings",
            # Source.data, not Source.json_data: json_data drops null values (workteam_arn: null would vanish),
            # and the steps must read back exactly the settings the stack was synthesized with.
            sources=[s3deploy.Source.data(settings.storage.config_key, settings.to_json())],
            destination_bucket=self.data,
            prune=False,  # the data bucket holds the datasets: never delete what the deployment did not write
            retain_on_delete=True,
        )
        self.templates_deployment = s3deploy.BucketDeployment(
            self, "Templates",
            sources=[s3deploy.Source.asset(str(templates_dir))],
            destination_bucket=self.data,
            destination_key_prefix=settings.storage.templates_prefix,
            prune=True,  # scoped to templates/: removed templates disappear with the next deploy
            retain_on_delete=True,
        )

    def _make_write_once(self, settings: Settings) -> None:
        """Dataset versions and their images are immutable by construction, for every principal: a PutObject
        there must carry ``If-None-Match: *`` (S3 then refuses a key that exists: 412), and no object there can be
        deleted. A bucket policy rather than S3 Object Lock: Object Lock needs a new bucket (it cannot be turned
        on for the deployed data bucket without support), would lock the whole version history of every key
        for a retention period, and still lets an overwrite create a newer version in governance mode; the
        conditional write refuses the overwrite itself. The data bucket has no expiration rule, so no version
        under these prefixes ever expires."""
        objects = [self.data.arn_for_objects(f"{prefix}*") for prefix in write_once_prefixes(settings)]
        self.data.add_to_resource_policy(iam.PolicyStatement(
            sid="WriteOnceDatasets", effect=iam.Effect.DENY, principals=[iam.AnyPrincipal()],
            actions=["s3:PutObject"], resources=objects, conditions={"Null": {"s3:if-none-match": "true"}}))
        self.data.add_to_resource_policy(iam.PolicyStatement(
            sid="KeepDatasets", effect=iam.Effect.DENY, principals=[iam.AnyPrincipal()],
            actions=["s3:DeleteObject", "s3:DeleteObjectVersion"], resources=objects))
