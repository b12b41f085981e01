"""The one stack of the pipeline: composes the constructs and applies the grants between them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aws_cdk import Aws, CfnOutput, Stack, Token
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from alp.resources import ResourceNames
from alp.settings import Settings
from alp.steps import LABELING_COMPLETION_PIPELINE, LABELING_PIPELINE, TRAINING_PIPELINE
from inference.processing import PROCESSING_IMAGE_ENV
from stacks.completion_trigger import CompletionTrigger
from stacks.functions import GroundTruthFunctions
from stacks.iam import ScopedPolicy, grant_rekognition_head_detector, pass_role, sagemaker_arn
from stacks.label_studio_service import LabelStudioService
from stacks.monitoring import Monitoring
from stacks.nag import acknowledge_cdk_singletons
from stacks.processing_image import ProcessingImage
from stacks.sagemaker import SageMakerAccess
from stacks.step_pipeline import INFER_STEP, SourceBundle, StepPipeline
from stacks.storage import TRAINING_JOB_PREFIXES, Storage
from stacks.suggestion_service import SuggestionService, check_serve_settings
from stacks.upload_trigger import UploadTrigger

REPO_ROOT = Path(__file__).resolve().parent.parent


def cdk_json_context(cdk_json: Path) -> dict[str, object]:
    """cdk.json's context (feature flags and the ``alp`` settings) as App defaults.

    ``python app.py`` without the CLI does not read cdk.json; under the CLI the same values, plus ``-c``
    overrides, arrive through the environment and take precedence over these defaults.
    """
    return dict(json.loads(cdk_json.read_text()).get("context", {})) if cdk_json.is_file() else {}


class ActiveLabelingStack(Stack):
    """Buckets, upload trigger, Ground Truth functions, SageMaker role and registry, the labeling, labeling-completion
    and training pipelines with the completion trigger, alarms; opt-in, the hosted Label Studio and the suggestion
    service next to it.

    ``lambda_code_dir`` is the folder built by :func:`alp.lambda_asset.build_lambda_asset`; ``repo_root``
    is the project folder the pipelines' source bundle is made from.
    """

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings, lambda_code_dir: Path,
                 repo_root: Path = REPO_ROOT, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)  # kwargs: Stack's own (env, description...)
        check_serve_settings(settings)  # a hosted suggestion service needs the hosted Label Studio: refuse early
        region = self.region if not Token.is_unresolved(self.region) else Aws.REGION
        names = ResourceNames.from_settings(settings, account=Aws.ACCOUNT_ID, region=region)
        self.names = names
        storage = settings.storage
        code = lambda_.Code.from_asset(str(lambda_code_dir))

        self.storage = Storage(self, "Storage", settings=settings, names=names,
                               templates_dir=repo_root / "gt_templates")
        settings_uri = self.storage.settings_uri
        data_root = names.data_root
        data = self.storage.data
        unlabeled = self.storage.unlabeled

        self.ground_truth = GroundTruthFunctions(self, "GroundTruth", settings=settings, names=names, code=code,
                                                 data_bucket=data, settings_uri=settings_uri)
        # Scale-out inference needs a container image: the one the settings name, else one the stack builds.
        self.processing_image = (None if settings.inference.processing_image_uri
                                 else ProcessingImage(self, "ProcessingImage", repo_root=repo_root))
        self.sagemaker = SageMakerAccess(
            self, "SageMaker", settings=settings, names=names, unlabeled_bucket=unlabeled, data_bucket=data,
            training_artifact_bucket=self.storage.training_artifacts, ground_truth_functions=self.ground_truth.functions,
            processing_image_repository_arn=self.processing_image.repository_arn if self.processing_image else None)

        # Opt-in: Label Studio hosted by the stack; the labeling steps run in its VPC and read its API token.
        self.studio = (LabelStudioService(self, "LabelStudio", settings=settings, unlabeled_bucket=unlabeled,
                                          data_bucket=self.storage.data, access_logs=self.storage.access_logs)
                       if settings.labeling.backend == "label-studio" and settings.labeling.studio.hosted else None)
        labeling_source = SourceBundle(self, "LabelingSource", repo_root=repo_root,
                                       bucket=self.storage.labeling_artifacts)
        self.labeling = StepPipeline(
            self, "LabelingPipeline", spec=LABELING_PIPELINE, pipeline_name=names.labeling_pipeline,
            settings=settings, artifact_bucket=self.storage.labeling_artifacts, settings_uri=settings_uri,
            data_root=data_root, step_environment=self._infer_environment(),
            environment=self.studio.client_environment if self.studio else None,
            network=self.studio.client_network if self.studio else None,
            source=labeling_source)
        # The split human step: Label creates the jobs and ends; when people are done, a completion event
        # starts this pipeline (the same Label, Merge and Requeue steps) for the batch. Same bucket and source.
        self.completion = StepPipeline(
            self, "LabelingCompletionPipeline", spec=LABELING_COMPLETION_PIPELINE,
            pipeline_name=names.labeling_completion_pipeline, settings=settings,
            artifact_bucket=self.storage.labeling_artifacts, settings_uri=settings_uri, data_root=data_root,
            environment=self.studio.client_environment if self.studio else None,
            network=self.studio.client_network if self.studio else None,
            source=labeling_source)
        if self.studio:
            self.studio.grant_token_read(self.labeling.build_policy)
            self.studio.grant_token_read(self.completion.build_policy)
        # Opt-in: the suggestion service (`alp serve`) next to the hosted Label Studio, reached by its tasks only.
        self.suggestions = (SuggestionService(self, "SuggestionService", settings=settings, studio=self.studio,
                                              settings_uri=settings_uri, unlabeled_bucket=unlabeled,
                                              access_logs=self.storage.access_logs, repo_root=repo_root)
                            if settings.serve.hosted and self.studio else None)
        self.training = StepPipeline(
            self, "TrainingPipeline", spec=TRAINING_PIPELINE, pipeline_name=names.training_pipeline,
            settings=settings, artifact_bucket=self.storage.training_artifacts, settings_uri=settings_uri,
            data_root=data_root,
            source=SourceBundle(self, "TrainingSource", repo_root=repo_root, bucket=self.storage.training_artifacts))

        self.upload = UploadTrigger(self, "UploadTrigger", settings=settings, names=names, code=code,
                                    unlabeled_bucket=unlabeled, data_bucket=data,
                                    labeling_pipeline_arn=self.labeling.pipeline.pipeline_arn,
                                    settings_uri=settings_uri)

        self.completion_trigger = CompletionTrigger(
            self, "CompletionTrigger", settings=settings, names=names, code=code, data_bucket=data,
            completion_pipeline_arn=self.completion.pipeline.pipeline_arn, settings_uri=settings_uri)

        self._grant_labeling_steps(self.labeling.build_policy, settings, names, infer=True)
        self._grant_labeling_steps(self.completion.build_policy, settings, names, infer=False)
        self._grant_training_steps(self.training.build_policy, settings, names)
        if self.suggestions:
            self._grant_suggestion_service(self.suggestions.task_policy, settings, names)

        self.monitoring = Monitoring(
            self, "Monitoring", settings=settings, dashboard_name=f"{storage.resource_prefix}-pipeline",
            dead_letter_queue=self.upload.dead_letter_queue, upload_queue=self.upload.queue,
            batcher=self.upload.batcher.function, completion_trigger=self.completion_trigger.function.function,
            pipeline_names=[names.labeling_pipeline, names.labeling_completion_pipeline, names.training_pipeline])

        acknowledge_cdk_singletons(self, deployment_buckets=[data, self.storage.labeling_artifacts,
                                                            self.storage.training_artifacts])

        outputs = {
            "UnlabeledBucketName": unlabeled.bucket_name,
            "DataBucketName": data.bucket_name,
            "LabelingArtifactBucketName": self.storage.labeling_artifacts.bucket_name,
            "TrainingArtifactBucketName": self.storage.training_artifacts.bucket_name,
            "AccessLogBucketName": self.storage.access_logs.bucket_name,
            "LabelingPipelineName": self.labeling.pipeline.pipeline_name,
            "LabelingCompletionPipelineName": self.completion.pipeline.pipeline_name,
            "CompletionTriggerFunctionArn": self.completion_trigger.function.function.function_arn,
            "TrainingPipelineName": self.training.pipeline.pipeline_name,
            "UploadQueueUrl": self.upload.queue.queue_url,
            "DeadLetterQueueUrl": self.upload.dead_letter_queue.queue_url,
            "BatchLedgerTableName": self.upload.ledger.table_name,
            "ModelPackageGroupName": names.model_package_group,
            "SageMakerRoleArn": self.sagemaker.role.role_arn,
            "PreAnnotationFunctionArn": self.ground_truth.pre.function.function_arn,
            "PostAnnotationFunctionArn": self.ground_truth.post.function.function_arn,
            "SettingsUri": settings_uri,
            "AlertsTopicArn": self.monitoring.topic.topic_arn,
        }
        if self.studio:
            outputs.update({"LabelStudioUrl": self.studio.url,
                            "LabelStudioLoadBalancerDnsName": self.studio.load_balancer.load_balancer_dns_name,
                            "LabelStudioTokenSecretArn": self.studio.token_secret.secret_arn,
                            "LabelStudioAdminSecretArn": self.studio.admin_secret.secret_arn})
        if self.suggestions:
            # Label Studio -> Settings -> Model -> Connect model, with this URL.
            outputs["SuggestionServiceUrl"] = self.suggestions.url
        for key, value in outputs.items():
            CfnOutput(self, key, value=value)

    def _infer_environment(self) -> dict[str, dict[str, str]]:
        """The built image's URI reaches the Infer step as an environment variable of its build, the one step
        that starts Processing jobs (inference/processing.py reads it). Not in the deployed settings: they are
        the settings exactly as given (their hash is recorded in dataset versions and bundles), and the URI is
        known only at deploy time."""
        if self.processing_image is None:
            return {}
        return {INFER_STEP[1]: {PROCESSING_IMAGE_ENV: self.processing_image.image_uri}}

    # --- grants of the CodeBuild steps: exactly what each pipeline's steps touch ------------------------
    def _model_registry_read(self, policy: ScopedPolicy, names: ResourceNames) -> None:
        group = names.model_package_group
        policy.allow(["sagemaker:DescribeModelPackageGroup"], [sagemaker_arn(f"model-package-group/{group}")])
        policy.allow(["sagemaker:DescribeModelPackage"], [sagemaker_arn(f"model-package/{group}/*")],
                     reason="Versions of the project's own model package group; version numbers are assigned "
                            "by SageMaker at registration.")
        policy.allow(["sagemaker:ListModelPackages"], ["*"],
                     reason="sagemaker:ListModelPackages supports no resource-level permissions; the steps list "
                            "only the project's own group (ModelPackageGroupName filter).")

    def _grant_labeling_steps(self, policy: ScopedPolicy, settings: Settings, names: ResourceNames, *,
                              infer: bool) -> None:
        """What Label, Merge and Requeue touch (both labeling pipelines), plus, with ``infer``, what only the
        Infer step does: read the approved bundle, start Processing jobs, call the Rekognition head model. The
        completion pipeline has no Infer step, so its build role gets none of those."""
        s = settings.storage
        prefix = s.resource_prefix
        policy.read_objects(self.storage.unlabeled, [s.unlabeled_prefix], "the uploaded images to infer and label")
        # The Requeue step copies images a batch left unlabeled onto themselves (a new version is new work);
        # the grant allows exactly such copies, so no labeling step can write bytes of its own over an upload.
        policy.copy_objects_onto_themselves(self.storage.unlabeled, s.unlabeled_prefix,
                                            "images sent back to the queue by the Requeue step")
        policy.list_bucket(self.storage.unlabeled, [s.unlabeled_prefix])
        model_read = [s.models_prefix] if infer else []
        policy.read_objects(self.storage.data, [s.config_key, s.templates_prefix, *model_read],
                            "settings, worker templates" + (" and the approved model bundle" if infer else ""))
        # datasets/ and images/ are write-once for every principal (the data bucket's policy): Merge adds new
        # versions and the content-addressed copies of their images, it cannot replace or delete one.
        policy.read_write_objects(self.storage.data, [s.batches_prefix, s.labeling_prefix, s.datasets_prefix,
                                                      s.images_prefix, s.manifests_prefix],
                                  "batch outputs, labeling-job inputs and outputs, new dataset versions and the "
                                  "copies of their images")
        policy.list_bucket(self.storage.data, [s.batches_prefix, s.labeling_prefix, s.datasets_prefix,
                                               s.images_prefix, s.manifests_prefix, s.templates_prefix, *model_read])
        own_jobs = "Jobs are named <resource prefix>-...; the wildcard covers only the project's own jobs."
        # Label creates the head-box job, and once it is done the keypoint job: in either pipeline.
        policy.allow(["sagemaker:CreateLabelingJob", "sagemaker:DescribeLabelingJob", "sagemaker:StopLabelingJob",
                      "sagemaker:AddTags"], [sagemaker_arn(f"labeling-job/{prefix}-*")], reason=own_jobs)
        pass_role(policy, self.sagemaker.role)
        # The Merge step starts the training pipeline on the new dataset version (alp/commands/merge.py).
        policy.allow(["codepipeline:StartPipelineExecution"], [self.training.pipeline.pipeline_arn])
        if not infer:
            return
        policy.allow(["sagemaker:CreateProcessingJob", "sagemaker:DescribeProcessingJob",
                      "sagemaker:StopProcessingJob", "sagemaker:AddTags"],
                     [sagemaker_arn(f"processing-job/{prefix}-*")], reason=own_jobs)
        self._model_registry_read(policy, names)
        # The Infer step runs the bundle with the configured head backend.
        grant_rekognition_head_detector(policy, settings)

    def _grant_training_steps(self, policy: ScopedPolicy, settings: Settings, names: ResourceNames) -> None:
        s = settings.storage
        prefix = s.resource_prefix
        group = names.model_package_group
        policy.read_objects(self.storage.data, [s.config_key, s.datasets_prefix, s.images_prefix],
                            "settings, the dataset version to train on and its images' pinned copies")
        # A version written before its images were pinned (alp/pixels.py) names them by source-ref in the
        # unlabeled bucket: Prepare copies them into the YOLO datasets and Evaluate infers on the test split's.
        policy.read_objects(self.storage.unlabeled, [s.unlabeled_prefix],
                            "the images an unpinned dataset version's source-refs name (Prepare, Evaluate)")
        policy.list_bucket(self.storage.unlabeled, [s.unlabeled_prefix])
        policy.read_write_objects(self.storage.data, [s.models_prefix], "candidate bundles and evaluation reports")
        policy.list_bucket(self.storage.data, [s.datasets_prefix, s.images_prefix, s.models_prefix])
        policy.read_write_objects(self.storage.training_artifacts, TRAINING_JOB_PREFIXES,
                                  "the training entry-point archive it uploads and the job outputs it collects")
        policy.list_bucket(self.storage.training_artifacts, TRAINING_JOB_PREFIXES)
        policy.allow(["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob",
                      "sagemaker:AddTags"], [sagemaker_arn(f"training-job/{prefix}-*")],
                     reason="Training jobs are named <resource prefix>-train-...; only the project's own jobs.")
        policy.allow(["logs:GetLogEvents", "logs:DescribeLogStreams"],
                     [f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:/aws/sagemaker/TrainingJobs:*"],
                     reason="Streams of the training jobs' fixed log group, to show the job log in the build log.")
        pass_role(policy, self.sagemaker.role)
        policy.allow(["sagemaker:CreateModelPackage"], [sagemaker_arn(f"model-package-group/{group}"),
                                                        sagemaker_arn(f"model-package/{group}/*")],
                     reason="Registers new versions into the project's own model package group.")
        policy.allow(["sagemaker:UpdateModelPackage"], [sagemaker_arn(f"model-package/{group}/*")],
                     reason="Sets the approval status of the project's own model package versions.")
        self._model_registry_read(policy, names)
        # The Evaluate step runs the candidate bundle with the configured head backend.
        grant_rekognition_head_detector(policy, settings)

    def _grant_suggestion_service(self, policy: ScopedPolicy, settings: Settings, names: ResourceNames) -> None:
        """What ``alp serve`` reads, and nothing it could write: the settings, the registry's Approved bundle
        (the group and its versions, the bundle files under the models prefix) and a task's ``s3://`` image.
        No ListBucket: it reads keys it was given (the settings URI, a bundle's descriptor and the files that
        names, a task's image), so a missing one is an error either way (403 instead of 404)."""
        s = settings.storage
        policy.read_objects(self.storage.data, [s.config_key, s.models_prefix],
                            "the deployed settings and the approved model bundles the service serves")
        policy.read_objects(self.storage.unlabeled, [s.unlabeled_prefix],
                            "the images Label Studio's tasks name by s3:// URI")
        self._model_registry_read(policy, names)
        # The service runs the bundle with the configured head backend, as the Infer step does.
        grant_rekognition_head_detector(policy, settings)
