"""The SageMaker execution role (training, processing and labeling jobs) and the model package group."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Aws
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from alp.resources import ResourceNames
from alp.settings import Settings
from stacks.iam import ScopedPolicy, grant_rekognition_head_detector, pull_images, sagemaker_arn


def ecr_repository_arn(image_uri: str) -> str | None:
    """``<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>`` -> the repository ARN (None if not ECR)."""
    host, _, rest = image_uri.partition("/")
    parts = host.split(".")
    if len(parts) < 6 or parts[1:3] != ["dkr", "ecr"] or not rest:
        return None
    repo = rest.split("@")[0].rsplit(":", 1)[0]
    return f"arn:{Aws.PARTITION}:ecr:{parts[3]}:{parts[0]}:repository/{repo}"


class SageMakerAccess(Construct):
    """One role SageMaker assumes for every job of the pipeline, plus the model registry group.

    The role may invoke exactly the two Ground Truth functions, read the uploaded images, read and write
    its own prefixes of the data bucket, pull the training and processing images, run the Rekognition head
    model when the settings select it (the Processing shards infer with it), and write its job logs.
    ``processing_image_repository_arn`` is the repository of the image the stack builds for Processing
    (None when ``inference.processing_image_uri`` names one of the user's own).
    """

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings, names: ResourceNames,
                 unlabeled_bucket: s3.IBucket, data_bucket: s3.IBucket, training_artifact_bucket: s3.IBucket,
                 ground_truth_functions: Sequence[lambda_.IFunction],
                 processing_image_repository_arn: str | None = None) -> None:
        super().__init__(scope, construct_id)
        storage = settings.storage
        self.role = iam.Role(self, "Role", role_name=names.sagemaker_role,
                             assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
                             description="SageMaker training, processing and Ground Truth labeling jobs of the pipeline")
        policy = ScopedPolicy(self.role)
        policy.allow(["lambda:InvokeFunction"], [fn.function_arn for fn in ground_truth_functions],
                     sid="InvokeGroundTruthFunctions")
        policy.read_objects(unlabeled_bucket, [storage.unlabeled_prefix], "the uploaded images (labeling input)")
        policy.list_bucket(unlabeled_bucket, [storage.unlabeled_prefix])
        policy.read_objects(data_bucket, [storage.templates_prefix, storage.config_key, storage.images_prefix],
                            "worker templates, the deployed settings and the pinned images of gold items (drawn "
                            "from a dataset version)")
        policy.read_write_objects(
            data_bucket, [storage.batches_prefix, storage.labeling_prefix, storage.datasets_prefix, storage.models_prefix],
            "labeling-job manifests and outputs, dataset versions, training inputs and model artifacts")
        policy.list_bucket(data_bucket, [storage.batches_prefix, storage.labeling_prefix, storage.datasets_prefix,
                                         storage.models_prefix, storage.templates_prefix, storage.images_prefix])
        policy.read_objects(training_artifact_bucket, ["code/"], "the training entry-point archive")
        policy.write_objects(training_artifact_bucket, ["jobs/"], "training-job outputs (model.tar.gz)")
        log_groups = [f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:/aws/sagemaker/{kind}:*"
                      for kind in ("TrainingJobs", "ProcessingJobs", "LabelingJobs")]
        policy.allow(["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                     log_groups, reason="SageMaker names one log stream per job inside these fixed log groups.")
        pull_images(policy, self._image_repositories(settings, processing_image_repository_arn))
        grant_rekognition_head_detector(policy, settings)
        self.model_package_group = sagemaker.CfnModelPackageGroup(
            self, "ModelPackageGroup",
            model_package_group_name=names.model_package_group,
            model_package_group_description="Model bundles (head detector + two pose models) of the pipeline",
        )
        self.model_package_group_arn = sagemaker_arn(f"model-package-group/{names.model_package_group}")

    @staticmethod
    def _image_repositories(settings: Settings, processing_image_repository_arn: str | None) -> list[str]:
        """ECR repositories of the training image and of the Processing image (the stack's own image asset,
        or the one ``inference.processing_image_uri`` names); images outside ECR need no grant."""
        uris = [settings.training.training_image_uri, settings.inference.processing_image_uri or ""]
        repositories = [arn for arn in map(ecr_repository_arn, uris) if arn is not None]
        if processing_image_repository_arn is not None:
            repositories.append(processing_image_repository_arn)
        return repositories
