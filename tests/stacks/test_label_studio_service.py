"""Label Studio hosted by the stack (``labeling.backend: "label-studio"``), checked on the synthesized template.

The app is synthesized the way ``make synth`` does it (``app.py``, the cdk-nag pack added: an unacknowledged
finding fails the synthesis) through the per-settings cache of :mod:`alp.cloudformation.synth`, once per
shape: an internal load balancer (the default ``allowed_cidr``, a private network) and an internet-facing one
(a public ``allowed_cidr``). The default settings' synthesis comes from the same cache.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("aws_cdk")

import aws_cdk as cdk  # noqa: E402
from aws_cdk import aws_s3 as s3  # noqa: E402
from aws_cdk.assertions import Template  # noqa: E402
from paths import REPO_ROOT  # noqa: E402
from test_cdk_nag import LABEL_STUDIO, _violations  # noqa: E402
from test_cfn_lint import assert_cfn_lint_clean  # noqa: E402

from alp.cloudformation.synth import synthesize_cached  # noqa: E402
from alp.settings import Settings, settings_from_cdk_json  # noqa: E402
from stacks.label_studio_service import (  # noqa: E402
    STUDIO_TOKEN_SECRET_ENV,
    STUDIO_URL_ENV,
    TOKEN_LENGTH,
    LabelStudioService,
)

CERTIFICATE = LABEL_STUDIO["alp:labeling.studio.certificate_arn"]
PUBLIC_CIDR = LABEL_STUDIO["alp:labeling.studio.allowed_cidr"]
HOSTED = {"labeling.backend": "label-studio", "labeling.studio.certificate_arn": CERTIFICATE}
SHAPES = {"internal": HOSTED, "internet-facing": {**HOSTED, "labeling.studio.allowed_cidr": PUBLIC_CIDR}}
STUDIO_TYPES = ("AWS::EC2::VPC", "AWS::EC2::NatGateway", "AWS::EC2::FlowLog", "AWS::RDS::DBInstance",
                "AWS::ECS::Cluster", "AWS::ECS::Service", "AWS::ECS::TaskDefinition",
                "AWS::ElasticLoadBalancingV2::LoadBalancer", "AWS::ElasticLoadBalancingV2::Listener",
                "AWS::SecretsManager::Secret")
# CDK's own statement for CodeBuild projects in a VPC (acknowledged in stacks/nag.py); the Describe* calls take
# no resource and the network interfaces do not exist before the build.
CODEBUILD_VPC_ACTIONS = {"ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DeleteNetworkInterface",
                         "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups", "ec2:DescribeDhcpOptions",
                         "ec2:DescribeVpcs"}


def _checkout_settings(overrides: dict[str, Any] | None = None) -> Settings:
    settings = settings_from_cdk_json(REPO_ROOT / "cdk.json")
    return settings.with_overrides(overrides) if overrides else settings


def _synth(settings: Settings) -> dict[str, Any]:
    outdir = synthesize_cached(settings)  # app.py with the nag pack: a finding raises SynthError
    templates = sorted(outdir.glob("*.template.json"))
    assert len(templates) == 1
    return {"settings": settings, "outdir": outdir, "path": templates[0], "json": json.loads(templates[0].read_text())}


@pytest.fixture(scope="module", params=sorted(SHAPES))
def hosted(request: pytest.FixtureRequest) -> dict[str, Any]:
    built = _synth(_checkout_settings(SHAPES[request.param]))
    built["shape"] = request.param
    return built


@pytest.fixture(scope="module")
def internal() -> dict[str, Any]:
    return _synth(_checkout_settings(SHAPES["internal"]))


@pytest.fixture(scope="module")
def default() -> dict[str, Any]:
    return _synth(_checkout_settings())


def _of_type(built: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in built["json"]["Resources"].items() if v["Type"] == type_}


def _one(built: dict[str, Any], type_: str) -> tuple[str, dict[str, Any]]:
    found = _of_type(built, type_)
    assert len(found) == 1, f"{type_}: {sorted(found)}"
    (logical_id, resource), = found.items()
    return logical_id, resource["Properties"]


def _container(built: dict[str, Any]) -> dict[str, Any]:
    _, task = _one(built, "AWS::ECS::TaskDefinition")
    (container,) = task["ContainerDefinitions"]
    return dict(container)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements_of_role(built: dict[str, Any], role_id: str) -> list[dict[str, Any]]:
    return [st for policy in _of_type(built, "AWS::IAM::Policy").values()
            if {"Ref": role_id} in policy["Properties"]["Roles"]
            for st in policy["Properties"]["PolicyDocument"]["Statement"]]


def _subnet_type(built: dict[str, Any], subnet_ref: dict[str, str]) -> str:
    subnet = built["json"]["Resources"][subnet_ref["Ref"]]["Properties"]
    return next(t["Value"] for t in subnet["Tags"] if t["Key"] == "aws-cdk:subnet-type")


# --- synthesis: nag and lint ---------------------------------------------------------------------------
def test_given_the_hosted_studio_then_the_nag_pack_reports_nothing(hosted: dict[str, Any]) -> None:
    """The synthesis itself would have failed on a finding; the report, when written, lists none."""
    report = hosted["outdir"] / "validation-report.json"
    if report.exists():
        assert [v for v in _violations(report) if v[0].startswith("AwsSolutions")] == []


def test_given_the_hosted_studio_then_cfn_lint_reports_nothing(hosted: dict[str, Any]) -> None:
    assert_cfn_lint_clean([str(hosted["path"])])


def test_given_the_default_settings_then_none_of_it_is_created(default: dict[str, Any]) -> None:
    assert default["settings"].labeling.backend == "ground-truth"
    assert [t for t in STUDIO_TYPES if _of_type(default, t)] == []
    for project in _of_type(default, "AWS::CodeBuild::Project").values():
        assert "VpcConfig" not in project["Properties"]
        names = {v["Name"] for v in project["Properties"]["Environment"]["EnvironmentVariables"]}
        assert not names & {STUDIO_URL_ENV, STUDIO_TOKEN_SECRET_ENV}
    assert not any(key.startswith("LabelStudio") for key in default["json"].get("Outputs", {}))


# --- the service -----------------------------------------------------------------------------------------
def test_given_the_service_then_it_runs_the_image_on_fargate_in_private_subnets(hosted: dict[str, Any]) -> None:
    studio = hosted["settings"].labeling.studio
    _, service = _one(hosted, "AWS::ECS::Service")
    assert service["LaunchType"] == "FARGATE"
    assert service["DesiredCount"] == studio.desired_count
    network = service["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "DISABLED"
    assert {_subnet_type(hosted, s) for s in network["Subnets"]} == {"Private"}
    _, task = _one(hosted, "AWS::ECS::TaskDefinition")
    assert task["RequiresCompatibilities"] == ["FARGATE"]
    assert (task["Cpu"], task["Memory"]) == (str(studio.cpu), str(studio.memory_mib))
    container = _container(hosted)
    assert container["Image"] == studio.image
    assert container["Command"] == ["label-studio-uwsgi"]  # the image's production server, not the dev server
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    _, cluster = _one(hosted, "AWS::ECS::Cluster")
    assert {"Name": "containerInsights", "Value": "enabled"} in cluster["ClusterSettings"]


def test_given_the_container_then_signup_needs_an_invitation_and_postgres_is_used(hosted: dict[str, Any]) -> None:
    env = {e["Name"]: e["Value"] for e in _container(hosted)["Environment"]}
    db_id, _ = _one(hosted, "AWS::RDS::DBInstance")
    assert env["LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK"] == "true"
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert env["DJANGO_DB"] == "default"
    assert env["POSTGRE_HOST"] == {"Fn::GetAtt": [db_id, "Endpoint.Address"]}
    assert env["POSTGRE_PORT"] == {"Fn::GetAtt": [db_id, "Endpoint.Port"]}
    assert env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] == "false"
    host = json.dumps(env["LABEL_STUDIO_HOST"])
    assert host.startswith('{"Fn::Join": ["", ["https://", {"Fn::GetAtt": ["') and "DNSName" in host
    assert env["CSRF_TRUSTED_ORIGINS"] == env["LABEL_STUDIO_HOST"]


def test_given_the_task_definition_then_no_secret_is_plain_text(hosted: dict[str, Any]) -> None:
    container = _container(hosted)
    secrets = {s["Name"]: json.dumps(s["ValueFrom"]) for s in container["Secrets"]}
    assert set(secrets) == {"POSTGRE_USER", "POSTGRE_PASSWORD", "SECRET_KEY", "LABEL_STUDIO_USERNAME",
                            "LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_USER_TOKEN"}
    env = {e["Name"] for e in container["Environment"]}
    assert not env & set(secrets)
    assert [n for n in env if "PASSWORD" in n or n.endswith(("_KEY", "_USER_TOKEN"))] == []
    secret_ids = set(_of_type(hosted, "AWS::SecretsManager::Secret")) | set(
        _of_type(hosted, "AWS::SecretsManager::SecretTargetAttachment"))
    for name, value_from in secrets.items():
        assert any(f'"Ref": "{sid}"' in value_from for sid in secret_ids), name
    _, task = _one(hosted, "AWS::ECS::TaskDefinition")
    assert "resolve:secretsmanager" not in json.dumps(task)  # a dynamic reference would land in plain text


def test_given_the_api_token_then_it_is_generated_in_secrets_manager(hosted: dict[str, Any]) -> None:
    settings = hosted["settings"]
    tokens = [p for p in (r["Properties"] for r in _of_type(hosted, "AWS::SecretsManager::Secret").values())
              if p["Name"] == f"{settings.storage.resource_prefix}-label-studio-api-token"]
    assert len(tokens) == 1
    generator = tokens[0]["GenerateSecretString"]
    assert generator["PasswordLength"] == TOKEN_LENGTH and generator["ExcludePunctuation"] is True


# --- the database ------------------------------------------------------------------------------------------
def test_given_the_database_then_it_is_encrypted_private_and_its_password_generated(hosted: dict[str, Any]) -> None:
    db_id, db = _one(hosted, "AWS::RDS::DBInstance")
    assert db["Engine"] == "postgres"
    assert db["StorageEncrypted"] is True
    assert db["PubliclyAccessible"] is False
    assert db["DeletionProtection"] is True
    assert db["BackupRetentionPeriod"] >= 1
    assert hosted["json"]["Resources"][db_id]["DeletionPolicy"] == "Snapshot"
    password = json.dumps(db["MasterUserPassword"])
    assert password.startswith('{"Fn::Join": ["", ["{{resolve:secretsmanager:", {"Ref": "')
    (secret_id,) = [k for k in _of_type(hosted, "AWS::SecretsManager::Secret") if f'"Ref": "{k}"' in password]
    assert "GenerateSecretString" in hosted["json"]["Resources"][secret_id]["Properties"]
    _, group = _one(hosted, "AWS::RDS::DBSubnetGroup")
    assert {_subnet_type(hosted, s) for s in group["SubnetIds"]} == {"Isolated"}


def test_given_the_database_then_only_the_tasks_reach_it(hosted: dict[str, Any]) -> None:
    _, db = _one(hosted, "AWS::RDS::DBInstance")
    (db_group,) = db["VPCSecurityGroups"]
    _, service = _one(hosted, "AWS::ECS::Service")
    (task_group,) = service["NetworkConfiguration"]["AwsvpcConfiguration"]["SecurityGroups"]
    rules = [r["Properties"] for r in _of_type(hosted, "AWS::EC2::SecurityGroupIngress").values()
             if r["Properties"]["GroupId"] == db_group]
    assert [r["SourceSecurityGroupId"] for r in rules] == [task_group]


# --- the load balancer and who reaches it ------------------------------------------------------------------
def test_given_the_load_balancer_then_it_serves_https_with_the_certificate(hosted: dict[str, Any]) -> None:
    listeners = [r["Properties"] for r in _of_type(hosted, "AWS::ElasticLoadBalancingV2::Listener").values()]
    https = [listener for listener in listeners if listener["Protocol"] == "HTTPS"]
    assert len(https) == 1 and https[0]["Port"] == 443
    assert https[0]["Certificates"] == [{"CertificateArn": CERTIFICATE}]
    assert https[0]["SslPolicy"].startswith("ELBSecurityPolicy-TLS13")
    plain = [listener for listener in listeners if listener["Protocol"] == "HTTP"]
    assert [a["Type"] for listener in plain for a in listener["DefaultActions"]] == ["redirect"]
    assert plain[0]["DefaultActions"][0]["RedirectConfig"]["Protocol"] == "HTTPS"
    _, group = _one(hosted, "AWS::ElasticLoadBalancingV2::TargetGroup")
    assert (group["HealthCheckPath"], group["Matcher"]) == ("/health", {"HttpCode": "200"})
    _, lb = _one(hosted, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    attributes = {a["Key"]: a["Value"] for a in lb["LoadBalancerAttributes"]}
    assert attributes["access_logs.s3.enabled"] == "true"
    assert attributes["routing.http.drop_invalid_header_fields.enabled"] == "true"


def test_given_the_allowed_network_then_no_ingress_is_wider(hosted: dict[str, Any]) -> None:
    """Every CIDR ingress of the template is the allowed network, except (internet-facing) the NAT gateway's
    own address as a /32, through which the pipeline's steps reach the public load balancer."""
    allowed = hosted["settings"].labeling.studio.allowed_cidr
    (eip,) = _of_type(hosted, "AWS::EC2::EIP")
    nat_address = {"Fn::Join": ["", [{"Fn::GetAtt": [eip, "PublicIp"]}, "/32"]]}
    cidrs = []
    for group in _of_type(hosted, "AWS::EC2::SecurityGroup").values():
        cidrs += [r.get("CidrIp", r.get("CidrIpv6")) for r in group["Properties"].get("SecurityGroupIngress", [])]
    cidrs += [r["Properties"].get("CidrIp", r["Properties"].get("CidrIpv6"))
              for r in _of_type(hosted, "AWS::EC2::SecurityGroupIngress").values()]
    cidrs = [c for c in cidrs if c is not None]
    expected = [allowed, allowed] + ([nat_address] if hosted["shape"] == "internet-facing" else [])
    assert sorted(map(json.dumps, cidrs)) == sorted(map(json.dumps, expected))
    _, lb = _one(hosted, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    scheme, subnet_type = (("internet-facing", "Public") if hosted["shape"] == "internet-facing"
                           else ("internal", "Private"))
    assert lb["Scheme"] == scheme
    assert {_subnet_type(hosted, s) for s in lb["Subnets"]} == {subnet_type}


def test_given_the_vpc_then_its_flow_logs_go_to_the_access_log_bucket(hosted: dict[str, Any]) -> None:
    _, flow_log = _one(hosted, "AWS::EC2::FlowLog")
    assert flow_log["LogDestinationType"] == "s3" and flow_log["TrafficType"] == "ALL"
    assert len(_of_type(hosted, "AWS::EC2::NatGateway")) == 1


# --- grants ----------------------------------------------------------------------------------------------------
def test_given_the_task_role_then_it_reads_only_the_unlabeled_images_and_the_pinned_copies(hosted: dict[str, Any]) -> None:
    """Label Studio's S3 source storage lists and presigns the images with the task role, no access keys: the
    uploads, and the pinned copies of a dataset version's images (gold items) in the data bucket."""
    storage = hosted["settings"].storage
    _, task = _one(hosted, "AWS::ECS::TaskDefinition")
    role_id = task["TaskRoleArn"]["Fn::GetAtt"][0]

    def bucket(part: str) -> str:
        return next(k for k, v in _of_type(hosted, "AWS::S3::Bucket").items()
                    if json.dumps(v["Properties"]["BucketName"]).rstrip('"]}').endswith(part))

    statements = _statements_of_role(hosted, role_id)
    assert statements == [
        statement
        for name, prefix in ((bucket("unlabeled"), storage.unlabeled_prefix), (bucket("data"), storage.images_prefix))
        for statement in (
            {"Action": ["s3:GetObject", "s3:GetObjectVersion"], "Effect": "Allow",
             "Resource": {"Fn::Join": ["", [{"Fn::GetAtt": [name, "Arn"]}, f"/{prefix}*"]]}},
            {"Action": "s3:ListBucket", "Effect": "Allow", "Resource": {"Fn::GetAtt": [name, "Arn"]},
             "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}}})
    ]
    assert _of_type(hosted, "AWS::IAM::AccessKey") == {} and _of_type(hosted, "AWS::IAM::User") == {}


def test_given_the_labeling_steps_then_they_run_in_the_vpc_and_read_only_the_token(hosted: dict[str, Any]) -> None:
    prefix = hosted["settings"].storage.resource_prefix
    projects = {p["Properties"]["Name"]: p["Properties"] for p in _of_type(hosted, "AWS::CodeBuild::Project").values()}
    labeling = {name: p for name, p in projects.items() if name.startswith(f"{prefix}-labeling-")}
    assert labeling and len(labeling) < len(projects)
    for name, project in projects.items():
        env = {v["Name"]: v["Value"] for v in project["Environment"]["EnvironmentVariables"]}
        if name not in labeling:
            assert "VpcConfig" not in project and STUDIO_URL_ENV not in env
            continue
        assert project["VpcConfig"]["SecurityGroupIds"] and project["VpcConfig"]["Subnets"]
        assert {_subnet_type(hosted, s) for s in project["VpcConfig"]["Subnets"]} == {"Private"}
        assert env[STUDIO_TOKEN_SECRET_ENV] == f"{prefix}-label-studio-api-token"
        assert "DNSName" in json.dumps(env[STUDIO_URL_ENV])
    # the labeling pipeline's and the completion pipeline's (alp-labeling-completion-*) build roles
    role_ids = {p["ServiceRole"]["Fn::GetAtt"][0] for p in labeling.values()}
    assert len(role_ids) == 2 and any(name.startswith(f"{prefix}-labeling-completion-") for name in labeling)
    token_id = next(k for k, v in _of_type(hosted, "AWS::SecretsManager::Secret").items()
                    if v["Properties"]["Name"] == f"{prefix}-label-studio-api-token")
    for role_id in role_ids:
        secret_reads = [st for st in _statements_of_role(hosted, role_id)
                        if any(a.startswith("secretsmanager:") for a in _as_list(st["Action"]))]
        assert secret_reads == [{"Action": "secretsmanager:GetSecretValue", "Effect": "Allow",
                                 "Resource": {"Ref": token_id}}], role_id


def test_given_every_statement_then_star_resources_are_only_codebuilds_vpc_calls(hosted: dict[str, Any]) -> None:
    stars = [st for policy in _of_type(hosted, "AWS::IAM::Policy").values()
             for st in policy["Properties"]["PolicyDocument"]["Statement"] if "*" in _as_list(st["Resource"])]
    new = [st for st in stars if set(_as_list(st["Action"])) & CODEBUILD_VPC_ACTIONS]
    # one per build role in the VPC: the labeling and the labeling-completion pipelines'
    assert [set(_as_list(st["Action"])) for st in new] == [CODEBUILD_VPC_ACTIONS] * 2


def test_given_the_outputs_then_the_url_and_the_secrets_are_named(internal: dict[str, Any]) -> None:
    outputs = internal["json"]["Outputs"]
    assert {"LabelStudioUrl", "LabelStudioLoadBalancerDnsName", "LabelStudioTokenSecretArn",
            "LabelStudioAdminSecretArn"} <= set(outputs)
    token_id = next(k for k, v in _of_type(internal, "AWS::SecretsManager::Secret").items()
                    if v["Properties"]["Name"].endswith("-label-studio-api-token"))
    assert outputs["LabelStudioTokenSecretArn"]["Value"] == {"Ref": token_id}


# --- settings the construct refuses --------------------------------------------------------------------------
def _construct(overrides: dict[str, Any]) -> None:
    settings = Settings().with_overrides({**HOSTED, **overrides})
    stack = cdk.Stack(cdk.App(), "Bare", env=cdk.Environment(region=settings.region))
    LabelStudioService(stack, "LabelStudio", settings=settings,
                       unlabeled_bucket=s3.Bucket(stack, "Unlabeled"), data_bucket=s3.Bucket(stack, "Data"),
                       access_logs=s3.Bucket(stack, "Logs"))


@pytest.mark.parametrize(("overrides", "message"), [
    ({"labeling.studio.certificate_arn": None}, r"settings\.labeling\.studio\.certificate_arn is required when "
                                                r"labeling\.backend is \"label-studio\""),
    ({"labeling.studio.certificate_arn": CERTIFICATE.replace("us-east-1", "eu-west-1")},
     r"certificate_arn is in eu-west-1, but a load balancer takes certificates of its own region only"),
    ({"labeling.studio.allowed_cidr": "0.0.0.0/0"}, r"allowed_cidr must name the annotators' network"),
    ({"labeling.studio.allowed_cidr": "10.0.0.1/8"}, r"allowed_cidr '10\.0\.0\.1/8' is not an IPv4 network"),
    ({"labeling.studio.url": "https://labels.example.com/studio"}, r"served at the root of an https URL"),
    ({"labeling.studio.url": "http://labels.example.com"}, r"served at the root of an https URL"),
], ids=["no-certificate", "certificate-region", "whole-internet", "bad-cidr", "url-path", "url-http"])
def test_given_unusable_studio_settings_then_the_construct_names_the_setting(
        overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _construct(overrides)


def test_given_a_url_then_it_is_the_host_and_the_steps_address() -> None:
    settings = Settings().with_overrides({**HOSTED, "labeling.studio.url": "https://labels.example.com/"})
    stack = cdk.Stack(cdk.App(), "Bare", env=cdk.Environment(region=settings.region))
    studio = LabelStudioService(stack, "LabelStudio", settings=settings,
                                unlabeled_bucket=s3.Bucket(stack, "Unlabeled"), data_bucket=s3.Bucket(stack, "Data"),
                                access_logs=s3.Bucket(stack, "Logs"))
    assert studio.url == "https://labels.example.com"
    assert studio.client_environment[STUDIO_URL_ENV] == "https://labels.example.com"


def test_given_images_at_the_bucket_root_then_the_listing_needs_no_prefix_condition() -> None:
    """Without a prefix Label Studio's storage checks itself with HeadBucket, which carries no s3:prefix."""
    settings = Settings().with_overrides({**HOSTED, "storage.unlabeled_prefix": ""})
    stack = cdk.Stack(cdk.App(), "Bare", env=cdk.Environment(region=settings.region))
    LabelStudioService(stack, "LabelStudio", settings=settings,
                       unlabeled_bucket=s3.Bucket(stack, "Unlabeled"), data_bucket=s3.Bucket(stack, "Data"),
                       access_logs=s3.Bucket(stack, "Logs"))
    statements = [st for policy in Template.from_stack(stack).find_resources("AWS::IAM::Policy").values()
                  for st in policy["Properties"]["PolicyDocument"]["Statement"] if st["Action"] == "s3:ListBucket"]
    unlabeled = [st for st in statements if "Unlabeled" in json.dumps(st["Resource"])]
    assert len(unlabeled) == 1 and "Condition" not in unlabeled[0]
