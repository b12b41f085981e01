"""Label Studio hosted by the stack: the opt-in labeling backend ``labeling.backend: "label-studio"``.

What it creates: a VPC of its own (two AZs, one NAT gateway, flow logs), PostgreSQL on RDS (encrypted, in
isolated subnets, credentials generated into Secrets Manager), an ECS cluster with one Fargate service
running ``labeling.studio.image`` and an Application Load Balancer that serves it over HTTPS only (the ACM
certificate of ``labeling.studio.certificate_arn``; port 80 answers with a redirect) to
``labeling.studio.allowed_cidr`` and to the labeling pipeline's CodeBuild steps.

The load balancer is internal when ``allowed_cidr`` is a private network (annotators come in over a VPN or
peering into this VPC) and internet-facing when it is a public one (an office's or a VPN egress's
addresses). The pipeline's steps run inside the VPC (:attr:`LabelStudioService.client_network`): they reach
an internal load balancer through :attr:`LabelStudioService.client_security_group`, an internet-facing one
through the NAT gateway, whose address the load balancer admits too.

Label Studio reads the images through its S3 source storage with the *task role* (no access keys): the
role reads and lists the unlabeled bucket under its images prefix only, and the presigned URLs the
annotators' browsers load are signed with it. Sign-up without an invitation link is switched off; the first
administrator, the API token and Django's secret key are generated secrets, handed to the container as ECS
secrets (never as plain environment variables).

Environment of the labeling pipeline's steps (:attr:`LabelStudioService.client_environment`), read by the
Label Studio labeling backend:

``ALP_STUDIO_URL``
    The https URL of the service: ``labeling.studio.url`` when set (the certificate's DNS name, pointed at
    the load balancer), else ``https://<load balancer DNS name>``, a name no certificate covers (browsers
    warn, and a client that verifies TLS refuses it): set ``labeling.studio.url`` for real use.
``ALP_STUDIO_TOKEN_SECRET``
    Name of the Secrets Manager secret whose SecretString is the API token (40 characters, a legacy token:
    ``Authorization: Token <token>``). Label Studio plants it for the first administrator at its first start;
    the steps may read this one secret (``secretsmanager:GetSecretValue``) and nothing else.
"""

from __future__ import annotations

import ipaddress
import json
from urllib.parse import urlsplit

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_rds as rds
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct, IConstruct

from alp.settings import Settings
from stacks.iam import READ_OBJECT, ScopedPolicy
from stacks.secure_defaults import acknowledge, log_group
from stacks.step_pipeline import StepNetwork

STUDIO_URL_ENV = "ALP_STUDIO_URL"
STUDIO_TOKEN_SECRET_ENV = "ALP_STUDIO_TOKEN_SECRET"  # noqa: S105  # nosec B105
CONTAINER_PORT = 8080  # uwsgi of Label Studio's image (deploy/uwsgi.ini)
DATABASE_NAME = "labelstudio"
DATABASE_USER = "labelstudio"
# The first administrator's login; the password is generated. Django accepts it as an e-mail address.
ADMIN_USERNAME = "admin@label-studio.local"
TOKEN_LENGTH = 40  # Label Studio's token key column holds at most 40 characters
_CERTIFICATE_REGION = 3  # arn:aws:acm:<region>:...
_ON, _OFF = "true", "false"  # Label Studio's boolean switches


class LabelStudioService(Construct):
    """Label Studio on Fargate behind an HTTPS load balancer, PostgreSQL on RDS; see the module docstring.

    Attributes: ``vpc``; ``url`` (the https URL, a token when it is the load balancer's own name);
    ``token_secret`` (the API token) and ``token_secret_name``; ``admin_secret`` (the first administrator's
    login); ``client_security_group`` (what clients inside the VPC use to reach the load balancer);
    ``client_network`` (where such clients run, for :class:`stacks.step_pipeline.StepPipeline`);
    ``client_environment`` (``ALP_STUDIO_URL``, ``ALP_STUDIO_TOKEN_SECRET``); ``database``, ``service``,
    ``load_balancer`` and ``load_balancer_security_group``; ``cluster`` (the ECS cluster, which other services
    of the VPC may share) and ``service_security_group`` (the tasks' group: the source a service reachable only
    from Label Studio admits).
    """

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings, unlabeled_bucket: s3.IBucket,
                 data_bucket: s3.IBucket, access_logs: s3.IBucket) -> None:
        super().__init__(scope, construct_id)
        studio = settings.labeling.studio
        certificate_arn = self._certificate_arn(settings)
        self._check_url(settings)
        allowed = self._allowed_network(settings)
        internet_facing = allowed.is_global
        prefix = settings.storage.resource_prefix
        retention = settings.observability.log_retention_days

        # --- network: public subnets (load balancer, NAT), private ones (tasks, pipeline steps), isolated ones
        # (database). One NAT gateway: the tasks and steps only pull images and packages through it.
        nat_address = ec2.CfnEIP(self, "NatAddress", domain="vpc")
        self.vpc = ec2.Vpc(
            self, "Vpc", max_azs=2, nat_gateways=1,
            nat_gateway_provider=ec2.NatProvider.gateway(eip_allocation_ids=[nat_address.attr_allocation_id]),
            subnet_configuration=[
                ec2.SubnetConfiguration(name="Public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(name="Private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=22),
                ec2.SubnetConfiguration(name="Database", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24),
            ],
            # Nothing uses the default security group; locking it down takes a custom-resource Lambda.
            restrict_default_security_group=False,
        )
        self.vpc.add_flow_log("FlowLogs", destination=ec2.FlowLogDestination.to_s3(access_logs, "vpc-flow-logs/"))
        # S3 traffic of the tasks and the steps (images, artifacts) bypasses the NAT gateway, at no charge.
        self.vpc.add_gateway_endpoint("S3", service=ec2.GatewayVpcEndpointAwsService.S3)
        private = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)

        self.client_security_group = ec2.SecurityGroup(
            self, "ClientSecurityGroup", vpc=self.vpc, allow_all_outbound=True,
            description="Clients of Label Studio inside its VPC: the labeling pipeline CodeBuild steps")
        lb_group = ec2.SecurityGroup(self, "LoadBalancerSecurityGroup", vpc=self.vpc, allow_all_outbound=False,
                                     description="Label Studio load balancer: HTTPS from the annotator network")
        self.load_balancer_security_group = lb_group
        service_group = ec2.SecurityGroup(self, "ServiceSecurityGroup", vpc=self.vpc, allow_all_outbound=True,
                                          description="Label Studio tasks: HTTP from the load balancer only")
        self.service_security_group = service_group
        annotators = ec2.Peer.ipv4(str(allowed))
        lb_group.add_ingress_rule(annotators, ec2.Port.tcp(443), "HTTPS from the annotators' network")
        lb_group.add_ingress_rule(annotators, ec2.Port.tcp(80), "HTTP from the annotators' network (redirected)")
        lb_group.add_ingress_rule(self.client_security_group, ec2.Port.tcp(443), "HTTPS from the pipeline steps")

        # --- secrets: generated at deploy time, read by the container as ECS secrets --------------------
        self.token_secret_name = studio.token_secret_name or f"{prefix}-label-studio-api-token"
        self.token_secret = secretsmanager.Secret(
            self, "ApiToken", secret_name=self.token_secret_name,
            description="Label Studio API token of the first administrator (the labeling pipeline's client)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=TOKEN_LENGTH, exclude_punctuation=True, include_space=False))
        self.admin_secret = secretsmanager.Secret(
            self, "Admin", secret_name=f"{prefix}-label-studio-admin",
            description="Login of Label Studio's first administrator (who invites the annotators)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=json.dumps({"username": ADMIN_USERNAME}), generate_string_key="password",
                password_length=32, exclude_punctuation=True, include_space=False))
        django_key = secretsmanager.Secret(
            self, "DjangoSecretKey", secret_name=f"{prefix}-label-studio-django-secret-key",
            description="Django SECRET_KEY of Label Studio (signs sessions and tokens; shared by all tasks)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=64, exclude_punctuation=True, include_space=False))

        # --- database -------------------------------------------------------------------------------------
        self.database = rds.DatabaseInstance(
            self, "Database",
            # A minor version RDS still creates instances of (a bare "17" is refused); RDS applies later minor
            # versions itself (auto_minor_version_upgrade).
            engine=rds.DatabaseInstanceEngine.postgres(version=rds.PostgresEngineVersion.VER_17_9),
            instance_type=ec2.InstanceType(studio.database_instance_type),
            vpc=self.vpc, vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
            credentials=rds.Credentials.from_generated_secret(DATABASE_USER,
                                                              secret_name=f"{prefix}-label-studio-database"),
            database_name=DATABASE_NAME,
            storage_encrypted=True, storage_type=rds.StorageType.GP3, allocated_storage=20, max_allocated_storage=100,
            multi_az=False, publicly_accessible=False, deletion_protection=True,
            backup_retention=Duration.days(7), copy_tags_to_snapshot=True, removal_policy=RemovalPolicy.SNAPSHOT,
            auto_minor_version_upgrade=True, ca_certificate=rds.CaCertificate.RDS_CA_RSA2048_G1,
        )
        assert self.database.secret is not None  # from_generated_secret (attached to the instance)
        database_secret = self.database.secret
        self.database.connections.allow_default_port_from(service_group, "PostgreSQL from the Label Studio tasks")

        # --- load balancer --------------------------------------------------------------------------------
        self.load_balancer = elbv2.ApplicationLoadBalancer(
            self, "LoadBalancer", vpc=self.vpc, internet_facing=internet_facing, security_group=lb_group,
            vpc_subnets=ec2.SubnetSelection(
                subnet_type=ec2.SubnetType.PUBLIC if internet_facing else ec2.SubnetType.PRIVATE_WITH_EGRESS),
            drop_invalid_header_fields=True,
            idle_timeout=Duration.seconds(300),  # uwsgi's http-timeout: large imports and exports
        )
        if internet_facing:
            # Steps in the private subnets reach a public load balancer through the NAT gateway's address: a
            # group of its own, holding that one rule, so its acknowledgement covers nothing else.
            nat_group = ec2.SecurityGroup(self, "NatSecurityGroup", vpc=self.vpc, allow_all_outbound=False,
                                          description="Label Studio load balancer: HTTPS from the NAT gateway")
            nat_group.add_ingress_rule(ec2.Peer.ipv4(f"{nat_address.attr_public_ip}/32"), ec2.Port.tcp(443),
                                       "HTTPS from the pipeline steps (through the NAT gateway)")
            self.load_balancer.add_security_group(nat_group)
            acknowledge(nat_group, "AwsSolutions-EC23",
                        "The rule's source is the NAT gateway's own Elastic IP as a /32 (known at deploy time, so "
                        "cdk-nag cannot read it): the labeling pipeline's steps, not the open internet.")
        self.load_balancer.log_access_logs(access_logs, prefix="label-studio-alb")
        self.load_balancer.add_redirect(source_port=80, target_port=443, open=False)
        self.url = studio.url.rstrip("/") if studio.url else f"https://{self.load_balancer.load_balancer_dns_name}"

        # --- the service ----------------------------------------------------------------------------------
        task_role = iam.Role(self, "TaskRole", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
                             description="Label Studio tasks: S3 source storage over the unlabeled images")
        self._grant_source_storage(ScopedPolicy(task_role), unlabeled_bucket, settings.storage.unlabeled_prefix)
        # gold items come from a dataset version, whose lines name their images' pinned copies in the data bucket
        self._grant_source_storage(ScopedPolicy(task_role), data_bucket, settings.storage.images_prefix)
        task = ecs.FargateTaskDefinition(
            self, "Task", cpu=studio.cpu, memory_limit_mib=studio.memory_mib, task_role=task_role,
            runtime_platform=ecs.RuntimePlatform(cpu_architecture=ecs.CpuArchitecture.X86_64,
                                                 operating_system_family=ecs.OperatingSystemFamily.LINUX))
        task.add_container(
            "LabelStudio",
            image=ecs.ContainerImage.from_registry(studio.image),
            # The image's production mode: wait for the database, migrate, create the first administrator
            # (label-studio init), then uwsgi on 8080. The default command is the development server.
            command=["label-studio-uwsgi"],
            port_mappings=[ecs.PortMapping(container_port=CONTAINER_PORT)],
            logging=ecs.LogDrivers.aws_logs(
                stream_prefix="label-studio",
                log_group=log_group(self, "Logs", name=f"/ecs/{prefix}-label-studio", retention_days=retention)),
            environment=self._environment(),
            secrets={
                "POSTGRE_USER": ecs.Secret.from_secrets_manager(database_secret, "username"),
                "POSTGRE_PASSWORD": ecs.Secret.from_secrets_manager(database_secret, "password"),
                "SECRET_KEY": ecs.Secret.from_secrets_manager(django_key),
                "LABEL_STUDIO_USERNAME": ecs.Secret.from_secrets_manager(self.admin_secret, "username"),
                "LABEL_STUDIO_PASSWORD": ecs.Secret.from_secrets_manager(self.admin_secret, "password"),
                "LABEL_STUDIO_USER_TOKEN": ecs.Secret.from_secrets_manager(self.token_secret),
            },
        )
        cluster = ecs.Cluster(self, "Cluster", vpc=self.vpc, container_insights_v2=ecs.ContainerInsights.ENABLED)
        self.cluster = cluster
        self.service = ecs.FargateService(
            self, "Service", cluster=cluster, task_definition=task, desired_count=studio.desired_count,
            vpc_subnets=private, security_groups=[service_group], assign_public_ip=False,
            min_healthy_percent=100, max_healthy_percent=200,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            # The first start migrates an empty database: minutes before /health answers.
            health_check_grace_period=Duration.minutes(10),
        )
        https = self.load_balancer.add_listener(
            "Https", port=443, protocol=elbv2.ApplicationProtocol.HTTPS, open=False,
            certificates=[elbv2.ListenerCertificate.from_arn(certificate_arn)],
            ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS)
        https.add_targets(
            "LabelStudio", port=CONTAINER_PORT, protocol=elbv2.ApplicationProtocol.HTTP, targets=[self.service],
            deregistration_delay=Duration.seconds(30),
            health_check=elbv2.HealthCheck(path="/health", healthy_http_codes="200", interval=Duration.seconds(30)))

        self.client_network = StepNetwork(vpc=self.vpc, subnets=private,
                                          security_groups=(self.client_security_group,))
        self.client_environment = {STUDIO_URL_ENV: self.url, STUDIO_TOKEN_SECRET_ENV: self.token_secret_name}
        # The generated secret itself (``database.secret`` is its attachment to the instance).
        generated = self.database.node.find_child("Secret")
        self._acknowledge(task, [self.token_secret, self.admin_secret, django_key, generated])

    def grant_token_read(self, policy: ScopedPolicy) -> None:
        """Let ``policy``'s role read the API token secret, and no other secret."""
        policy.allow(["secretsmanager:GetSecretValue"], [self.token_secret.secret_arn])

    # --- parts ------------------------------------------------------------------------------------------
    @staticmethod
    def _certificate_arn(settings: Settings) -> str:
        arn = settings.labeling.studio.certificate_arn
        if not arn:
            raise ValueError(
                'settings.labeling.studio.certificate_arn is required when labeling.backend is "label-studio": '
                "the stack serves Label Studio over HTTPS only. Set it to an ACM certificate ARN in the stack's "
                f"region {settings.region} (arn:aws:acm:{settings.region}:<account>:certificate/<id>), issued "
                "for the DNS name annotators will use (labeling.studio.url).")
        region = arn.split(":")[_CERTIFICATE_REGION]
        if region != settings.region:
            raise ValueError(f"settings.labeling.studio.certificate_arn is in {region}, but a load balancer takes "
                             f"certificates of its own region only ({settings.region})")
        return arn

    @staticmethod
    def _check_url(settings: Settings) -> None:
        url = settings.labeling.studio.url
        if url is None:
            return
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.netloc or parts.path.strip("/") or parts.query:
            raise ValueError(f"settings.labeling.studio.url {url!r}: the hosted service is served at the root of "
                             "an https URL (https://<the certificate's DNS name>)")

    @staticmethod
    def _allowed_network(settings: Settings) -> ipaddress.IPv4Network:
        cidr = settings.labeling.studio.allowed_cidr
        try:
            network = ipaddress.IPv4Network(cidr)
        except ValueError as err:
            raise ValueError(f"settings.labeling.studio.allowed_cidr {cidr!r} is not an IPv4 network: {err}") from None
        if network.prefixlen == 0:
            raise ValueError("settings.labeling.studio.allowed_cidr must name the annotators' network (a VPN or an "
                             "office range), not the whole internet")
        return network

    def _environment(self) -> dict[str, str]:
        """Plain settings of the container; everything secret goes through ``secrets``."""
        return {
            "DJANGO_DB": "default",  # PostgreSQL through the POSTGRE_* variables
            "POSTGRE_NAME": DATABASE_NAME,
            "POSTGRE_HOST": self.database.db_instance_endpoint_address,
            "POSTGRE_PORT": self.database.db_instance_endpoint_port,
            "LABEL_STUDIO_HOST": self.url,
            # TLS ends at the load balancer: Django sees http, the browser's Origin is https.
            "CSRF_TRUSTED_ORIGINS": self.url,  # a root URL (checked): its own origin
            "SESSION_COOKIE_SECURE": "1",
            "CSRF_COOKIE_SECURE": "1",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": _ON,  # annotators join by the invitation link only
            # The organization created at the first start accepts the planted (legacy) API token.
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": _ON,
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": _OFF,  # images come from S3 only
            # No usage analytics, error reports or version checks leave with the project's data.
            "COLLECT_ANALYTICS": _OFF,
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            "LATEST_VERSION_CHECK": _OFF,
            "AWS_DEFAULT_REGION": Stack.of(self).region,  # the region S3 presigned URLs are signed for
        }

    @staticmethod
    def _grant_source_storage(policy: ScopedPolicy, bucket: s3.IBucket, prefix: str) -> None:
        """Label Studio's S3 source storage: list the images prefix, read (and presign) the images under it."""
        policy.allow(list(READ_OBJECT), [bucket.arn_for_objects(f"{prefix}*")],
                     reason="Reads objects under its own prefix: the uploaded images Label Studio's S3 source "
                            "storage lists and presigns for the annotators' browsers.")
        # The storage validates itself with a ListObjectsV2 under its prefix (a HeadBucket without one, which
        # carries no s3:prefix: hence no condition when the images sit at the bucket's root).
        policy.allow(["s3:ListBucket"], [bucket.bucket_arn],
                     conditions={"StringLike": {"s3:prefix": [f"{prefix}*"]}} if prefix else None)

    def _acknowledge(self, task: ecs.TaskDefinition, secrets: list[IConstruct]) -> None:
        acknowledge(task, "AwsSolutions-ECS2",
                    "Only non-secret configuration is plain environment (database host and name, public URL, "
                    "feature switches); the database password, Django secret key, admin login and API token "
                    "reach the container as ECS secrets from Secrets Manager.")
        acknowledge(self.database, "AwsSolutions-RDS3",
                    "Single-AZ on purpose: the database of one annotation tool, whose outage pauses labeling "
                    "but loses nothing (7 days of automated backups, a snapshot on delete, deletion protection); "
                    "Multi-AZ would double the database cost.")
        acknowledge(self.database, "AwsSolutions-RDS11",
                    "The database sits in isolated subnets and admits only the Label Studio tasks' security "
                    "group; a non-default port would hide nothing from that one client.")
        for secret in secrets:
            acknowledge(secret, "AwsSolutions-SMG4",
                        "Label Studio reads this secret only when a task starts (the admin login and API token "
                        "only at the very first start): an automatic rotation would leave the running tasks or "
                        "the stored token out of step with the secret. Rotate by hand with a service redeploy.")
