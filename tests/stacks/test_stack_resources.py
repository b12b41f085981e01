"""The synthesized stack, resource by resource: security properties, wiring and the step rendering.

The stack is built once per module (the first CDK build costs seconds); the nag pack is not added here
(tests/test_cdk_nag.py covers it), so Template.from_stack sees the raw template.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aws_cdk")

import aws_cdk as cdk  # noqa: E402
from aws_cdk.assertions import Match, Template  # noqa: E402
from paths import REPO_ROOT  # noqa: E402

from alp.lambda_asset import build_lambda_asset  # noqa: E402
from alp.settings import (  # noqa: E402
    CODEBUILD_MAX_TIMEOUT_MINUTES,
    PROCESSING_MAX_RUNTIME_LIMIT_SECONDS,
    PROCESSING_WAIT_MARGIN_MINUTES,
    Settings,
    settings_from_context,
)
from alp.steps import LABELING_COMPLETION_PIPELINE, LABELING_PIPELINE, TRAINING_PIPELINE  # noqa: E402
from inference.processing import PROCESSING_IMAGE_ENV  # noqa: E402
from stacks.pipeline_stack import ActiveLabelingStack, cdk_json_context  # noqa: E402
from stacks.processing_image import DOCKERFILE  # noqa: E402
from stacks.step_pipeline import step_timeout_minutes  # noqa: E402
from stacks.upload_trigger import queue_visibility_seconds  # noqa: E402

ROOT = REPO_ROOT
WORKTEAM = "arn:aws:sagemaker:eu-west-1:123456789012:workteam/private-crowd/heads"
REKOGNITION_VERSION = "arn:aws:rekognition:eu-west-1:123456789012:project/heads/version/heads.v1/1767225600000"
OWN_PROCESSING_IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/alp-processing:3"
# The other deployment shape: the Rekognition head backend and a Processing image of the user's own.
VARIANT = {
    "alp:inference.head_detector_backend": "rekognition-custom-labels",
    "alp:inference.rekognition_project_version_arn": REKOGNITION_VERSION,
    "alp:inference.processing_image_uri": OWN_PROCESSING_IMAGE,
}


def _build(tmp: Path, overrides: dict[str, object]) -> dict[str, Any]:
    context = cdk_json_context(ROOT / "cdk.json")
    context["alp:labeling.workteam_arn"] = WORKTEAM
    context["alp:region"] = "eu-west-1"
    context.update(overrides)
    app = cdk.App(context=context, outdir=str(tmp / "cdk.out"))
    settings = settings_from_context(app.node.get_all_context())
    stack = ActiveLabelingStack(app, "TestStack", settings=settings,
                                lambda_code_dir=build_lambda_asset(ROOT, tmp / "asset"),
                                env=cdk.Environment(region=settings.region))
    template = Template.from_stack(stack)
    assembly = app.synth()
    return {"stack": stack, "template": template, "settings": settings, "json": template.to_json(),
            "outdir": Path(assembly.directory)}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _build(tmp_path_factory.mktemp("stack"), {})


@pytest.fixture(scope="module")
def variant(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _build(tmp_path_factory.mktemp("variant"), VARIANT)


def _resources(built: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in built["json"]["Resources"].items() if v["Type"] == type_}


def _logical_id(built: dict[str, Any], construct: Any) -> str:
    return str(built["stack"].get_logical_id(construct.node.default_child))


def _statements_of_role(built: dict[str, Any], role_logical_id: str) -> list[dict[str, Any]]:
    out = []
    for policy in _resources(built, "AWS::IAM::Policy").values():
        if {"Ref": role_logical_id} in policy["Properties"]["Roles"]:
            out.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return out


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --- storage -----------------------------------------------------------------------------------------
def test_given_every_bucket_then_public_access_is_blocked_and_it_is_encrypted(built: dict[str, Any]) -> None:
    buckets = _resources(built, "AWS::S3::Bucket")
    assert len(buckets) == 5
    for bucket in buckets.values():
        props = bucket["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True}
        rule = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        assert bucket["DeletionPolicy"] == "Retain"


def test_given_every_bucket_then_its_policy_denies_requests_without_tls(built: dict[str, Any]) -> None:
    buckets = set(_resources(built, "AWS::S3::Bucket"))
    secured = set()
    for policy in _resources(built, "AWS::S3::BucketPolicy").values():
        for st in policy["Properties"]["PolicyDocument"]["Statement"]:
            if st["Effect"] == "Deny" and st.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false":
                secured.add(policy["Properties"]["Bucket"]["Ref"])
    assert secured == buckets


def test_given_the_unlabeled_and_data_buckets_then_they_are_versioned_and_logged(built: dict[str, Any]) -> None:
    storage = built["stack"].storage
    logs_id = _logical_id(built, storage.access_logs)
    for bucket in (storage.unlabeled, storage.data, storage.labeling_artifacts, storage.training_artifacts):
        props = built["json"]["Resources"][_logical_id(built, bucket)]["Properties"]
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}
        assert props["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": logs_id}


def test_given_the_unlabeled_bucket_then_eventbridge_notifications_are_on(built: dict[str, Any]) -> None:
    unlabeled = _logical_id(built, built["stack"].storage.unlabeled)
    built["template"].has_resource_properties("Custom::S3BucketNotifications", {
        "BucketName": {"Ref": unlabeled},
        "NotificationConfiguration": {"EventBridgeConfiguration": {}},
    })


def test_given_the_artifact_buckets_then_lifecycle_rules_expire_runs_but_not_the_source(built: dict[str, Any]) -> None:
    storage = built["stack"].storage
    days = built["settings"].storage.artifact_retention_days
    for bucket, pipeline in ((storage.labeling_artifacts, "alp-labeling"), (storage.training_artifacts, "alp-training")):
        rules = built["json"]["Resources"][_logical_id(built, bucket)]["Properties"]["LifecycleConfiguration"]["Rules"]
        expiring = [r for r in rules if "ExpirationInDays" in r]
        assert expiring[0] == {"Id": "expire-pipeline-artifacts", "Prefix": f"{pipeline}/", "ExpirationInDays": days,
                               "Status": "Enabled"}
        # the completion pipeline shares the labeling bucket; CodePipeline keys artifacts by 20 characters of the name
        assert {r["Prefix"] for r in expiring[1:]} == ({"code/", "jobs/"} if pipeline == "alp-training"
                                                       else {"alp-labeling-complet/"})
        assert any(r.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays") == days for r in rules)
        assert not any(r.get("Prefix", "").startswith("source") for r in expiring)


def test_given_the_settings_then_they_are_deployed_as_json_to_the_config_key(built: dict[str, Any]) -> None:
    """The BucketDeployment's staged source holds config/settings.json equal to the synthesized settings."""
    settings = built["settings"]
    found = []
    for path in built["outdir"].glob("asset.*"):
        deployed = path / settings.storage.config_key
        if deployed.is_file():
            found.append(json.loads(deployed.read_text()))
    assert found == [settings.model_dump(mode="json")]
    assert found[0]["labeling"]["workteam_arn"] == WORKTEAM
    assert found[0]["inference"]["rekognition_project_version_arn"] is None  # nulls survive the deployment


def test_given_the_templates_then_they_deploy_under_the_templates_prefix(built: dict[str, Any]) -> None:
    built["template"].has_resource_properties("Custom::CDKBucketDeployment", {
        "DestinationBucketName": {"Ref": _logical_id(built, built["stack"].storage.data)},
        "DestinationBucketKeyPrefix": built["settings"].storage.templates_prefix,
    })


# --- upload trigger ---------------------------------------------------------------------------------
def test_given_the_upload_rule_then_it_matches_object_created_under_the_prefix(built: dict[str, Any]) -> None:
    stack = built["stack"]
    built["template"].has_resource_properties("AWS::Events::Rule", {
        "Name": "alp-unlabeled-object-created",
        "EventPattern": {
            "source": ["aws.s3"], "detail-type": ["Object Created"],
            "detail": {"bucket": {"name": [{"Ref": _logical_id(built, stack.storage.unlabeled)}]},
                       "object": {"key": [{"prefix": built["settings"].storage.unlabeled_prefix}]}},
        },
        "Targets": [Match.object_like({"Arn": {"Fn::GetAtt": [_logical_id(built, stack.upload.queue), "Arn"]}})],
    })


def test_given_the_queue_then_it_has_a_dlq_encryption_and_six_times_the_timeout(built: dict[str, Any]) -> None:
    settings = built["settings"]
    upload = built["stack"].upload
    queue = built["json"]["Resources"][_logical_id(built, upload.queue)]["Properties"]
    dlq_id = _logical_id(built, upload.dead_letter_queue)
    assert queue["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
                                      "maxReceiveCount": settings.trigger.max_receive_count}
    assert queue["SqsManagedSseEnabled"] is True
    assert queue["VisibilityTimeout"] >= 6 * settings.trigger.batcher_timeout_seconds
    assert queue["VisibilityTimeout"] == queue_visibility_seconds(settings)
    assert built["json"]["Resources"][dlq_id]["Properties"]["SqsManagedSseEnabled"] is True
    for policy in _resources(built, "AWS::SQS::QueuePolicy").values():
        denies = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
        assert denies and denies[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_given_the_batcher_then_it_reads_the_queue_in_windows_with_item_failures(built: dict[str, Any]) -> None:
    trigger = built["settings"].trigger
    built["template"].has_resource_properties("AWS::Lambda::EventSourceMapping", {
        "BatchSize": trigger.max_batch_records,
        "MaximumBatchingWindowInSeconds": trigger.batching_window_seconds,
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "EventSourceArn": {"Fn::GetAtt": [_logical_id(built, built["stack"].upload.queue), "Arn"]},
    })


def test_given_the_ledger_then_it_has_point_in_time_recovery_and_ttl(built: dict[str, Any]) -> None:
    built["template"].has_resource_properties("AWS::DynamoDB::Table", {
        "TableName": "alp-batch-ledger",
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "BillingMode": "PAY_PER_REQUEST",
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
        "SSESpecification": {"SSEEnabled": True},
    })


def test_given_the_batcher_role_then_it_may_start_only_the_labeling_pipeline(built: dict[str, Any]) -> None:
    stack = built["stack"]
    statements = _statements_of_role(built, _logical_id(built, stack.upload.batcher.role))
    starts = [s for s in statements if "codepipeline:StartPipelineExecution" in _as_list(s["Action"])]
    assert len(starts) == 1
    assert json.dumps(starts[0]["Resource"]).count(_logical_id(built, stack.labeling.pipeline)) == 1
    writes = [s for s in statements if "s3:PutObject" in _as_list(s["Action"])]
    assert [json.dumps(s["Resource"]) for s in writes] == [
        json.dumps({"Fn::Join": ["", [{"Fn::GetAtt": [_logical_id(built, stack.storage.data), "Arn"]}, "/batches/*"]]})]


# --- functions --------------------------------------------------------------------------------------
def test_given_every_project_function_then_runtime_timeout_memory_and_logs_are_explicit(built: dict[str, Any]) -> None:
    settings = built["settings"]
    stack = built["stack"]
    functions = [stack.upload.batcher, stack.ground_truth.pre, stack.ground_truth.post,
                 stack.completion_trigger.function]
    handlers = {"lambdas.batcher.handler", "lambdas.gt_pre_annotation.handler", "lambdas.gt_post_annotation.handler",
                "lambdas.labeling_completion.handler"}
    seen = set()
    for fn in functions:
        props = built["json"]["Resources"][_logical_id(built, fn.function)]["Properties"]
        assert props["Runtime"] == "python3.11"
        assert props["Architectures"] == ["x86_64"]
        assert props["Timeout"] > 0 and props["MemorySize"] >= 128
        assert props["LoggingConfig"]["LogGroup"] == {"Ref": _logical_id(built, fn.log_group)}
        assert props["Environment"]["Variables"]["ALP_SETTINGS_URI"] == (
            {"Fn::Join": ["", ["s3://alp-", {"Ref": "AWS::AccountId"}, "-eu-west-1-data/config/settings.json"]]})
        assert props["Role"] == {"Fn::GetAtt": [_logical_id(built, fn.role), "Arn"]}
        seen.add(props["Handler"])
        group = built["json"]["Resources"][_logical_id(built, fn.log_group)]["Properties"]
        assert group["RetentionInDays"] == settings.observability.log_retention_days
    assert seen == handlers
    assert len({_logical_id(built, fn.role) for fn in functions}) == 4  # one role per function


def test_given_the_sagemaker_role_then_it_may_invoke_exactly_the_two_gt_functions(built: dict[str, Any]) -> None:
    stack = built["stack"]
    expected = sorted([{"Fn::GetAtt": [_logical_id(built, f), "Arn"]} for f in stack.ground_truth.functions],
                      key=json.dumps)
    invokes = []
    for policy in _resources(built, "AWS::IAM::Policy").values():
        for st in policy["Properties"]["PolicyDocument"]["Statement"]:
            if "lambda:InvokeFunction" in _as_list(st["Action"]):
                invokes.append((policy["Properties"]["Roles"], st))
    assert len(invokes) == 1
    roles, statement = invokes[0]
    assert roles == [{"Ref": _logical_id(built, stack.sagemaker.role)}]
    assert sorted(_as_list(statement["Resource"]), key=json.dumps) == expected
    built["template"].has_resource_properties("AWS::IAM::Role", {
        "RoleName": "alp-sagemaker-execution",
        "AssumeRolePolicyDocument": {"Statement": [Match.object_like(
            {"Principal": {"Service": "sagemaker.amazonaws.com"}})]},
    })


def test_given_every_policy_then_no_statement_grants_all_actions(built: dict[str, Any]) -> None:
    for policy in _resources(built, "AWS::IAM::Policy").values():
        for st in policy["Properties"]["PolicyDocument"]["Statement"]:
            for action in _as_list(st["Action"]):
                assert action != "*" and not action.endswith(":*"), (policy["Properties"]["PolicyName"], action)


def test_given_our_roles_then_star_resources_are_only_for_unscopable_actions(built: dict[str, Any]) -> None:
    stack = built["stack"]
    ours = [stack.sagemaker.role, stack.labeling.build_role, stack.training.build_role, stack.labeling.pipeline_role,
            stack.training.pipeline_role, stack.upload.batcher.role, stack.ground_truth.pre.role,
            stack.ground_truth.post.role, stack.completion.build_role, stack.completion.pipeline_role,
            stack.completion_trigger.function.role]
    unscopable = {"ecr:GetAuthorizationToken", "sagemaker:ListModelPackages"}
    for role in ours:
        for st in _statements_of_role(built, _logical_id(built, role)):
            if "*" in _as_list(st["Resource"]):
                assert set(_as_list(st["Action"])) <= unscopable, st


def test_given_the_pipeline_roles_then_they_may_pass_the_sagemaker_role_to_sagemaker_only(built: dict[str, Any]) -> None:
    stack = built["stack"]
    for build_role in (stack.labeling.build_role, stack.completion.build_role, stack.training.build_role):
        passes = [s for s in _statements_of_role(built, _logical_id(built, build_role))
                  if "iam:PassRole" in _as_list(s["Action"])]
        assert passes == [{
            "Action": "iam:PassRole", "Effect": "Allow",
            "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            "Resource": {"Fn::GetAtt": [_logical_id(built, stack.sagemaker.role), "Arn"]},
        }]


# --- pipelines --------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", [LABELING_PIPELINE, LABELING_COMPLETION_PIPELINE, TRAINING_PIPELINE],
                         ids=lambda s: s.name)
def test_given_a_declared_pipeline_then_it_renders_as_v2_with_one_stage_per_step(built: dict[str, Any], spec: Any) -> None:
    stack = built["stack"]
    pipeline = {LABELING_PIPELINE.name: stack.labeling, LABELING_COMPLETION_PIPELINE.name: stack.completion,
                TRAINING_PIPELINE.name: stack.training}[spec.name]
    props = built["json"]["Resources"][_logical_id(built, pipeline.pipeline)]["Properties"]
    assert props["PipelineType"] == "V2"
    assert props["ExecutionMode"] == "QUEUED"
    assert props["Variables"] == [{"Name": v.name, "Description": v.description} for v in spec.variables]
    assert [s["Name"] for s in props["Stages"]] == ["Source", *[s.name for s in spec.steps]]
    source = props["Stages"][0]["Actions"][0]
    assert source["ActionTypeId"]["Provider"] == "S3"
    assert source["Configuration"]["PollForSourceChanges"] is False
    assert source["Configuration"]["S3ObjectKey"]["Fn::Join"][1][0] == "source/"
    for stage, step in zip(props["Stages"][1:], spec.steps, strict=True):
        action = stage["Actions"][0]
        env = {e["name"]: e["value"] for e in json.loads(action["Configuration"]["EnvironmentVariables"])}
        for var in spec.variables:
            assert env[var.env] == f"#{{variables.{var.name}}}"
        project = built["json"]["Resources"][action["Configuration"]["ProjectName"]["Ref"]]["Properties"]
        buildspec = json.loads(project["Source"]["BuildSpec"])
        assert buildspec["phases"]["build"]["commands"] == [f"alp steps run {spec.name} {step.name}"]
        assert project["TimeoutInMinutes"] == step_timeout_minutes(spec, step, built["settings"])
        assert project["TimeoutInMinutes"] == step.timeout_minutes or (spec, step.name) == (LABELING_PIPELINE, "Infer")
        project_env = {e["Name"]: e["Value"] for e in project["Environment"]["EnvironmentVariables"]}
        infer = (spec, step.name) == (LABELING_PIPELINE, "Infer")
        assert set(project_env) == {"ALP_SETTINGS_URI", "ALP_DATA_ROOT", *([PROCESSING_IMAGE_ENV] if infer else [])}
        assert project["Environment"]["PrivilegedMode"] is False
        assert project["ServiceRole"] == {"Fn::GetAtt": [_logical_id(built, pipeline.build_role), "Arn"]}


def test_given_the_training_pipeline_then_its_role_may_run_training_and_register(built: dict[str, Any]) -> None:
    stack = built["stack"]
    actions = {a for s in _statements_of_role(built, _logical_id(built, stack.training.build_role))
               for a in _as_list(s["Action"])}
    assert {"sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:CreateModelPackage",
            "sagemaker:UpdateModelPackage"} <= actions
    assert "sagemaker:CreateLabelingJob" not in actions
    labeling = {a for s in _statements_of_role(built, _logical_id(built, stack.labeling.build_role))
                for a in _as_list(s["Action"])}
    assert {"sagemaker:CreateLabelingJob", "sagemaker:DescribeLabelingJob"} <= labeling
    assert "sagemaker:CreateTrainingJob" not in labeling
    starts = [s for s in _statements_of_role(built, _logical_id(built, stack.labeling.build_role))
              if "codepipeline:StartPipelineExecution" in _as_list(s["Action"])]
    assert [json.dumps(s["Resource"]).count(_logical_id(built, stack.training.pipeline)) for s in starts] == [1]
    built["template"].has_resource_properties("AWS::SageMaker::ModelPackageGroup",
                                              {"ModelPackageGroupName": "alp-model-bundles"})


# --- observability ----------------------------------------------------------------------------------
def test_given_the_alarms_then_dlq_failures_and_quarantine_share_notify_the_topic(built: dict[str, Any]) -> None:
    stack = built["stack"]
    topic = {"Ref": _logical_id(built, stack.monitoring.topic)}
    alarms = _resources(built, "AWS::CloudWatch::Alarm")
    assert len(alarms) == 6
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == [topic]
    paused = built["json"]["Resources"][_logical_id(built, stack.monitoring.auto_labeling_paused_alarm)]["Properties"]
    assert (paused["MetricName"], paused["Statistic"], paused["Threshold"]) == ("auto_labeling_paused", "Maximum", 1)
    assert paused["Dimensions"] == [{"Name": "Step", "Value": "Infer"}]
    dlq = built["json"]["Resources"][_logical_id(built, stack.monitoring.dlq_alarm)]["Properties"]
    assert dlq["Dimensions"] == [{"Name": "QueueName", "Value": {
        "Fn::GetAtt": [_logical_id(built, stack.upload.dead_letter_queue), "QueueName"]}}]
    share = built["json"]["Resources"][_logical_id(built, stack.monitoring.quarantine_alarm)]["Properties"]
    assert share["Threshold"] == built["settings"].observability.quarantine_share_alarm
    expression = next(m for m in share["Metrics"] if "Expression" in m)
    assert "quarantine" in expression["Expression"] and expression["ReturnData"] is True
    names = {m["MetricStat"]["Metric"]["MetricName"] for m in share["Metrics"] if "MetricStat" in m}
    assert names == {"images_auto", "images_human", "images_audit", "images_quarantine"}
    for m in share["Metrics"]:
        if "MetricStat" in m:
            assert m["MetricStat"]["Metric"]["Namespace"] == built["settings"].observability.metrics_namespace
            assert m["MetricStat"]["Metric"]["Dimensions"] == [{"Name": "Step", "Value": "Infer"}]
    built["template"].has_resource_properties("AWS::Events::Rule", {
        "EventPattern": {"source": ["aws.codepipeline"],
                         "detail-type": ["CodePipeline Pipeline Execution State Change"],
                         "detail": {"state": ["FAILED"],
                                    "pipeline": ["alp-labeling", "alp-labeling-completion", "alp-training"]}},
        "Targets": [Match.object_like({"Arn": topic})],
    })
    built["template"].has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})
    built["template"].has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    built["template"].resource_count_is("AWS::CloudWatch::Dashboard", 1)


def test_given_the_stack_then_it_outputs_names_queue_and_model_group(built: dict[str, Any]) -> None:
    outputs = built["json"]["Outputs"]
    for key in ("UnlabeledBucketName", "DataBucketName", "LabelingPipelineName", "TrainingPipelineName",
                "LabelingCompletionPipelineName", "CompletionTriggerFunctionArn", "UploadQueueUrl",
                "ModelPackageGroupName", "BatchLedgerTableName"):
        assert key in outputs
    assert outputs["ModelPackageGroupName"]["Value"] == "alp-model-bundles"


def test_given_the_requeue_step_then_only_the_labeling_steps_write_to_the_unlabeled_bucket_under_its_prefix(
        built: dict[str, Any]) -> None:
    """The Requeue step copies images onto themselves (a new version is new work): the labeling steps may
    write the unlabeled prefix and nothing else of that bucket; the training steps and the batcher may not."""
    stack = built["stack"]
    unlabeled = _logical_id(built, stack.storage.unlabeled)

    def unlabeled_writes(role: Any) -> list[dict[str, Any]]:
        return [s for s in _statements_of_role(built, _logical_id(built, role))
                if "s3:PutObject" in _as_list(s["Action"]) and unlabeled in json.dumps(s["Resource"])]

    prefix = built["settings"].storage.unlabeled_prefix
    [write] = unlabeled_writes(stack.labeling.build_role)
    assert _as_list(write["Action"]) == ["s3:PutObject"]  # no multipart upload: a copy is one request
    assert write["Resource"] == {"Fn::Join": ["", [{"Fn::GetAtt": [unlabeled, "Arn"]}, f"/{prefix}*"]]}
    # copies only, from the same prefix, with new metadata: no step can write bytes of its own over an upload
    assert write["Condition"] == {
        "StringLike": {"s3:x-amz-copy-source": {"Fn::Join": ["", [{"Ref": unlabeled}, f"/{prefix}*"]]}},
        "StringEquals": {"s3:x-amz-metadata-directive": "REPLACE"}}
    assert unlabeled_writes(stack.completion.build_role) == [write]  # its Requeue step: the same copies only
    assert unlabeled_writes(stack.training.build_role) == []
    assert unlabeled_writes(stack.upload.batcher.role) == []
    assert unlabeled_writes(stack.completion_trigger.function.role) == []
    versioning = [s for s in _statements_of_role(built, _logical_id(built, stack.labeling.build_role))
                  if "s3:GetBucketVersioning" in _as_list(s["Action"])]
    assert [s["Resource"] for s in versioning] == [{"Fn::GetAtt": [unlabeled, "Arn"]}]


def test_given_the_unlabeled_bucket_then_the_versions_a_requeue_leaves_behind_expire(built: dict[str, Any]) -> None:
    """Each round trip of the Requeue step keeps the older version (the same bytes): they expire."""
    unlabeled = _logical_id(built, built["stack"].storage.unlabeled)
    rules = built["json"]["Resources"][unlabeled]["Properties"]["LifecycleConfiguration"]["Rules"]
    days = built["settings"].storage.artifact_retention_days
    assert any(r.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays") == days for r in rules)


# --- deploy gaps: what a real account needs beyond least privilege ------------------------------------
def _project_of_step(built: dict[str, Any], pipeline: Any, step: str) -> dict[str, Any]:
    return built["json"]["Resources"][_logical_id(built, pipeline.projects[step])]["Properties"]


def _resolve(built: dict[str, Any], value: Any) -> Any:
    return built["stack"].resolve(value)


def test_given_the_training_steps_then_they_may_read_the_images_their_source_refs_name(built: dict[str, Any]) -> None:
    """Prepare and Evaluate open every image of a dataset version through its source-ref in the unlabeled
    bucket: the training build role reads the unlabeled prefix (objects and versions) and may list the bucket
    (so a missing image is a 404, not a 403), and writes nothing there."""
    stack = built["stack"]
    unlabeled = _logical_id(built, stack.storage.unlabeled)
    prefix = built["settings"].storage.unlabeled_prefix
    statements = _statements_of_role(built, _logical_id(built, stack.training.build_role))
    reads = [s for s in statements if unlabeled in json.dumps(s["Resource"]) and "s3:GetObject" in _as_list(s["Action"])]
    assert [(s["Action"], s["Resource"]) for s in reads] == [
        (["s3:GetObject", "s3:GetObjectVersion"], {"Fn::Join": ["", [{"Fn::GetAtt": [unlabeled, "Arn"]}, f"/{prefix}*"]]})]
    lists = [s for s in statements if "s3:ListBucket" in _as_list(s["Action"]) and unlabeled in json.dumps(s["Resource"])]
    assert [s["Resource"] for s in lists] == [{"Fn::GetAtt": [unlabeled, "Arn"]}]
    on_unlabeled = {a for s in statements if unlabeled in json.dumps(s["Resource"]) for a in _as_list(s["Action"])}
    assert on_unlabeled == {"s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket"}


def test_given_no_processing_image_setting_then_the_stack_builds_one_from_the_dockerfile(built: dict[str, Any]) -> None:
    """The image asset: the repository's Dockerfile, linux/amd64, a build context of the package sources only
    (the allow-list .dockerignore keeps virtual environments, node_modules and cdk.out out of it)."""
    manifest = json.loads((built["outdir"] / "TestStack.assets.json").read_text())
    [image] = manifest["dockerImages"].values()
    assert image["source"]["dockerFile"] == DOCKERFILE
    assert image["source"]["platform"] == "linux/amd64"
    context = built["outdir"] / image["source"]["directory"]
    assert {p.name for p in context.iterdir()} >= {"alp", "inference", "pyproject.toml", "constraints.txt", "docker"}
    assert not {".venv", "node_modules", "cdk.out", "tests", "training", ".git"} & {p.name for p in context.iterdir()}
    assert (context / DOCKERFILE).is_file()
    dockerfile = (ROOT / DOCKERFILE).read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    instructions = [line for line in dockerfile.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert 'ENTRYPOINT ["alp"]' in instructions
    assert not [line for line in instructions if "torch" in line or "[train" in line]  # inference only


def test_given_the_built_image_then_only_the_infer_step_gets_its_uri(built: dict[str, Any]) -> None:
    stack = built["stack"]
    image_uri = _resolve(built, stack.processing_image.image_uri)
    for pipeline in (stack.labeling, stack.completion, stack.training):
        for step in pipeline.projects:
            env = {e["Name"]: e["Value"] for e in
                   _project_of_step(built, pipeline, step)["Environment"]["EnvironmentVariables"]}
            if pipeline is stack.labeling and step == "Infer":
                assert env[PROCESSING_IMAGE_ENV] == image_uri
            else:
                assert PROCESSING_IMAGE_ENV not in env


def test_given_the_built_image_then_the_sagemaker_role_may_pull_it_and_nothing_else(built: dict[str, Any]) -> None:
    stack = built["stack"]
    statements = _statements_of_role(built, _logical_id(built, stack.sagemaker.role))
    pulls = [s for s in statements if "ecr:BatchGetImage" in _as_list(s["Action"])]
    assert len(pulls) == 1
    assert sorted(pulls[0]["Action"]) == ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage",
                                          "ecr:GetDownloadUrlForLayer"]
    training_repo = {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"},
                                       ":ecr:us-east-1:763104351884:repository/pytorch-training"]]}
    assert _as_list(pulls[0]["Resource"]) == [training_repo, _resolve(built, stack.processing_image.repository_arn)]
    assert "container-assets" in json.dumps(pulls[0]["Resource"][1])
    for role in (stack.labeling.build_role, stack.completion.build_role, stack.training.build_role):  # never pull
        assert not [s for s in _statements_of_role(built, _logical_id(built, role)) if "ecr:" in json.dumps(s["Action"])]


def test_given_the_infer_step_then_its_timeout_covers_a_processing_job_and_a_margin(built: dict[str, Any]) -> None:
    settings = built["settings"]
    minutes = _project_of_step(built, built["stack"].labeling, "Infer")["TimeoutInMinutes"]
    assert minutes * 60 >= settings.inference.processing_max_runtime_seconds + 30 * 60
    assert minutes <= CODEBUILD_MAX_TIMEOUT_MINUTES
    infer = LABELING_PIPELINE.step("Infer")
    # the longest job the settings allow still fits CodeBuild's limit, with the same margin
    longest = Settings().with_overrides({"inference.processing_max_runtime_seconds": PROCESSING_MAX_RUNTIME_LIMIT_SECONDS})
    assert step_timeout_minutes(LABELING_PIPELINE, infer, longest) == CODEBUILD_MAX_TIMEOUT_MINUTES
    short = Settings().with_overrides({"inference.processing_max_runtime_seconds": 61})
    assert step_timeout_minutes(LABELING_PIPELINE, infer, short) == 2 + PROCESSING_WAIT_MARGIN_MINUTES  # rounded up
    train = TRAINING_PIPELINE.step("Train")
    assert step_timeout_minutes(TRAINING_PIPELINE, train, longest) == train.timeout_minutes  # only Infer waits on it


def test_given_the_labeling_steps_then_they_may_start_processing_jobs_as_the_sagemaker_role(built: dict[str, Any]) -> None:
    """CreateProcessingJob (with its tags) on the project's own job names, and PassRole of the SageMaker role
    to SageMaker; the image is pulled by the SageMaker role, not by the caller."""
    stack = built["stack"]
    statements = _statements_of_role(built, _logical_id(built, stack.labeling.build_role))
    [create] = [s for s in statements if "sagemaker:CreateProcessingJob" in _as_list(s["Action"])]
    assert {"sagemaker:AddTags", "sagemaker:DescribeProcessingJob"} <= set(create["Action"])
    assert json.dumps(create["Resource"]).endswith(':processing-job/alp-*"]]}')
    [passes] = [s for s in statements if "iam:PassRole" in _as_list(s["Action"])]
    assert passes["Resource"] == {"Fn::GetAtt": [_logical_id(built, stack.sagemaker.role), "Arn"]}


def test_given_an_own_processing_image_then_no_image_is_built_and_its_repository_is_pulled(
        variant: dict[str, Any]) -> None:
    stack = variant["stack"]
    assert stack.processing_image is None
    manifest = json.loads((variant["outdir"] / "TestStack.assets.json").read_text())
    assert manifest.get("dockerImages", {}) == {}
    infer_env = [e["Name"] for e in
                 _project_of_step(variant, stack.labeling, "Infer")["Environment"]["EnvironmentVariables"]]
    assert PROCESSING_IMAGE_ENV not in infer_env  # the deployed settings name the image
    [pull] = [s for s in _statements_of_role(variant, _logical_id(variant, stack.sagemaker.role))
              if "ecr:BatchGetImage" in _as_list(s["Action"])]
    assert {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"},
                              ":ecr:eu-west-1:123456789012:repository/team/alp-processing"]]} in pull["Resource"]


REKOGNITION_CALLS = {"rekognition:DescribeProjects", "rekognition:DescribeProjectVersions",
                     "rekognition:StartProjectVersion", "rekognition:StopProjectVersion",
                     "rekognition:DetectCustomLabels"}


def _rekognition_grants(built: dict[str, Any], role: Any) -> dict[str, Any]:
    """action -> its resource, for the role's Rekognition statements."""
    out: dict[str, Any] = {}
    for st in _statements_of_role(built, _logical_id(built, role)):
        for action in _as_list(st["Action"]):
            if action.startswith("rekognition:"):
                assert action not in out, f"{action} granted twice"
                out[action] = st["Resource"]
    return out


def test_given_the_rekognition_head_backend_then_every_role_that_infers_may_run_it(variant: dict[str, Any]) -> None:
    """Infer (labeling build role), Evaluate (training build role) and the Processing shards (SageMaker role)
    all run the bundle with the head backend: each gets exactly RekognitionHeadDetector's five calls, each on
    the resource the Service Authorization Reference names for it."""
    stack = variant["stack"]
    expected = {
        "rekognition:DetectCustomLabels": REKOGNITION_VERSION,
        "rekognition:StartProjectVersion": REKOGNITION_VERSION,
        "rekognition:StopProjectVersion": REKOGNITION_VERSION,
        "rekognition:DescribeProjectVersions": "arn:aws:rekognition:eu-west-1:123456789012:project/heads/*",
        "rekognition:DescribeProjects": "*",
    }
    for role in (stack.labeling.build_role, stack.training.build_role, stack.sagemaker.role):
        assert _rekognition_grants(variant, role) == expected, role.node.path
    # the completion pipeline has no Infer step: it never runs the model
    others = [stack.labeling.pipeline_role, stack.training.pipeline_role, stack.upload.batcher.role,
              stack.ground_truth.pre.role, stack.ground_truth.post.role, stack.completion.build_role,
              stack.completion.pipeline_role, stack.completion_trigger.function.role]
    for role in others:
        assert _rekognition_grants(variant, role) == {}, role.node.path


def test_given_the_default_head_backend_then_no_role_may_call_rekognition(built: dict[str, Any]) -> None:
    assert "rekognition:" not in json.dumps(_resources(built, "AWS::IAM::Policy"))


def test_given_a_malformed_rekognition_arn_then_synth_fails_naming_the_setting(tmp_path: Path) -> None:
    bad = {**VARIANT, "alp:inference.rekognition_project_version_arn": "arn:aws:rekognition:eu-west-1:1:project/x"}
    with pytest.raises(ValueError, match="rekognition_project_version_arn"):
        _build(tmp_path, bad)


# --- the split human step: completion pipeline and trigger ------------------------------------------------
def _actions(built: dict[str, Any], role: Any) -> set[str]:
    return {a for s in _statements_of_role(built, _logical_id(built, role)) for a in _as_list(s["Action"])}


def test_given_the_completion_pipeline_then_its_role_labels_merges_and_requeues_but_never_infers(
        variant: dict[str, Any]) -> None:
    """Label (labeling jobs, PassRole of the SageMaker role), Merge (starts training), Requeue (copies): what the
    labeling steps need, less what only Infer does: no Processing jobs, no model registry, no Rekognition, no
    read of the model bundles (checked on the variant, whose labeling role has Rekognition grants)."""
    stack = variant["stack"]
    completion, labeling = _actions(variant, stack.completion.build_role), _actions(variant, stack.labeling.build_role)
    assert {"sagemaker:CreateLabelingJob", "sagemaker:DescribeLabelingJob", "iam:PassRole",
            "codepipeline:StartPipelineExecution", "s3:PutObject", "s3:GetBucketVersioning"} <= completion
    infer_only = {"sagemaker:CreateProcessingJob", "sagemaker:DescribeProcessingJob", "sagemaker:StopProcessingJob",
                  "sagemaker:ListModelPackages", "sagemaker:DescribeModelPackage", "sagemaker:DescribeModelPackageGroup",
                  *REKOGNITION_CALLS}
    assert infer_only <= labeling
    assert completion == labeling - infer_only
    statements = _statements_of_role(variant, _logical_id(variant, stack.completion.build_role))
    starts = [s for s in statements if "codepipeline:StartPipelineExecution" in _as_list(s["Action"])]
    assert [json.dumps(s["Resource"]).count(_logical_id(variant, stack.training.pipeline)) for s in starts] == [1]
    assert "/models/" not in json.dumps([s["Resource"] for s in statements])
    built_projects = {p["Properties"]["Name"] for p in _resources(variant, "AWS::CodeBuild::Project").values()}
    assert {f"alp-labeling-completion-{s.name.lower()}" for s in LABELING_COMPLETION_PIPELINE.steps} <= built_projects


def test_given_the_completion_trigger_then_it_reads_only_the_waiting_index_and_starts_only_the_completion_pipeline(
        built: dict[str, Any]) -> None:
    stack = built["stack"]
    trigger = stack.completion_trigger.function
    data = {"Fn::GetAtt": [_logical_id(built, stack.storage.data), "Arn"]}
    pipeline = _resolve(built, stack.completion.pipeline.pipeline_arn)
    statements = _statements_of_role(built, _logical_id(built, trigger.role))
    assert statements == [
        {"Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Effect": "Allow",
         "Resource": {"Fn::GetAtt": [_logical_id(built, trigger.log_group), "Arn"]}},
        {"Action": ["s3:GetObject", "s3:GetObjectVersion"], "Effect": "Allow",
         "Resource": [{"Fn::Join": ["", [data, "/config/settings.json*"]]},
                      {"Fn::Join": ["", [data, "/labeling/waiting/*"]]}]},
        {"Action": "s3:ListBucket", "Effect": "Allow", "Resource": data,
         "Condition": {"StringLike": {"s3:prefix": ["labeling/waiting/*"]}}},
        {"Action": ["codepipeline:StartPipelineExecution", "codepipeline:ListPipelineExecutions",
                    "codepipeline:GetPipelineExecution"], "Effect": "Allow", "Resource": pipeline},
    ]
    props = built["json"]["Resources"][_logical_id(built, trigger.function)]["Properties"]
    assert props["FunctionName"] == "alp-labeling-completion-trigger"
    assert props["Handler"] == "lambdas.labeling_completion.handler"


def test_given_the_rules_then_the_projects_ended_jobs_and_the_schedule_reach_the_trigger_and_nothing_else(
        built: dict[str, Any]) -> None:
    """The rules as EventBridge evaluates them (patterns resolved for an account and Region, matched by the
    embedded EventBridge's matcher) against the documented Ground Truth event, and the permissions that let
    exactly these two rules invoke the function."""
    from events import event

    from alp.cloudformation.embedded_stack import EventRule
    from alp.cloudformation.template import StackTemplate

    stack = built["stack"]
    template = StackTemplate.load(built["outdir"], account="123456789012", region="eu-west-1", stack_name="TestStack")
    function_arn = template.arn(_logical_id(built, stack.completion_trigger.function.function))
    rules = {name: EventRule(name, props.get("EventPattern"), props.get("ScheduleExpression"),
                             tuple(t["Arn"] for t in props["Targets"]))
             for _, name, props in template.each("AWS::Events::Rule")}
    job_rule, check_rule = rules["alp-labeling-job-state-change"], rules["alp-waiting-batches-check"]
    assert job_rule.targets == check_rule.targets == (function_arn,)
    assert check_rule.schedule == f"rate({built['settings'].labeling.studio.check_interval_minutes} minutes)"

    def gt(job: str, status: str = "Completed", region: str = "eu-west-1") -> dict[str, Any]:
        ev = event("gt_labeling_job_state_change.eventbridge", JOB_NAME=job, STATUS=status)
        return {**ev, "region": region, "resources": [r.replace("us-east-1", region) for r in ev["resources"]]}

    for status in ("Completed", "Failed", "Stopped"):
        assert job_rule.matches(gt("alp-heads-0123456789abcdef", status))
    assert not job_rule.matches(gt("alp-heads-0123456789abcdef", "InProgress"))
    assert not job_rule.matches(gt("other-heads-0123456789abcdef"))  # another project's job
    assert not job_rule.matches(gt("alp-heads-0123456789abcdef", region="us-east-1"))  # another Region's
    assert not job_rule.matches(event("s3_object_created.eventbridge", BUCKET="b", KEY="k"))
    assert check_rule.matches(event("scheduled_event.eventbridge", RULE="alp-waiting-batches-check"))

    permissions = _resources(built, "AWS::Lambda::Permission").values()
    function_ref = {"Fn::GetAtt": [_logical_id(built, stack.completion_trigger.function.function), "Arn"]}
    assert sorted(json.dumps(p["Properties"]["SourceArn"]) for p in permissions) == sorted(
        json.dumps({"Fn::GetAtt": [_logical_id(built, r), "Arn"]})
        for r in (stack.completion_trigger.job_state_rule, stack.completion_trigger.check_rule))
    for p in permissions:
        assert p["Properties"]["FunctionName"] == function_ref
        assert (p["Properties"]["Principal"], p["Properties"]["Action"]) == ("events.amazonaws.com",
                                                                             "lambda:InvokeFunction")


def test_given_the_completion_trigger_then_its_errors_alarm_the_topic(built: dict[str, Any]) -> None:
    stack = built["stack"]
    alarm = built["json"]["Resources"][_logical_id(built, stack.monitoring.completion_errors_alarm)]["Properties"]
    assert alarm["MetricName"] == "Errors" and alarm["Namespace"] == "AWS/Lambda"
    assert alarm["Dimensions"] == [{"Name": "FunctionName",
                                    "Value": {"Ref": _logical_id(built, stack.completion_trigger.function.function)}}]
