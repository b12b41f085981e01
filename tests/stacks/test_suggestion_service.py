"""The suggestion service hosted by the stack (``serve.hosted: true``), checked on the synthesized template.

Synthesized the way ``make synth`` does it (``app.py`` with the cdk-nag pack: an unacknowledged finding fails
the synthesis) through the per-settings cache of :mod:`alp.cloudformation.synth`: the hosted Label Studio of
tests/stacks/test_label_studio_service.py (an internal load balancer), once with the service and once without
(that one is the same cache entry as that module's). The acknowledgements are checked against the real
findings by one in-process synthesis with them switched off.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aws_cdk")

import aws_cdk as cdk  # noqa: E402
from paths import REPO_ROOT  # noqa: E402
from test_cdk_nag import _ONE_FINDING, _nag_app, _RecordingValidations, _violations  # noqa: E402
from test_cfn_lint import assert_cfn_lint_clean  # noqa: E402
from test_label_studio_service import HOSTED  # noqa: E402

from alp.cloudformation.synth import synthesize_cached  # noqa: E402
from alp.settings import SETTINGS_ENV, Settings, settings_from_cdk_json  # noqa: E402
from stacks.pipeline_stack import ActiveLabelingStack  # noqa: E402
from stacks.suggestion_service import (  # noqa: E402
    ALLOWED_HOSTS_ENV,
    DOCKERFILE,
    HEALTH_PATH,
    ML_BLOCK_LOCAL_IP_ENV,
    check_serve_settings,
)

SERVED = {**HOSTED, "serve.hosted": True}
OURS = "SuggestionService"  # the construct's id: every logical id of its resources starts with it
SERVICE_TYPES = ("AWS::ECS::Service", "AWS::ECS::TaskDefinition", "AWS::ElasticLoadBalancingV2::LoadBalancer",
                 "AWS::ElasticLoadBalancingV2::Listener", "AWS::ElasticLoadBalancingV2::TargetGroup",
                 "AWS::ApplicationAutoScaling::ScalableTarget", "AWS::ApplicationAutoScaling::ScalingPolicy",
                 "AWS::Logs::LogGroup", "AWS::IAM::Role", "AWS::EC2::SecurityGroup")


def _synth(overrides: dict[str, Any]) -> dict[str, Any]:
    settings = settings_from_cdk_json(REPO_ROOT / "cdk.json").with_overrides(overrides)
    outdir = synthesize_cached(settings)  # app.py with the nag pack: a finding raises SynthError
    (path,) = sorted(outdir.glob("*.template.json"))
    return {"settings": settings, "outdir": outdir, "path": path, "json": json.loads(path.read_text()),
            "assets": json.loads(next(outdir.glob("*.assets.json")).read_text())}


@pytest.fixture(scope="module")
def served() -> dict[str, Any]:
    return _synth(SERVED)


@pytest.fixture(scope="module")
def studio_only() -> dict[str, Any]:
    return _synth(HOSTED)


def _of_type(built: dict[str, Any], type_: str, *, ours: bool | None = None) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in built["json"]["Resources"].items()
            if v["Type"] == type_ and (ours is None or k.startswith(OURS) == ours)}


def _one(built: dict[str, Any], type_: str, *, ours: bool | None = True) -> tuple[str, dict[str, Any]]:
    found = _of_type(built, type_, ours=ours)
    assert len(found) == 1, f"{type_}: {sorted(found)}"
    (logical_id, resource), = found.items()
    return logical_id, resource["Properties"]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _group_id(logical_id: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, "GroupId"]}


def _subnet_type(built: dict[str, Any], subnet_ref: dict[str, str]) -> str:
    subnet = built["json"]["Resources"][subnet_ref["Ref"]]["Properties"]
    return next(t["Value"] for t in subnet["Tags"] if t["Key"] == "aws-cdk:subnet-type")


def _container(built: dict[str, Any]) -> dict[str, Any]:
    _, task = _one(built, "AWS::ECS::TaskDefinition")
    (container,) = task["ContainerDefinitions"]
    return dict(container)


def _ingress_of(built: dict[str, Any], group_id: str) -> list[dict[str, Any]]:
    """Every ingress rule of a group: its inline rules and the separate SecurityGroupIngress resources."""
    inline = built["json"]["Resources"][group_id]["Properties"].get("SecurityGroupIngress", [])
    separate = [r["Properties"] for r in _of_type(built, "AWS::EC2::SecurityGroupIngress").values()
                if r["Properties"]["GroupId"] == _group_id(group_id)]
    return [*inline, *separate]


def _studio_service_group(built: dict[str, Any]) -> str:
    _, studio = _one(built, "AWS::ECS::Service", ours=False)
    (group,) = studio["NetworkConfiguration"]["AwsvpcConfiguration"]["SecurityGroups"]
    return str(group["Fn::GetAtt"][0])


# --- synthesis: nag and lint ---------------------------------------------------------------------------------
def test_given_the_hosted_service_then_the_nag_pack_reports_nothing(served: dict[str, Any]) -> None:
    """The synthesis itself would have failed on a finding; the report, when written, lists none."""
    report = served["outdir"] / "validation-report.json"
    if report.exists():
        assert [v for v in _violations(report) if v[0].startswith("AwsSolutions")] == []


def test_given_the_hosted_service_then_cfn_lint_reports_nothing(served: dict[str, Any]) -> None:
    assert_cfn_lint_clean([str(served["path"])])


def test_given_no_acknowledgements_then_each_one_matches_a_real_finding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With acknowledgements switched off the plugin fails; every finding it reports is one we acknowledge,
    and every acknowledgement (the service's among them) names a finding it really reports."""
    acknowledgements: list[tuple[str, str, str]] = []
    real_of = cdk.Validations.of
    monkeypatch.setattr(cdk.Validations, "of",
                        staticmethod(lambda scope: _RecordingValidations(real_of(scope), scope, acknowledgements)))
    outdir = tmp_path / "cdk.out"
    app = _nag_app(outdir, tmp_path / "asset", {f"alp:{k}": v for k, v in SERVED.items()})
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    findings = _violations(outdir / "validation-report.json")
    ours = [(path, finding, reason) for path, finding, reason in acknowledgements if f"/{OURS}/" in path + "/"]
    assert {finding for _, finding, _ in ours} >= {"AwsSolutions-ECS2", "AwsSolutions-IAM5[Resource::*]"}
    for path, finding, reason in acknowledgements:
        assert _ONE_FINDING.match(finding), f"{path}: {finding!r} does not name exactly one finding"
        assert len(reason.strip()) >= 30, f"{path}: {finding} has no real reason: {reason!r}"
        assert any(rule == finding and (p == path or p.startswith(path + "/")) for rule, p in findings), (
            f"{finding} on {path} matches no finding")
    for rule, path in findings:
        assert any(rule == f and (path == p or path.startswith(p + "/")) for p, f, _ in acknowledgements), (
            f"{rule} on {path} is not acknowledged")


# --- the service -----------------------------------------------------------------------------------------------
def test_given_the_service_then_it_runs_the_built_image_on_fargate_in_the_studio_cluster(
        served: dict[str, Any]) -> None:
    serve = served["settings"].serve
    _, service = _one(served, "AWS::ECS::Service")
    studio_cluster, _ = _one(served, "AWS::ECS::Cluster", ours=False)
    assert service["Cluster"] == {"Ref": studio_cluster}  # Label Studio's cluster, not a second one
    assert service["LaunchType"] == "FARGATE"
    assert service["DesiredCount"] == serve.min_tasks
    assert service["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    network = service["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "DISABLED"
    assert {_subnet_type(served, s) for s in network["Subnets"]} == {"Private"}
    _, task = _one(served, "AWS::ECS::TaskDefinition")
    assert task["RequiresCompatibilities"] == ["FARGATE"]
    assert (task["Cpu"], task["Memory"]) == (str(serve.cpu), str(serve.memory_mib))
    assert task["RuntimePlatform"]["CpuArchitecture"] == "X86_64"
    container = _container(served)
    assert container["Command"] == ["alp", "serve", "--host", "0.0.0.0", "--port", str(serve.port)]
    assert container["PortMappings"] == [{"ContainerPort": serve.port, "Protocol": "tcp"}]
    assert "container-assets" in json.dumps(container["Image"])  # the image asset, pushed by cdk deploy
    assert "Secrets" not in container


def test_given_the_image_asset_then_it_is_the_serve_dockerfile_over_the_package_sources(
        served: dict[str, Any]) -> None:
    images = [i for i in served["assets"]["dockerImages"].values() if i["source"]["dockerFile"] == DOCKERFILE]
    assert len(images) == 1 and images[0]["source"]["platform"] == "linux/amd64"
    context = served["outdir"] / images[0]["source"]["directory"]
    names = {p.name for p in context.iterdir()}
    assert names >= {"alp", "inference", "pyproject.toml", "constraints.txt", "docker"}
    assert not {".venv", "node_modules", "cdk.out", "tests", "training", ".git"} & names
    assert (context / DOCKERFILE).is_file()  # staged despite the allow-list .dockerignore
    instructions = [line.strip() for line in (REPO_ROOT / DOCKERFILE).read_text().splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    install = " ".join(instructions)
    assert "-c /tmp/alp-src/constraints.txt" in install and '"/tmp/alp-src[serve]"' in install
    user = next(line for line in instructions if line.startswith("USER "))
    assert user.split()[1].split(":")[0] not in {"0", "root"}
    assert instructions.index(user) < instructions.index(next(i for i in instructions if i.startswith("CMD ")))
    assert instructions[-1] == 'CMD ["alp", "serve", "--host", "0.0.0.0", "--port", "9090"]'
    assert not [line for line in instructions if "torch" in line or "[train" in line]


def test_given_the_environment_then_it_names_the_settings_and_the_unlabeled_bucket_as_image_source(served: dict[str, Any]) -> None:
    env = {e["Name"]: e["Value"] for e in _container(served)["Environment"]}
    assert env[SETTINGS_ENV] == served["json"]["Outputs"]["SettingsUri"]["Value"]
    assert env["AWS_DEFAULT_REGION"] == served["settings"].region
    unlabeled = next(k for k, v in _of_type(served, "AWS::S3::Bucket").items()
                     if "unlabeled" in json.dumps(v["Properties"]["BucketName"]))
    bucket, suffix = {"Ref": unlabeled}, {"Ref": "AWS::URLSuffix"}
    # added to serve.allowed_hosts (in the deployed settings) by the service
    assert env[ALLOWED_HOSTS_ENV] == {"Fn::Join": ["", [
        "s3://", bucket, ",", bucket, f".s3.{served['settings'].region}.", suffix, ",", bucket, ".s3.", suffix]]}
    assert not [n for n in env if "PASSWORD" in n or "SECRET" in n or n.endswith(("_KEY", "_TOKEN"))]


def test_given_the_log_group_then_it_keeps_the_logs_for_the_retention(served: dict[str, Any]) -> None:
    """The container writes to a log group of its own with explicit retention. CloudWatch Logs encrypts every
    log group at rest; like every other log group of the stack it uses the service's key, not one of ours."""
    group_id, group = _one(served, "AWS::Logs::LogGroup")
    prefix = served["settings"].storage.resource_prefix
    assert group["LogGroupName"] == f"/ecs/{prefix}-suggestion-service"
    assert group["RetentionInDays"] == served["settings"].observability.log_retention_days
    logging = _container(served)["LogConfiguration"]
    assert logging["LogDriver"] == "awslogs" and logging["Options"]["awslogs-group"] == {"Ref": group_id}


# --- who reaches it -------------------------------------------------------------------------------------------
def test_given_the_load_balancer_then_it_is_internal_and_logs_its_access(served: dict[str, Any]) -> None:
    port = served["settings"].serve.port
    lb_id, lb = _one(served, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    assert lb["Scheme"] == "internal"
    assert {_subnet_type(served, s) for s in lb["Subnets"]} == {"Private"}
    attributes = {a["Key"]: a["Value"] for a in lb["LoadBalancerAttributes"]}
    assert attributes["access_logs.s3.enabled"] == "true"
    assert attributes["routing.http.drop_invalid_header_fields.enabled"] == "true"
    _, listener = _one(served, "AWS::ElasticLoadBalancingV2::Listener")
    assert (listener["LoadBalancerArn"], listener["Port"], listener["Protocol"]) == ({"Ref": lb_id}, port, "HTTP")
    group_id, group = _one(served, "AWS::ElasticLoadBalancingV2::TargetGroup")
    assert (group["Port"], group["TargetType"]) == (port, "ip")
    assert (group["HealthCheckPath"], group["Matcher"]) == (HEALTH_PATH, {"HttpCode": "200"})
    _, service = _one(served, "AWS::ECS::Service")
    assert service["LoadBalancers"] == [{"ContainerName": "Suggestions", "ContainerPort": port,
                                         "TargetGroupArn": {"Ref": group_id}}]


def test_given_the_security_groups_then_only_label_studio_tasks_reach_the_service(served: dict[str, Any]) -> None:
    """Label Studio's tasks -> the load balancer -> the service's tasks, on serve.port; no address range."""
    port = served["settings"].serve.port
    (lb_group,) = _one(served, "AWS::ElasticLoadBalancingV2::LoadBalancer")[1]["SecurityGroups"]
    (task_group,) = _one(served, "AWS::ECS::Service")[1]["NetworkConfiguration"]["AwsvpcConfiguration"][
        "SecurityGroups"]
    lb_id, task_id = lb_group["Fn::GetAtt"][0], task_group["Fn::GetAtt"][0]
    assert {lb_id, task_id} == set(_of_type(served, "AWS::EC2::SecurityGroup", ours=True))
    studio_tasks = _studio_service_group(served)

    def rule(source: str) -> dict[str, Any]:
        return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "SourceSecurityGroupId": _group_id(source)}

    for group_id, source in ((lb_id, studio_tasks), (task_id, lb_id)):
        rules = _ingress_of(served, group_id)
        assert [{k: r[k] for k in ("IpProtocol", "FromPort", "ToPort", "SourceSecurityGroupId") if k in r}
                for r in rules] == [rule(source)], group_id
        assert not [r for r in rules if "CidrIp" in r or "CidrIpv6" in r or "SourcePrefixListId" in r]
    # the load balancer talks to its targets only
    lb_egress = served["json"]["Resources"][lb_id]["Properties"].get("SecurityGroupEgress", [])
    assert not [r for r in lb_egress if r.get("CidrIp") == "0.0.0.0/0" and r.get("IpProtocol") == "-1"]
    separate = [r["Properties"] for r in _of_type(served, "AWS::EC2::SecurityGroupEgress").values()
                if r["Properties"]["GroupId"] == _group_id(lb_id)]
    assert [r["DestinationSecurityGroupId"] for r in separate] == [_group_id(task_id)]


def test_given_the_service_then_label_studio_admits_its_tasks_over_https(served: dict[str, Any]) -> None:
    """Images a task names by a Label Studio URL: the one rule the service adds to Label Studio's groups."""
    _, studio_lb = _one(served, "AWS::ElasticLoadBalancingV2::LoadBalancer", ours=False)
    (task_group,) = _one(served, "AWS::ECS::Service")[1]["NetworkConfiguration"]["AwsvpcConfiguration"][
        "SecurityGroups"]
    added = [r["Properties"] for r in _of_type(served, "AWS::EC2::SecurityGroupIngress").values()
             if r["Properties"].get("SourceSecurityGroupId") == task_group]
    assert [(r["GroupId"], r["FromPort"], r["ToPort"]) for r in added] == [(studio_lb["SecurityGroups"][0], 443, 443)]


def _studio_environment(built: dict[str, Any]) -> dict[str, Any]:
    _, task = _one(built, "AWS::ECS::TaskDefinition", ours=False)
    (container,) = task["ContainerDefinitions"]
    return {e["Name"]: e["Value"] for e in container["Environment"]}


def test_given_the_service_then_label_studio_may_call_a_backend_at_a_private_address(
        served: dict[str, Any], studio_only: dict[str, Any]) -> None:
    """Label Studio 1.23 refuses ML backends at private addresses unless told otherwise; the internal load
    balancer's are private. Switched off only where the service is hosted."""
    assert _studio_environment(served)[ML_BLOCK_LOCAL_IP_ENV] == "false"
    assert ML_BLOCK_LOCAL_IP_ENV not in _studio_environment(studio_only)


def test_given_the_serve_command_then_it_reads_the_variable_the_stack_sets() -> None:
    serve_command = pytest.importorskip("alp.commands.serve")
    assert serve_command.ALLOWED_HOSTS_ENV == ALLOWED_HOSTS_ENV


def test_given_the_autoscaling_then_it_tracks_the_cpu_target_between_the_bounds(served: dict[str, Any]) -> None:
    serve = served["settings"].serve
    service_id, _ = _one(served, "AWS::ECS::Service")
    target_id, target = _one(served, "AWS::ApplicationAutoScaling::ScalableTarget")
    assert (target["MinCapacity"], target["MaxCapacity"]) == (serve.min_tasks, serve.max_tasks)
    assert target["ScalableDimension"] == "ecs:service:DesiredCount" and target["ServiceNamespace"] == "ecs"
    assert {"Fn::GetAtt": [service_id, "Name"]} in target["ResourceId"]["Fn::Join"][1]
    _, policy = _one(served, "AWS::ApplicationAutoScaling::ScalingPolicy")
    assert policy["PolicyType"] == "TargetTrackingScaling" and policy["ScalingTargetId"] == {"Ref": target_id}
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["PredefinedMetricSpecification"] == {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"}
    assert tracking["TargetValue"] == serve.target_cpu_percent


# --- the task role ----------------------------------------------------------------------------------------------
def _statements_of_role(built: dict[str, Any], role_id: str) -> list[dict[str, Any]]:
    return [st for policy in _of_type(built, "AWS::IAM::Policy").values()
            if {"Ref": role_id} in policy["Properties"]["Roles"]
            for st in policy["Properties"]["PolicyDocument"]["Statement"]]


def test_given_the_task_role_then_it_reads_the_registry_bundles_settings_and_images_only(
        served: dict[str, Any]) -> None:
    storage = served["settings"].storage
    _, task = _one(served, "AWS::ECS::TaskDefinition")
    role_id = task["TaskRoleArn"]["Fn::GetAtt"][0]
    role = served["json"]["Resources"][role_id]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert "ManagedPolicyArns" not in role
    buckets = {k: json.dumps(v["Properties"]["BucketName"]) for k, v in _of_type(served, "AWS::S3::Bucket").items()}
    data = next(k for k, name in buckets.items() if name.endswith('-data"]]}'))
    unlabeled = next(k for k, name in buckets.items() if "unlabeled" in name)

    def objects(bucket: str, key: str) -> dict[str, Any]:
        return {"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, f"/{key}*"]]}

    def sagemaker(resource: str) -> dict[str, Any]:
        return {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":sagemaker:", {"Ref": "AWS::Region"}, ":",
                                  {"Ref": "AWS::AccountId"}, f":{resource}"]]}

    group = f"{storage.resource_prefix}-model-bundles"
    read = ["s3:GetObject", "s3:GetObjectVersion"]
    assert _statements_of_role(served, role_id) == [
        {"Action": read, "Effect": "Allow",
         "Resource": [objects(data, storage.config_key), objects(data, storage.models_prefix)]},
        {"Action": read, "Effect": "Allow", "Resource": objects(unlabeled, storage.unlabeled_prefix)},
        {"Action": "sagemaker:DescribeModelPackageGroup", "Effect": "Allow",
         "Resource": sagemaker(f"model-package-group/{group}")},
        {"Action": "sagemaker:DescribeModelPackage", "Effect": "Allow",
         "Resource": sagemaker(f"model-package/{group}/*")},
        # no resource-level permissions exist for it (the group is a request filter)
        {"Action": "sagemaker:ListModelPackages", "Effect": "Allow", "Resource": "*"},
    ]


def test_given_the_service_roles_then_no_statement_grants_every_action(served: dict[str, Any]) -> None:
    roles = set(_of_type(served, "AWS::IAM::Role", ours=True))
    assert len(roles) == 2  # the task role and the execution role (image pull, log streams)
    statements = [st for role in roles for st in _statements_of_role(served, role)]
    actions = [a for st in statements for a in _as_list(st["Action"])]
    assert actions and not [a for a in actions if a == "*" or a.endswith(":*")]
    assert not [st for st in statements if st.get("NotAction") or st.get("NotResource")]
    stars = sorted(a for st in statements if "*" in _as_list(st["Resource"]) for a in _as_list(st["Action"]))
    assert stars == ["ecr:GetAuthorizationToken", "sagemaker:ListModelPackages"]  # neither takes a resource


# --- outputs, and nothing without the setting ------------------------------------------------------------------
def test_given_the_outputs_then_the_internal_url_is_one(served: dict[str, Any]) -> None:
    lb_id, _ = _one(served, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    assert served["json"]["Outputs"]["SuggestionServiceUrl"]["Value"] == {"Fn::Join": ["", [
        "http://", {"Fn::GetAtt": [lb_id, "DNSName"]}, f":{served['settings'].serve.port}"]]}


def test_given_serve_hosted_false_then_none_of_it_is_in_the_template(studio_only: dict[str, Any]) -> None:
    assert studio_only["settings"].serve.hosted is False and studio_only["settings"].labeling.studio.hosted
    assert [k for k in studio_only["json"]["Resources"] if k.startswith(OURS)] == []
    assert [t for t in SERVICE_TYPES if _of_type(studio_only, t, ours=True)] == []
    assert len(_of_type(studio_only, "AWS::ECS::Service")) == 1  # Label Studio's own
    assert len(_of_type(studio_only, "AWS::ElasticLoadBalancingV2::LoadBalancer")) == 1
    assert "SuggestionServiceUrl" not in studio_only["json"]["Outputs"]
    dockerfiles = [i["source"]["dockerFile"] for i in studio_only["assets"].get("dockerImages", {}).values()]
    assert DOCKERFILE not in dockerfiles
    template = json.dumps(studio_only["json"])
    assert ALLOWED_HOSTS_ENV not in template and "suggestion" not in template.lower()


# --- settings the stack refuses ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("overrides", "message"), [
    ({"serve.hosted": True},
     r'settings\.serve\.hosted is true but labeling\.backend is "ground-truth", not "label-studio"'),
    ({**HOSTED, "labeling.studio.hosted": False, "labeling.studio.url": "https://labels.example.com",
      "serve.hosted": True},
     r"settings\.serve\.hosted is true but labeling\.studio\.hosted is false"),
    ({**HOSTED, "serve.hosted": True, "serve.min_tasks": 3, "serve.max_tasks": 2},
     r"settings\.serve\.min_tasks \(3\) is above serve\.max_tasks \(2\)"),
], ids=["ground-truth", "studio-not-hosted", "min-above-max"])
def test_given_unusable_serve_settings_then_the_synth_refuses_them(
        tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    settings = Settings().with_overrides(overrides)
    app = cdk.App(outdir=str(tmp_path / "cdk.out"))
    with pytest.raises(ValueError, match=message):
        ActiveLabelingStack(app, "Refused", settings=settings, lambda_code_dir=tmp_path / "unused",
                            env=cdk.Environment(region=settings.region))
    assert app.node.find_child("Refused").node.children == []  # refused before any resource was made


def test_given_the_fixture_settings_or_no_hosted_service_then_nothing_is_refused() -> None:
    """The refusals above are about their one change: the served settings pass, and so does serve.hosted false
    with any labeling backend."""
    check_serve_settings(Settings().with_overrides(SERVED))
    check_serve_settings(Settings())
    check_serve_settings(Settings().with_overrides({**HOSTED, "labeling.studio.hosted": False}))
