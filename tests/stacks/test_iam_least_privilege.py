"""Least privilege, checked on the synthesized template: every statement of every IAM policy is walked.

* no ``*`` action and no ``<service>:*`` action;
* no ``*`` resource except for the APIs that accept no other (listed, with the reason, in
  :data:`RESOURCE_STAR_ACKNOWLEDGED`);
* every S3 statement names the stack's own buckets, and object access to the data and unlabeled buckets is
  scoped to a prefix (the CDK BucketDeployment handler, which copies the config and templates, is the one
  acknowledged exception);
* the Lambdas are invokable only by their callers: the only resource policies (``AWS::Lambda::Permission``)
  let EventBridge invoke the completion trigger for exactly its two rules of this stack, the only
  ``lambda:InvokeFunction`` grant is the labeling-job role's on exactly the two Ground Truth functions, and the
  batcher is fed only by its own queue's event source mapping;
* the completion trigger reads and lists nothing but the waiting index (and its settings) and may start, list
  and read executions of the completion pipeline only;
* every role trusts one AWS service, never an account or ``*``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("aws_cdk")

import aws_cdk as cdk  # noqa: E402
from aws_cdk.assertions import Template  # noqa: E402
from paths import REPO_ROOT  # noqa: E402

from alp.lambda_asset import build_lambda_asset  # noqa: E402
from alp.settings import settings_from_context  # noqa: E402
from stacks.pipeline_stack import ActiveLabelingStack, cdk_json_context  # noqa: E402

ROOT = REPO_ROOT

# Actions whose API has no resource-level permissions (the Service Authorization Reference lists "*" only).
RESOURCE_STAR_ACKNOWLEDGED = {
    "ecr:GetAuthorizationToken": "registry-wide token for pulling the training and processing images; the API "
                                 "takes no resource",
    "rekognition:DescribeProjects": "the Rekognition head backend finds its project by name; DescribeProjects "
                                    "takes no resource (the project's version calls are scoped to their ARNs)",
    "sagemaker:ListModelPackages": "List* calls of SageMaker support no resource-level permissions",
    "cloudwatch:PutMetricData": "metric data has no ARN; scoped by a namespace condition where used",
    "xray:PutTraceSegments": "X-Ray segments have no ARN",
    "xray:PutTelemetryRecords": "X-Ray telemetry has no ARN",
}
# The CDK-provided BucketDeployment handler copies assets from the bootstrap bucket into the data bucket.
BUCKET_DEPLOYMENT_ROLE_PREFIX = "CustomCDKBucketDeployment"
CDK_ASSETS_BUCKET = "cdk-hnb659fds-assets-"


# Every check below runs on the default stack and on the one with the Rekognition head backend, whose grants
# (one of them on "*") exist only then.
VARIANTS = {
    "defaults": {},
    "rekognition": {
        "alp:inference.head_detector_backend": "rekognition-custom-labels",
        "alp:inference.rekognition_project_version_arn":
            "arn:aws:rekognition:us-east-1:123456789012:project/heads/version/heads.v1/1767225600000",
    },
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def template(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("iam")
    context = cdk_json_context(ROOT / "cdk.json")
    context["alp:labeling.workteam_arn"] = "arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/heads"
    context.update(VARIANTS[request.param])
    app = cdk.App(context=context, outdir=str(tmp / "cdk.out"))
    settings = settings_from_context(app.node.get_all_context())
    stack = ActiveLabelingStack(app, "IamStack", settings=settings,
                                lambda_code_dir=build_lambda_asset(ROOT, tmp / "asset"),
                                env=cdk.Environment(region=settings.region))
    return dict(Template.from_stack(stack).to_json())


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _of_type(t: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in t["Resources"].items() if v["Type"] == type_}


def statements(t: dict[str, Any]) -> Iterator[tuple[str, list[str], dict[str, Any]]]:
    """(policy logical id, role logical ids, statement) for every identity-policy statement."""
    for pid, res in t["Resources"].items():
        props = res.get("Properties", {})
        if res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            roles = [r["Ref"] for r in props.get("Roles", []) if isinstance(r, dict) and "Ref" in r]
            for st in props["PolicyDocument"]["Statement"]:
                yield pid, roles, st
        elif res["Type"] == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                for st in policy["PolicyDocument"]["Statement"]:
                    yield pid, [pid], st


def test_the_walk_sees_the_stack_policies(template: dict[str, Any]) -> None:
    found = list(statements(template))
    assert len(found) >= 40  # a walk that sees nothing proves nothing
    assert len(_of_type(template, "AWS::IAM::Role")) >= 8


def test_no_statement_allows_every_action(template: dict[str, Any]) -> None:
    bad = [(pid, a) for pid, _, st in statements(template) for a in _as_list(st["Action"])
           if a == "*" or (isinstance(a, str) and a.endswith(":*"))]
    assert bad == []
    assert all("NotAction" not in st for _, _, st in statements(template))


def test_star_resources_only_where_the_api_requires_it(template: dict[str, Any]) -> None:
    bad = []
    for pid, _, st in statements(template):
        if st.get("Effect") != "Allow" or "*" not in _as_list(st.get("Resource")):
            continue
        unacknowledged = [a for a in _as_list(st["Action"]) if a not in RESOURCE_STAR_ACKNOWLEDGED]
        if unacknowledged:
            bad.append((pid, unacknowledged))
    assert bad == []
    assert all("NotResource" not in st for _, _, st in statements(template))


def _bucket_refs(resource: Any, buckets: set[str]) -> set[str]:
    text = json.dumps(resource)
    return {b for b in buckets if f'"{b}"' in text}


def test_s3_statements_name_the_stack_buckets_and_data_access_is_prefix_scoped(template: dict[str, Any]) -> None:
    buckets = set(_of_type(template, "AWS::S3::Bucket"))
    scoped = {b for b in buckets if any(name in b for name in ("Data", "Unlabeled"))}
    assert len(scoped) == 2
    problems = []
    acknowledged = 0
    for pid, _, st in statements(template):
        actions = [a for a in _as_list(st["Action"]) if a.startswith("s3:")]
        if not actions or st.get("Effect") != "Allow":
            continue
        for resource in _as_list(st["Resource"]):
            refs = _bucket_refs(resource, buckets)
            if not refs:
                if pid.startswith(BUCKET_DEPLOYMENT_ROLE_PREFIX) and CDK_ASSETS_BUCKET in json.dumps(resource):
                    continue  # acknowledged: CDK's deployment handler reads its own asset bucket
                problems.append((pid, "S3 resource outside the stack's buckets", resource))
                continue
            whole_bucket = '"/*"' in json.dumps(resource)  # "<bucket arn>" + "/*", not "/batches/*"
            if refs & scoped and whole_bucket:
                if pid.startswith(BUCKET_DEPLOYMENT_ROLE_PREFIX):
                    acknowledged += 1  # CDK's handler deploys config/ and templates/ into the data bucket
                    continue
                problems.append((pid, "whole-bucket object access to the data or unlabeled bucket", resource))
    assert problems == []
    assert acknowledged >= 1  # the rule does trigger: the one acknowledged case is seen


def test_lambdas_are_invokable_only_by_their_callers(template: dict[str, Any]) -> None:
    functions = _of_type(template, "AWS::Lambda::Function")
    assert len(functions) >= 4
    rules = _of_type(template, "AWS::Events::Rule")
    permissions = _of_type(template, "AWS::Lambda::Permission")
    assert len(permissions) == 2, "a resource policy opens a Lambda to someone"
    for pid, permission in permissions.items():
        props = permission["Properties"]
        (function,) = {props["FunctionName"]["Fn::GetAtt"][0]}
        assert "CompletionTrigger" in function, (pid, props)
        assert (props["Principal"], props["Action"]) == ("events.amazonaws.com", "lambda:InvokeFunction"), pid
        rule = props["SourceArn"]["Fn::GetAtt"][0]  # one rule of this stack, never any rule
        assert rule in rules and [t["Arn"] for t in rules[rule]["Properties"]["Targets"]] == [
            {"Fn::GetAtt": [function, "Arn"]}], (pid, rule)
    invoke = [(pid, roles, st) for pid, roles, st in statements(template)
              if any(a in ("lambda:InvokeFunction", "lambda:*") for a in _as_list(st["Action"]))]
    assert len(invoke) == 1
    pid, roles, st = invoke[0]
    targets = {r["Fn::GetAtt"][0] for r in _as_list(st["Resource"]) if isinstance(r, dict) and "Fn::GetAtt" in r}
    assert len(targets) == len(_as_list(st["Resource"])) == 2
    assert all("PreAnnotation" in t or "PostAnnotation" in t for t in targets)
    (role,) = roles
    trust = template["Resources"][role]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "sagemaker.amazonaws.com"}]
    mappings = _of_type(template, "AWS::Lambda::EventSourceMapping")
    queues = set(_of_type(template, "AWS::SQS::Queue"))
    for mapping in mappings.values():
        source = mapping["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]
        assert source in queues and "Dlq" not in source and "DeadLetter" not in source


def test_every_role_trusts_one_service_and_nothing_else(template: dict[str, Any]) -> None:
    for rid, role in _of_type(template, "AWS::IAM::Role").items():
        for st in role["Properties"]["AssumeRolePolicyDocument"]["Statement"]:
            principal = st["Principal"]
            assert set(principal) == {"Service"}, (rid, principal)
            assert all(s.endswith(".amazonaws.com") for s in _as_list(principal["Service"])), (rid, principal)
        managed = json.dumps(role["Properties"].get("ManagedPolicyArns", []))
        if managed != "[]":  # only CDK's own custom-resource handlers carry the basic logging policy
            assert "AWSLambdaBasicExecutionRole" in managed and managed.count("iam::aws:policy") == 1, (rid, managed)


def test_pass_role_is_limited_to_the_sagemaker_role(template: dict[str, Any]) -> None:
    for pid, _, st in statements(template):
        if "iam:PassRole" in _as_list(st["Action"]):
            assert [r["Fn::GetAtt"][0] for r in _as_list(st["Resource"])] and all(
                "SageMakerRole" in r["Fn::GetAtt"][0] for r in _as_list(st["Resource"])), (pid, st)


def test_bucket_and_queue_policies_allow_no_anonymous_principal(template: dict[str, Any]) -> None:
    for type_ in ("AWS::S3::BucketPolicy", "AWS::SQS::QueuePolicy", "AWS::SNS::TopicPolicy"):
        for pid, res in _of_type(template, type_).items():
            for st in res["Properties"]["PolicyDocument"]["Statement"]:
                if st.get("Effect") == "Allow":
                    assert st.get("Principal") not in ("*", {"AWS": "*"}), (pid, st)


def test_star_resources_are_alone_in_their_statements(template: dict[str, Any]) -> None:
    """A "*" statement holds only actions that take no resource, so no scoped action rides along on it."""
    for pid, _, st in statements(template):
        if "*" in _as_list(st.get("Resource")):
            assert _as_list(st["Resource"]) == ["*"], (pid, st)


def test_rekognition_calls_are_scoped_to_the_configured_model(template: dict[str, Any]) -> None:
    """Only DescribeProjects (no resource-level permissions) is on "*"; the version calls name the configured
    project version, and DescribeProjectVersions the project (its creation timestamp left to the wildcard)."""
    for pid, _, st in statements(template):
        actions = [a for a in _as_list(st["Action"]) if a.startswith("rekognition:")]
        if not actions:
            continue
        resources = _as_list(st["Resource"])
        if resources == ["*"]:
            assert actions == ["rekognition:DescribeProjects"], (pid, st)
        elif actions == ["rekognition:DescribeProjectVersions"]:
            assert resources == ["arn:aws:rekognition:us-east-1:123456789012:project/heads/*"], (pid, st)
        else:
            assert sorted(actions) == ["rekognition:DetectCustomLabels", "rekognition:StartProjectVersion",
                                       "rekognition:StopProjectVersion"], (pid, st)
            assert resources == [VARIANTS["rekognition"]["alp:inference.rekognition_project_version_arn"]]


def test_the_completion_trigger_touches_the_waiting_index_and_the_completion_pipeline_only(
        template: dict[str, Any]) -> None:
    """Its role: S3 reads of the settings and of ``labeling/waiting/`` objects, listings conditioned on that
    prefix, and the completion pipeline's start/list/get; nothing else (no write, no other pipeline)."""
    roles = [r for r in _of_type(template, "AWS::IAM::Role") if r.startswith("CompletionTrigger")]
    assert len(roles) == 1
    found = [st for _, rs, st in statements(template) if roles[0] in rs]
    actions = {a for st in found for a in _as_list(st["Action"])}
    assert actions == {"logs:CreateLogStream", "logs:PutLogEvents", "s3:GetObject", "s3:GetObjectVersion",
                       "s3:ListBucket", "codepipeline:StartPipelineExecution",
                       "codepipeline:ListPipelineExecutions", "codepipeline:GetPipelineExecution"}
    for st in found:
        text = json.dumps(st["Resource"])
        if "s3:GetObject" in _as_list(st["Action"]):
            assert [json.dumps(r).rsplit('"', 2)[-2] for r in st["Resource"]] == ["/config/settings.json*",
                                                                                "/labeling/waiting/*"]
        elif st["Action"] == "s3:ListBucket":
            assert st["Condition"] == {"StringLike": {"s3:prefix": ["labeling/waiting/*"]}}
        elif any(a.startswith("codepipeline:") for a in _as_list(st["Action"])):
            assert "LabelingCompletionPipeline" in text and "TrainingPipeline" not in text
            assert '"LabelingPipeline' not in text
