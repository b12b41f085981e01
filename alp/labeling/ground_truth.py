"""The ``ground-truth`` backend: SageMaker Ground Truth labeling jobs through boto3 (one adapter).

Ground Truth is closed to new AWS customers; accounts that have it use this backend, others use another
implementation of :class:`~alp.labeling.backend.LabelingBackend`. Jobs are custom tasks (our templates and
our two Lambdas) with a private workteam: in-cabin images show faces, so the content is never declared free
of personal data.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from alp import aws
from alp.labeling.backend import JobSpec, JobStatus, LabelingBackend
from alp.labeling.contracts import TEMPLATE_FILES, JobKind, is_valid_job_name
from alp.resources import ResourceNames
from alp.settings import Settings

_STATES = {"Initializing", "InProgress", "Completed", "Failed", "Stopping", "Stopped"}


class GroundTruthBackend(LabelingBackend):
    name = "ground-truth"

    def __init__(self, settings: Settings, *, account: str | None = None, region: str | None = None,
                 client: Any = None) -> None:
        self.settings = settings
        self.region = region or settings.region
        self._account = account
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws.client("sagemaker")
        return self._client

    @property
    def account(self) -> str:
        if self._account is None:
            self._account = aws.account_id()
        return self._account

    def resource_names(self) -> ResourceNames:
        return ResourceNames.from_settings(self.settings, self.account, self.region)

    def template_uri(self, kind: JobKind) -> str:
        """The template the stack uploaded to ``s3://<data bucket>/<templates_prefix>``."""
        return f"s3://{self.resource_names().data_bucket}/{self.settings.storage.templates_prefix}{TEMPLATE_FILES[kind]}"

    def create_request(self, spec: JobSpec) -> dict[str, Any]:
        """The CreateLabelingJob parameters for ``spec`` (pure apart from the account look-up)."""
        labeling = self.settings.labeling
        if not labeling.workteam_arn:
            raise ValueError("settings.labeling.workteam_arn is required by the ground-truth backend "
                             "(arn:aws:sagemaker:<region>:<account>:workteam/private-crowd/<name>)")
        if not is_valid_job_name(spec.name):
            raise ValueError(f"labeling job name {spec.name!r} does not match ^[a-zA-Z0-9](-*[a-zA-Z0-9]){{0,62}}$")
        names = self.resource_names()
        lambda_arn = f"arn:aws:lambda:{self.region}:{self.account}:function:"
        return {
            "LabelingJobName": spec.name,
            "LabelAttributeName": spec.label_attribute,
            "InputConfig": {"DataSource": {"S3DataSource": {"ManifestS3Uri": spec.input_manifest_uri}}},
            "OutputConfig": {"S3OutputPath": spec.output_path},
            "RoleArn": f"arn:aws:iam::{self.account}:role/{names.sagemaker_role}",
            "LabelCategoryConfigS3Uri": spec.label_category_uri,
            "HumanTaskConfig": {
                "WorkteamArn": labeling.workteam_arn,
                "UiConfig": {"UiTemplateS3Uri": spec.template_uri},
                "PreHumanTaskLambdaArn": lambda_arn + names.pre_annotation_function,
                "TaskKeywords": list(spec.keywords),
                "TaskTitle": spec.title[:128],
                "TaskDescription": spec.description[:255],
                "NumberOfHumanWorkersPerDataObject": labeling.workers_per_object,
                "TaskTimeLimitInSeconds": labeling.task_time_limit_seconds,
                "TaskAvailabilityLifetimeInSeconds": labeling.task_availability_seconds,
                "MaxConcurrentTaskCount": labeling.max_concurrent_tasks,
                "AnnotationConsolidationConfig": {
                    "AnnotationConsolidationLambdaArn": lambda_arn + names.post_annotation_function,
                },
            },
            "Tags": [{"Key": "alp:job-kind", "Value": spec.kind}],
        }

    def find_job(self, name: str) -> JobStatus | None:
        try:
            resp = self.client.describe_labeling_job(LabelingJobName=name)
        except ClientError as exc:
            if aws.error_code(exc) in ("ResourceNotFound", "ValidationException"):
                return None
            raise
        return _status(resp)

    def create_job(self, spec: JobSpec) -> JobStatus:
        existing = self.find_job(spec.name)
        if existing is not None:
            return existing
        try:
            self.client.create_labeling_job(**self.create_request(spec))
        except ClientError as exc:
            # A concurrent run created it between our look-up and our call: use that job.
            if aws.error_code(exc) != "ResourceInUse":
                raise
        return self.describe_job(spec.name)


def _status(resp: dict[str, Any]) -> JobStatus:
    counters = resp.get("LabelCounters") or {}
    state = resp.get("LabelingJobStatus", "InProgress")
    output = resp.get("LabelingJobOutput") or {}
    return JobStatus(
        name=resp["LabelingJobName"],
        state=state if state in _STATES else "InProgress",
        failure_reason=resp.get("FailureReason"),
        output_manifest_uri=output.get("OutputDatasetS3Uri"),
        total=counters.get("TotalLabeled", 0) + counters.get("Unlabeled", 0) + counters.get("FailedNonRetryableError", 0)
        if counters else None,
        labeled=counters.get("TotalLabeled") if counters else None,
        failed=counters.get("FailedNonRetryableError") if counters else None,
    )
