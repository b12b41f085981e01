"""What IAM checks an AWS API call against: its actions, resources and condition keys.

One function per service maps the parameters of a call, as boto3 receives them, to the
:class:`~alp.rehearsal.policy.Request` objects IAM evaluates (a copy is a read of its source and a write of
its target; creating a job that hands SageMaker a role is also an ``iam:PassRole``). The resources follow
AWS's Service Authorization Reference for the calls this project makes; a call missing here is still
recorded and checked at action level (reported as ``action_only``), never waved through.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

from alp.rehearsal.policy import Request

# Calls IAM never denies (STS answers GetCallerIdentity for any valid credentials).
ALWAYS_ALLOWED = frozenset({"sts:GetCallerIdentity"})


@dataclass(frozen=True)
class Scope:
    account: str
    region: str
    partition: str = "aws"

    def arn(self, service: str, resource: str, *, region: bool = True, account: bool = True) -> str:
        return (f"arn:{self.partition}:{service}:{self.region if region else ''}:"
                f"{self.account if account else ''}:{resource}")


# --- S3 ----------------------------------------------------------------------------------------------
def _object(scope: Scope, bucket: str, key: str) -> str:
    return f"arn:{scope.partition}:s3:::{bucket}/{key}"


def _bucket(scope: Scope, bucket: str) -> str:
    return f"arn:{scope.partition}:s3:::{bucket}"


def _copy_source(value: Any) -> tuple[str, str, str | None]:
    if isinstance(value, Mapping):
        return str(value["Bucket"]), str(value["Key"]), value.get("VersionId")
    text = unquote(str(value)).lstrip("/")
    path, _, query = text.partition("?versionId=")
    bucket, _, key = path.partition("/")
    return bucket, key, query or None


def s3_requests(scope: Scope, op: str, p: Mapping[str, Any]) -> list[Request] | None:
    bucket = str(p.get("Bucket", ""))
    key = str(p.get("Key", ""))
    versioned = bool(p.get("VersionId"))
    read = "s3:GetObjectVersion" if versioned else "s3:GetObject"
    by_op: dict[str, Callable[[], list[Request]]] = {
        "GetObject": lambda: [Request(read, _object(scope, bucket, key))],
        "HeadObject": lambda: [Request(read, _object(scope, bucket, key))],
        # a conditional write carries its header as a condition key (the data bucket's write-once prefixes)
        "PutObject": lambda: [Request("s3:PutObject", _object(scope, bucket, key),
                                      {"s3:if-none-match": str(p["IfNoneMatch"])} if p.get("IfNoneMatch") else {})],
        "CreateMultipartUpload": lambda: [Request("s3:PutObject", _object(scope, bucket, key))],
        "UploadPart": lambda: [Request("s3:PutObject", _object(scope, bucket, key))],
        "CompleteMultipartUpload": lambda: [Request("s3:PutObject", _object(scope, bucket, key))],
        "AbortMultipartUpload": lambda: [Request("s3:AbortMultipartUpload", _object(scope, bucket, key))],
        "DeleteObject": lambda: [Request("s3:DeleteObjectVersion" if versioned else "s3:DeleteObject",
                                         _object(scope, bucket, key))],
        "DeleteObjects": lambda: [Request("s3:DeleteObject", _object(scope, bucket, str(o["Key"])))
                                  for o in p.get("Delete", {}).get("Objects", [])],
        "ListObjectsV2": lambda: [Request("s3:ListBucket", _bucket(scope, bucket),
                                          {"s3:prefix": str(p.get("Prefix", ""))})],
        "ListObjects": lambda: [Request("s3:ListBucket", _bucket(scope, bucket),
                                        {"s3:prefix": str(p.get("Prefix", ""))})],
        "ListObjectVersions": lambda: [Request("s3:ListBucketVersions", _bucket(scope, bucket),
                                               {"s3:prefix": str(p.get("Prefix", ""))})],
        "GetBucketVersioning": lambda: [Request("s3:GetBucketVersioning", _bucket(scope, bucket))],
        "GetBucketLocation": lambda: [Request("s3:GetBucketLocation", _bucket(scope, bucket))],
        "GetObjectTagging": lambda: [Request("s3:GetObjectTagging", _object(scope, bucket, key))],
    }
    if op == "CopyObject":
        src_bucket, src_key, src_version = _copy_source(p["CopySource"])
        context = {"s3:x-amz-copy-source": f"{src_bucket}/{src_key}",
                   "s3:x-amz-metadata-directive": str(p.get("MetadataDirective", "COPY"))}
        return [Request("s3:GetObjectVersion" if src_version else "s3:GetObject", _object(scope, src_bucket, src_key)),
                Request("s3:PutObject", _object(scope, bucket, key), context)]
    build = by_op.get(op)
    return build() if build else None


# --- SageMaker ---------------------------------------------------------------------------------------
def _pass_role(role_arn: str) -> Request:
    return Request("iam:PassRole", role_arn, {"iam:PassedToService": "sagemaker.amazonaws.com"})


def _package_arn(scope: Scope, name: str) -> str:
    return name if name.startswith("arn:") else scope.arn("sagemaker", f"model-package/{name.lower()}")


def sagemaker_requests(scope: Scope, op: str, p: Mapping[str, Any]) -> list[Request] | None:
    def group() -> str:
        return scope.arn("sagemaker", f"model-package-group/{str(p['ModelPackageGroupName']).lower()}")

    def job(kind: str, name_param: str) -> str:
        return scope.arn("sagemaker", f"{kind}/{str(p[name_param]).lower()}")

    def create(kind: str, name_param: str) -> list[Request]:
        arn = job(kind, name_param)
        out = [Request(f"sagemaker:{op}", arn)]
        if p.get("Tags"):
            out.append(Request("sagemaker:AddTags", arn))
        if p.get("RoleArn"):
            out.append(_pass_role(str(p["RoleArn"])))
        return out

    by_op: dict[str, Callable[[], list[Request]]] = {
        "CreateProcessingJob": lambda: create("processing-job", "ProcessingJobName"),
        "CreateTrainingJob": lambda: create("training-job", "TrainingJobName"),
        "CreateLabelingJob": lambda: create("labeling-job", "LabelingJobName"),
        "DescribeProcessingJob": lambda: [Request(f"sagemaker:{op}", job("processing-job", "ProcessingJobName"))],
        "DescribeTrainingJob": lambda: [Request(f"sagemaker:{op}", job("training-job", "TrainingJobName"))],
        "DescribeLabelingJob": lambda: [Request(f"sagemaker:{op}", job("labeling-job", "LabelingJobName"))],
        "StopProcessingJob": lambda: [Request(f"sagemaker:{op}", job("processing-job", "ProcessingJobName"))],
        "StopTrainingJob": lambda: [Request(f"sagemaker:{op}", job("training-job", "TrainingJobName"))],
        "StopLabelingJob": lambda: [Request(f"sagemaker:{op}", job("labeling-job", "LabelingJobName"))],
        "ListModelPackages": lambda: [Request(f"sagemaker:{op}", "*")],
        "DescribeModelPackageGroup": lambda: [Request(f"sagemaker:{op}", group())],
        "CreateModelPackageGroup": lambda: [Request(f"sagemaker:{op}", group())],
        "CreateModelPackage": lambda: [Request(f"sagemaker:{op}", group())],
        "DescribeModelPackage": lambda: [Request(f"sagemaker:{op}", _package_arn(scope, str(p["ModelPackageName"])))],
        "UpdateModelPackage": lambda: [Request(f"sagemaker:{op}", _package_arn(scope, str(p["ModelPackageArn"])))],
    }
    build = by_op.get(op)
    return build() if build else None


# --- the other services -----------------------------------------------------------------------------
def _queue_arn(scope: Scope, url: str) -> str:
    parts = urlparse(url).path.strip("/").split("/")
    return scope.arn("sqs", parts[-1])


def sqs_requests(scope: Scope, op: str, p: Mapping[str, Any]) -> list[Request] | None:
    if "QueueUrl" in p:
        return [Request(f"sqs:{op.replace('Batch', '')}", _queue_arn(scope, str(p["QueueUrl"])))]
    if op == "GetQueueUrl":
        return [Request("sqs:GetQueueUrl", scope.arn("sqs", str(p["QueueName"])))]
    return None


def dynamodb_requests(scope: Scope, op: str, p: Mapping[str, Any]) -> list[Request] | None:
    if "TableName" in p:
        return [Request(f"dynamodb:{op}", scope.arn("dynamodb", f"table/{p['TableName']}"))]
    return None


def codepipeline_requests(scope: Scope, op: str, p: Mapping[str, Any]) -> list[Request] | None:
    name = p.get("name") or p.get("pipelineName")
    return [Request(f"codepipeline:{op}", scope.arn("codepipeline", str(name)))] if name else None


def rekognition_requests(scope: Scope, op: str, p: Mapping[str, Any]) -> list[Request] | None:
    if op == "DescribeProjects":
        # DescribeProjects takes a project resource; with ProjectNames each named project is checked
        names = p.get("ProjectNames") or ["*"]
        return [Request(f"rekognition:{op}", scope.arn("rekognition", f"project/{n}/*")) for n in names]
    if op == "DescribeProjectVersions":
        return [Request(f"rekognition:{op}", str(p["ProjectArn"]))]
    if op in ("DetectCustomLabels", "StartProjectVersion", "StopProjectVersion"):
        out = [Request(f"rekognition:{op}", str(p["ProjectVersionArn"]))]
        s3_object = (p.get("Image") or {}).get("S3Object")
        if s3_object:  # Rekognition reads the image with the caller's permissions
            out.append(Request("s3:GetObject", _object(scope, str(s3_object["Bucket"]), str(s3_object["Name"]))))
        return out
    return None


def lambda_requests(scope: Scope, op: str, p: Mapping[str, Any]) -> list[Request] | None:
    if op == "Invoke":
        name = str(p["FunctionName"])
        arn = name if name.startswith("arn:") else scope.arn("lambda", f"function:{name}")
        return [Request("lambda:InvokeFunction", arn)]
    return None


def logs_requests(scope: Scope, op: str, p: Mapping[str, Any]) -> list[Request] | None:
    group = p.get("logGroupName")
    if group:
        return [Request(f"logs:{op}", scope.arn("logs", f"log-group:{group}:*"))]
    return None


def cloudwatch_requests(scope: Scope, op: str, p: Mapping[str, Any]) -> list[Request] | None:
    if op == "PutMetricData":
        return [Request("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": str(p.get("Namespace", ""))})]
    return None


def events_requests(scope: Scope, op: str, p: Mapping[str, Any]) -> list[Request] | None:
    if op == "PutEvents":
        bus = (p.get("Entries") or [{}])[0].get("EventBusName", "default")
        return [Request("events:PutEvents", scope.arn("events", f"event-bus/{bus}"))]
    return None


_BY_SERVICE: dict[str, Callable[[Scope, str, Mapping[str, Any]], list[Request] | None]] = {
    "s3": s3_requests, "sagemaker": sagemaker_requests, "sqs": sqs_requests, "dynamodb": dynamodb_requests,
    "codepipeline": codepipeline_requests, "rekognition": rekognition_requests, "lambda": lambda_requests,
    "logs": logs_requests, "cloudwatch": cloudwatch_requests, "events": events_requests,
}


def iam_requests(scope: Scope, service: str, op: str, params: Mapping[str, Any]) -> list[Request] | None:
    """The requests IAM evaluates for one call, or None when the call's resource is not mapped."""
    mapper = _BY_SERVICE.get(service)
    return mapper(scope, op, params) if mapper else None


def iam_prefix(service: str) -> str:
    """IAM's action prefix of a botocore service name."""
    return {"monitoring": "cloudwatch"}.get(service, service)
