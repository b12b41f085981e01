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

from alp.lambda_asset import build_lambda_asset  # noqa: E402
from alp.settings import settings_from_context  # noqa: E402
from alp.steps import LABELING_PIPELINE, TRAINING_PIPELINE  # noqa: E402
from stacks.pipeline_stack import ActiveLabelingStack, cdk_json_context  # noqa: E402
from stacks.upload_trigger import queue_visibility_seconds  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORKTEAM = "arn:aws:sagemaker:eu-west-1:123456789012:workteam/private-crowd/heads"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("stack")
    context = cdk_json_context(ROOT / "cdk.json")
    context["alp:labeling.workteam_arn"] = WORKTEAM
    context["alp:region"] = "eu-west-1"
    app = cdk.App(context=context, outdir=str(tmp / "cdk.out"))
    settings = settings_from_context(app.node.get_all_context())
    stack = ActiveLabelingStack(app, "TestStack", settings=settings,
                                lambda_code_dir=build_lambda_asset(ROOT, tmp / "asset"),
                                env=cdk.Environment(region=settings.region))
    template = Template.from_stack(stack)
    assembly = app.synth()
    return {"stack": stack, "template": template, "settings": settings, "json": template.to_json(),
            "outdir": Path(assembly.directory)}


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
        assert {r["Prefix"] for r in expiring[1:]} == ({"code/", "jobs/"} if pipeline == "alp-training" else set())
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
    functions = [stack.upload.batcher, stack.ground_truth.pre, stack.ground_truth.post]
    handlers = {"lambdas.batcher.handler", "lambdas.gt_pre_annotation.handler", "lambdas.gt_post_annotation.handler"}
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
    assert len({_logical_id(built, fn.role) for fn in functions}) == 3  # one role per function


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
            stack.ground_truth.post.role]
    unscopable = {"ecr:GetAuthorizationToken", "sagemaker:ListModelPackages"}
    for role in ours:
        for st in _statements_of_role(built, _logical_id(built, role)):
            if "*" in _as_list(st["Resource"]):
                assert set(_as_list(st["Action"])) <= unscopable, st


def test_given_the_pipeline_roles_then_they_may_pass_the_sagemaker_role_to_sagemaker_only(built: dict[str, Any]) -> None:
    stack = built["stack"]
    for build_role in (stack.labeling.build_role, stack.training.build_role):
        passes = [s for s in _statements_of_role(built, _logical_id(built, build_role))
                  if "iam:PassRole" in _as_list(s["Action"])]
        assert passes == [{
            "Action": "iam:PassRole", "Effect": "Allow",
            "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            "Resource": {"Fn::GetAtt": [_logical_id(built, stack.sagemaker.role), "Arn"]},
        }]


# --- pipelines --------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", [LABELING_PIPELINE, TRAINING_PIPELINE], ids=lambda s: s.name)
def test_given_a_declared_pipeline_then_it_renders_as_v2_with_one_stage_per_step(built: dict[str, Any], spec: Any) -> None:
    stack = built["stack"]
    pipeline = stack.labeling if spec is LABELING_PIPELINE else stack.training
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
        assert project["TimeoutInMinutes"] == step.timeout_minutes
        project_env = {e["Name"]: e["Value"] for e in project["Environment"]["EnvironmentVariables"]}
        assert set(project_env) == {"ALP_SETTINGS_URI", "ALP_DATA_ROOT"}
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
    assert len(alarms) == 4
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == [topic]
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
                         "detail": {"state": ["FAILED"], "pipeline": ["alp-labeling", "alp-training"]}},
        "Targets": [Match.object_like({"Arn": topic})],
    })
    built["template"].has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})
    built["template"].has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    built["template"].resource_count_is("AWS::CloudWatch::Dashboard", 1)


def test_given_the_stack_then_it_outputs_names_queue_and_model_group(built: dict[str, Any]) -> None:
    outputs = built["json"]["Outputs"]
    for key in ("UnlabeledBucketName", "DataBucketName", "LabelingPipelineName", "TrainingPipelineName",
                "UploadQueueUrl", "ModelPackageGroupName", "BatchLedgerTableName"):
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
    assert unlabeled_writes(stack.training.build_role) == []
    assert unlabeled_writes(stack.upload.batcher.role) == []
    versioning = [s for s in _statements_of_role(built, _logical_id(built, stack.labeling.build_role))
                  if "s3:GetBucketVersioning" in _as_list(s["Action"])]
    assert [s["Resource"] for s in versioning] == [{"Fn::GetAtt": [unlabeled, "Arn"]}]


def test_given_the_unlabeled_bucket_then_the_versions_a_requeue_leaves_behind_expire(built: dict[str, Any]) -> None:
    """Each round trip of the Requeue step keeps the older version (the same bytes): they expire."""
    unlabeled = _logical_id(built, built["stack"].storage.unlabeled)
    rules = built["json"]["Resources"][unlabeled]["Properties"]["LifecycleConfiguration"]["Rules"]
    days = built["settings"].storage.artifact_retention_days
    assert any(r.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays") == days for r in rules)
