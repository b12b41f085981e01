"""The suggestion service hosted by the stack: ``alp serve`` on ECS Fargate next to the hosted Label Studio.

Opt-in with ``serve.hosted: true``, which needs the hosted Label Studio (``labeling.backend: "label-studio"``
and ``labeling.studio.hosted: true``): :func:`check_serve_settings` refuses anything else at synth.

What it creates: a container image built from this repository (``docker/serve.Dockerfile``, a CDK image
asset like the processing image), a Fargate service of ``serve.min_tasks`` to ``serve.max_tasks`` tasks in
Label Studio's VPC (private subnets) and ECS cluster, scaled by target tracking on CPU
(``serve.target_cpu_percent``), an internal Application Load Balancer in front of it, and the tasks' log
group (retention ``observability.log_retention_days``). The stack outputs the service's internal URL
(``SuggestionServiceUrl``, ``http://<internal load balancer>:<serve.port>``): in Label Studio, Settings ->
Model -> Connect model, with that URL.

Who reaches it: only Label Studio's tasks. The load balancer is internal (private subnets, no public
address) and its security group admits ``serve.port`` from Label Studio's service security group alone; the
tasks' group admits ``serve.port`` from the load balancer alone. Label Studio's load balancer admits HTTPS from
the tasks' group, for images a task names by a Label Studio URL (fetched with the ``/setup`` hostname and
token); an internet-facing one is reached through the NAT gateway, whose address it admits already.

How Label Studio reaches it: an internal load balancer, not ECS Service Connect or Cloud Map DNS.

* Label Studio is a client that is given one URL (its ML backend setting) and calls it over plain HTTP. A load
  balancer gives that URL a stable name for the lifetime of the stack, whatever tasks come and go.
* Health checks on ``/health`` and the deregistration delay take a task out of rotation before it stops
  (a deployment, a scale-in): Cloud Map's DNS answers stay cached by the client for their TTL and send
  annotators' requests to stopped tasks meanwhile.
* Service Connect would route through an Envoy sidecar in *both* services: Label Studio's service would have
  to join the namespace (a change of its deployment, restarting it) for a backend that is optional.
* The load balancer writes access logs to the access-log bucket (who asked for suggestions, when, how
  slow), next to Label Studio's own; and it offers requests per target as a scaling signal should CPU ever
  not be enough (there is no setting for a requests target yet).
* Its cost (an internal ALB, about 16 USD a month plus capacity units) is small next to the database, the
  NAT gateway and Label Studio's own load balancer the hosted setup already has.

Label Studio 1.23 refuses an ML backend whose address is private (``ML_BLOCK_LOCAL_IP``, on by default: both
the Connect model form and every call to the backend), and an internal load balancer's addresses are private. The
construct sets ``ML_BLOCK_LOCAL_IP=false`` in Label Studio's container when (and only when) the service is hosted.
That lets whoever may connect a model in Label Studio point it at other addresses its tasks reach inside the VPC
(the calls go to ``<url>/health``, ``/setup``, ``/predict``); uploads, cloud storages and webhooks keep Label
Studio's own SSRF checks.

Plain HTTP between Label Studio and the service: the traffic never leaves the VPC, both ends are pinned by
security groups, and a certificate for an internal name would need a private CA.

Why Fargate, not a SageMaker real-time endpoint (by default):

* Label Studio calls its ML backend with plain HTTP requests it cannot SigV4-sign, while a SageMaker endpoint
  answers only signed ``InvokeEndpoint`` calls in its own ``/invocations`` contract. An endpoint would need a
  translating service in front of it anyway: that service is this one.
* The models are small ONNX graphs (int8 by default) run by onnxruntime on CPU; an annotator opens one task
  at a time, so a suggestion's latency is dominated by the person, not the model. A 1 vCPU / 2 GiB Fargate task
  costs about 36 USD a month (us-east-1 list prices); the smallest GPU endpoint instance (ml.g4dn.xlarge)
  about 540 USD a month, kept running.
* The service swaps in a newly approved bundle in place every ``serve.reload_seconds`` by reading the
  registry; an endpoint changes models through a new endpoint configuration and a blue/green update (minutes)
  per approval.

Where a GPU is wanted (larger models, interactive assist on many annotators at once; seed 004 used GPU
endpoints for speed), the path is an endpoint *behind* this service, which would call ``InvokeEndpoint``
with its task role: the protocol side stays here.

Environment of the container (no secrets: the service signs its AWS calls with the task role, and Label
Studio's access token arrives with each ``/setup``):

``ALP_SETTINGS_URI``
    The deployed settings, exactly as every step and function reads them.
``ALP_SERVE_ALLOWED_HOSTS``
    Comma-separated image sources the deployment adds to ``serve.allowed_hosts`` (the service allows both:
    ``create_app(extra_allowed_hosts=...)`` in :mod:`alp.serve.app`): the unlabeled bucket as ``s3://<bucket>``
    (a task's ``s3://`` image, read with the task role) and its virtual-hosted S3 names
    (``<bucket>.s3.<region>.amazonaws.com`` and ``<bucket>.s3.amazonaws.com``, where Label Studio's presigned
    URLs point). The bucket's name holds the account, known at deploy time only, so it cannot be in the deployed
    settings (their hash is recorded in dataset versions and bundles).
``AWS_DEFAULT_REGION``
    The stack's region.

The task role is created here with no statement; the stack grants it exactly what the service reads
(:meth:`stacks.pipeline_stack.ActiveLabelingStack._grant_suggestion_service`): the model package group and
its versions, the settings object and the bundles under the data bucket's models prefix, the images under the
unlabeled bucket's prefix (a task's ``s3://`` image), and the Rekognition head model when the settings select
that head backend (the engine calls it, as in the Infer step).
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Aws, Duration, IgnoreMode, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from alp.settings import SETTINGS_ENV, Settings
from stacks.iam import ScopedPolicy
from stacks.label_studio_service import LabelStudioService
from stacks.secure_defaults import acknowledge, log_group

DOCKERFILE = "docker/serve.Dockerfile"
ALLOWED_HOSTS_ENV = "ALP_SERVE_ALLOWED_HOSTS"  # what `alp serve` reads (alp/commands/serve.py; a test compares)
HEALTH_PATH = "/health"
# Label Studio's switch that refuses ML backends at private addresses (on by default in 1.23).
ML_BLOCK_LOCAL_IP_ENV = "ML_BLOCK_LOCAL_IP"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104  # nosec B104 - in a task behind its security groups, as any server
# Loading a bundle (download, verify, open three ONNX sessions) before /health answers.
STARTUP_GRACE = Duration.minutes(3)


def check_serve_settings(settings: Settings) -> None:
    """Refuse, at synth, a hosted suggestion service the stack cannot build (nothing is created before)."""
    serve = settings.serve
    if not serve.hosted:
        return
    labeling = settings.labeling
    needs = ("the hosted suggestion service runs next to the hosted Label Studio (in its VPC and cluster, "
             "reachable only from its tasks). "
             "Set serve.hosted to false to run `alp serve` yourself and connect it in Label Studio")
    if labeling.backend != "label-studio":
        raise ValueError(f'settings.serve.hosted is true but labeling.backend is "{labeling.backend}", not '
                         f'"label-studio": {needs}, or set labeling.backend to "label-studio".')
    if not labeling.studio.hosted:
        raise ValueError("settings.serve.hosted is true but labeling.studio.hosted is false (Label Studio runs "
                         f"outside the stack): {needs}, or set labeling.studio.hosted to true.")
    if serve.min_tasks > serve.max_tasks:
        raise ValueError(f"settings.serve.min_tasks ({serve.min_tasks}) is above serve.max_tasks "
                         f"({serve.max_tasks}): the autoscaling keeps between the two")


class SuggestionService(Construct):
    """``alp serve`` on Fargate behind an internal load balancer that only Label Studio's tasks reach.

    Attributes: ``image`` (the image asset); ``task_role`` and ``task_policy`` (a :class:`ScopedPolicy` on it,
    for the stack's grants); ``log_group``; ``service``; ``load_balancer`` and ``target_group``; ``security_group`` (the tasks')
    and ``load_balancer_security_group``; ``scaling`` (the scalable task count); ``url`` (the internal
    ``http://`` URL Label Studio connects to, a deploy-time token).
    """

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings, studio: LabelStudioService,
                 settings_uri: str, unlabeled_bucket: s3.IBucket, access_logs: s3.IBucket, repo_root: Path) -> None:
        super().__init__(scope, construct_id)
        check_serve_settings(settings)
        serve = settings.serve
        port = serve.port
        prefix = settings.storage.resource_prefix
        private = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)

        # The build context is the repository root narrowed by its allow-list .dockerignore (the package sources
        # and this Dockerfile, which the allow-list names).
        self.image = ecr_assets.DockerImageAsset(
            self, "Image", directory=str(repo_root), file=DOCKERFILE, ignore_mode=IgnoreMode.DOCKER,
            platform=ecr_assets.Platform.LINUX_AMD64)

        # --- who reaches it: Label Studio's tasks -> the load balancer -> the tasks ------------------------
        self.load_balancer_security_group = ec2.SecurityGroup(
            self, "LoadBalancerSecurityGroup", vpc=studio.vpc, allow_all_outbound=False,
            description="Suggestion service load balancer: HTTP from the Label Studio tasks only")
        self.load_balancer_security_group.add_ingress_rule(
            studio.service_security_group, ec2.Port.tcp(port), "The ML backend calls of the Label Studio tasks")
        # Outbound: images and packages (NAT), S3 (gateway endpoint), the SageMaker registry API.
        self.security_group = ec2.SecurityGroup(
            self, "ServiceSecurityGroup", vpc=studio.vpc, allow_all_outbound=True,
            description="Suggestion service tasks: HTTP from their load balancer only")
        studio.load_balancer_security_group.add_ingress_rule(
            self.security_group, ec2.Port.tcp(443), "HTTPS from the suggestion service tasks (images by Label "
                                                    "Studio URL)")
        # Label Studio may call an ML backend at a private address: the internal load balancer's (module docstring).
        studio_container = studio.service.task_definition.default_container
        assert studio_container is not None  # Label Studio's one container
        studio_container.add_environment(ML_BLOCK_LOCAL_IP_ENV, "false")

        # --- the task ---------------------------------------------------------------------------------------
        self.task_role = iam.Role(
            self, "TaskRole", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="Suggestion service tasks: the model registry, the approved bundles, the unlabeled images")
        self.task_policy = ScopedPolicy(self.task_role)
        self.log_group = log_group(self, "Logs", name=f"/ecs/{prefix}-suggestion-service",
                                   retention_days=settings.observability.log_retention_days)
        task = ecs.FargateTaskDefinition(
            self, "Task", cpu=serve.cpu, memory_limit_mib=serve.memory_mib, task_role=self.task_role,
            # the image is built for linux/amd64
            runtime_platform=ecs.RuntimePlatform(cpu_architecture=ecs.CpuArchitecture.X86_64,
                                                 operating_system_family=ecs.OperatingSystemFamily.LINUX))
        task.add_container(
            "Suggestions",
            image=ecs.ContainerImage.from_docker_image_asset(self.image),
            # The image's CMD with the port of the settings (the image is built once, whatever the port).
            command=["alp", "serve", "--host", ALL_INTERFACES, "--port", str(port)],
            port_mappings=[ecs.PortMapping(container_port=port)],
            logging=ecs.LogDrivers.aws_logs(stream_prefix="serve", log_group=self.log_group),
            environment={
                SETTINGS_ENV: settings_uri,
                ALLOWED_HOSTS_ENV: ",".join(self._allowed_hosts(settings, unlabeled_bucket)),
                "AWS_DEFAULT_REGION": Stack.of(self).region,
            },
        )
        self.service = ecs.FargateService(
            self, "Service", cluster=studio.cluster, task_definition=task, desired_count=serve.min_tasks,
            vpc_subnets=private, security_groups=[self.security_group],
            assign_public_ip=False, min_healthy_percent=100, max_healthy_percent=200,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            health_check_grace_period=STARTUP_GRACE)

        # --- the internal load balancer -------------------------------------------------------------------
        self.load_balancer = elbv2.ApplicationLoadBalancer(
            self, "LoadBalancer", vpc=studio.vpc, internet_facing=False,
            security_group=self.load_balancer_security_group, vpc_subnets=private,
            drop_invalid_header_fields=True,
            # room for a /predict of several tasks on CPU
            idle_timeout=Duration.seconds(120))
        self.load_balancer.log_access_logs(access_logs, prefix="suggestion-service-alb")
        listener = self.load_balancer.add_listener("Http", port=port, protocol=elbv2.ApplicationProtocol.HTTP,
                                                   open=False)
        # Also adds the tasks' ingress from the load balancer's group (and its egress to them) on the port.
        self.target_group = listener.add_targets(
            "Suggestions", port=port, protocol=elbv2.ApplicationProtocol.HTTP, targets=[self.service],
            deregistration_delay=Duration.seconds(30),
            health_check=elbv2.HealthCheck(path=HEALTH_PATH, healthy_http_codes="200",
                                           interval=Duration.seconds(15), healthy_threshold_count=2))
        self.url = f"http://{self.load_balancer.load_balancer_dns_name}:{port}"

        # --- autoscaling ------------------------------------------------------------------------------------
        self.scaling = self.service.auto_scale_task_count(min_capacity=serve.min_tasks,
                                                          max_capacity=serve.max_tasks)
        self.scaling.scale_on_cpu_utilization(
            "CpuTarget", target_utilization_percent=serve.target_cpu_percent,
            scale_out_cooldown=Duration.minutes(1), scale_in_cooldown=Duration.minutes(5))

        self._acknowledge(task)

    @staticmethod
    def _allowed_hosts(settings: Settings, unlabeled_bucket: s3.IBucket) -> list[str]:
        """The unlabeled bucket as an image source: ``s3://<bucket>`` and its virtual-hosted names (regional and
        global: Label Studio's presigned URLs use either, depending on its botocore); never a path-style
        ``s3.<region>`` host, which would admit every bucket."""
        bucket = unlabeled_bucket.bucket_name
        return [f"s3://{bucket}", f"{bucket}.s3.{settings.region}.{Aws.URL_SUFFIX}", f"{bucket}.s3.{Aws.URL_SUFFIX}"]

    @staticmethod
    def _acknowledge(task: ecs.TaskDefinition) -> None:
        acknowledge(task, "AwsSolutions-ECS2",
                    "Only non-secret configuration is plain environment (the settings object's S3 URI, the image "
                    "sources the service may read, the region); the service holds no secret: AWS calls are signed "
                    "with the task role and Label Studio's access token arrives with each /setup request.")
        execution_role = task.execution_role
        assert execution_role is not None  # created by the image asset's pull grant and the log driver
        acknowledge(execution_role, "AwsSolutions-IAM5[Resource::*]",
                    "CDK's pull grant for the image asset: ecr:GetAuthorizationToken has no resource-level "
                    "permissions; the layer and image reads are scoped to the CDK bootstrap's container-asset "
                    "repository.")
