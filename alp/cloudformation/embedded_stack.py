"""Create a synthesized stack's resources in the embedded AWS (moto), from the template alone.

moto's CloudFormation cannot deploy this stack (it lacks CodeBuild, bucket policies and model package
groups), so each resource type the pipeline uses is created here through the service's own API with the
template's resolved properties. Resource types that only matter in the cloud (alarms, dashboards, the CDK
helper functions) are listed in :attr:`EmbeddedStack.skipped` rather than silently dropped. What moto has
no API for (CodeBuild projects, Lambda code) is read from the template into :class:`BuildProject` and
:class:`Function`, which the local runners execute the way CodeBuild and Lambda would.

IAM: every role and its policies are created with their true documents kept in :class:`Role`. moto's own
enforcement checks S3 at resource level and every other service at action level, and cannot evaluate
conditions (an Allow with a condition counts as a Deny there); the documents given to moto are therefore
the "moto view" of each policy (:func:`moto_view`), and the full check against the true documents is
:mod:`alp.rehearsal.policy`'s.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alp import aws
from alp.cloudformation.template import StackTemplate, TemplateError

# Types that exist only for the cloud's operations or CDK's own deployment helpers.
SKIPPED_TYPES = frozenset({
    "AWS::CloudWatch::Alarm", "AWS::CloudWatch::Dashboard", "AWS::Lambda::LayerVersion", "AWS::KMS::Key",
    "AWS::SNS::TopicPolicy", "AWS::Lambda::Permission", "AWS::CDK::Metadata",
})


@dataclass(frozen=True)
class Role:
    logical_id: str
    name: str
    arn: str
    trusted_services: tuple[str, ...]
    documents: tuple[dict[str, Any], ...]  # the true, resolved identity policies (inline and attached)
    managed_policy_arns: tuple[str, ...] = ()

    def statements(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for doc in self.documents:
            stmts = doc.get("Statement", [])
            out.extend(stmts if isinstance(stmts, list) else [stmts])
        return out


@dataclass(frozen=True)
class Function:
    logical_id: str
    name: str
    arn: str
    role: str  # logical id of its role
    handler: str
    environment: dict[str, str]
    timeout_seconds: int


@dataclass(frozen=True)
class EventRule:
    """An EventBridge rule: what it matches (resolved) or when it fires, and the ARNs of its targets."""

    name: str
    pattern: dict[str, Any] | None
    schedule: str | None
    targets: tuple[str, ...]

    def matches(self, event: dict[str, Any]) -> bool:
        """Whether EventBridge would hand ``event`` to this rule's targets (moto's matcher: prefix, anything-but
        and the other filters; a scheduled rule matches the ``Scheduled Event`` it sends itself)."""
        if self.pattern is None:
            return event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event"
        from moto.events.models import EventPattern

        matcher: Any = EventPattern(json.dumps(self.pattern), self.pattern)  # typed for moto's own event type
        return bool(matcher.matches_event(event))


@dataclass(frozen=True)
class BuildProject:
    logical_id: str
    name: str
    role: str  # logical id of its service role
    buildspec: dict[str, Any]
    environment: dict[str, str]
    timeout_minutes: int


@dataclass(frozen=True)
class PipelineStage:
    name: str
    project: str | None  # the CodeBuild project a build stage runs
    environment: dict[str, str]  # the action's variables (CodePipeline variables still unresolved)


@dataclass(frozen=True)
class Pipeline:
    name: str
    role: str
    stages: tuple[PipelineStage, ...]


@dataclass
class EmbeddedStack:
    """What the embedded account holds of the stack, and what the runners read from the template."""

    template: StackTemplate
    roles: dict[str, Role] = field(default_factory=dict)
    functions: dict[str, Function] = field(default_factory=dict)  # by function name
    projects: dict[str, BuildProject] = field(default_factory=dict)  # by project name
    pipelines: dict[str, Pipeline] = field(default_factory=dict)  # by pipeline name
    queues: dict[str, str] = field(default_factory=dict)  # queue name -> URL
    event_sources: dict[str, str] = field(default_factory=dict)  # function name -> queue name feeding it
    rules: dict[str, EventRule] = field(default_factory=dict)  # by rule name
    outputs: dict[str, str] = field(default_factory=dict)
    created: dict[str, int] = field(default_factory=dict)  # resource type -> how many were created
    skipped: dict[str, str] = field(default_factory=dict)  # logical id -> why it is not in the embedded AWS
    # bucket name -> its policy's statements as synthesized (conditions kept: the rehearsal evaluates them)
    bucket_policies: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def queue_for(self, function_name: str) -> str:
        """URL of the queue whose event source mapping feeds ``function_name``."""
        try:
            return self.queues[self.event_sources[function_name]]
        except KeyError:
            raise TemplateError(f"no queue feeds the function {function_name!r} in the template") from None


# --- IAM ----------------------------------------------------------------------------------------------
def _is_s3_action(action: str) -> bool:
    return action.lower().startswith("s3:")


# moto checks the API operation's own name as the action; IAM checks these operations under another action.
_MOTO_ACTION_ALIASES = {
    "sqs:deletemessage": ("sqs:DeleteMessageBatch",),
    "sqs:sendmessage": ("sqs:SendMessageBatch",),
    "sqs:changemessagevisibility": ("sqs:ChangeMessageVisibilityBatch",),
    "s3:getobject": ("s3:HeadObject",),
    "s3:getobjectversion": ("s3:HeadObject", "s3:GetObject"),
    "s3:listbucket": ("s3:HeadBucket", "s3:ListObjects", "s3:ListObjectsV2"),
    "s3:listbucketversions": ("s3:ListObjectVersions",),
    "s3:putobject": ("s3:CopyObject", "s3:CreateMultipartUpload", "s3:UploadPart", "s3:CompleteMultipartUpload"),
    "s3:deleteobject": ("s3:DeleteObjects",),
}


def _with_aliases(actions: list[str]) -> list[str]:
    out = list(actions)
    for action in actions:
        out.extend(a for a in _MOTO_ACTION_ALIASES.get(action.lower(), ()) if a not in out)
    return out


def moto_view(document: dict[str, Any]) -> dict[str, Any]:
    """The policy as moto can enforce it: conditions dropped (moto turns an unmet or unknown condition of an
    Allow into a Deny) and non-S3 resources widened to ``*`` (moto passes ``*`` as the resource of every
    non-S3 call, so a scoped grant would never match). The resource and condition checks of those
    statements are the rehearsal's own (:mod:`alp.rehearsal.policy`)."""
    statements = document.get("Statement", [])
    out = []
    for raw in statements if isinstance(statements, list) else [statements]:
        stmt = {k: v for k, v in raw.items() if k not in ("Condition", "Sid")}
        actions = stmt.get("Action", [])
        actions = actions if isinstance(actions, list) else [actions]
        if "Action" in stmt:
            stmt["Action"] = _with_aliases(actions)
        if "Resource" in stmt and not all(_is_s3_action(a) for a in actions):
            if raw.get("Effect") == "Deny" and raw.get("Condition"):
                continue  # a conditional Deny moto cannot evaluate would deny everything
            stmt["Resource"] = "*"
        if raw.get("Effect") == "Deny" and raw.get("Condition"):
            continue
        out.append(stmt)
    return {"Version": "2012-10-17", "Statement": out}


def _trusted_services(doc: dict[str, Any]) -> tuple[str, ...]:
    services: list[str] = []
    for stmt in doc.get("Statement", []):
        svc = (stmt.get("Principal") or {}).get("Service", [])
        services.extend(svc if isinstance(svc, list) else [svc])
    return tuple(services)


def _create_roles(stack: EmbeddedStack) -> None:
    t = stack.template
    documents: dict[str, list[dict[str, Any]]] = {lid: [] for lid in t.logical_ids("AWS::IAM::Role")}
    for policy in t.resources("AWS::IAM::Policy"):
        props = t.properties(policy.logical_id)
        for role_name in props.get("Roles", []):
            lid = t.logical_id_of("AWS::IAM::Role", role_name)
            documents[lid].append(props["PolicyDocument"])
    iam = aws.client("iam")
    for lid, docs in documents.items():
        props = t.properties(lid)
        trust = props["AssumeRolePolicyDocument"]
        inline = [p["PolicyDocument"] for p in props.get("Policies", [])]
        name = t.physical_name(lid)
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust),
                        Description=str(props.get("Description", ""))[:1000])
        all_docs = [*inline, *docs]
        for i, doc in enumerate(all_docs):
            iam.put_role_policy(RoleName=name, PolicyName=f"stack-policy-{i}", PolicyDocument=json.dumps(moto_view(doc)))
        stack.roles[lid] = Role(logical_id=lid, name=name, arn=t.arn(lid), trusted_services=_trusted_services(trust),
                                documents=tuple(all_docs), managed_policy_arns=tuple(props.get("ManagedPolicyArns", [])))


# --- storage, queues, events, tables ------------------------------------------------------------------
def _create_buckets(stack: EmbeddedStack) -> None:
    t = stack.template
    s3 = aws.client("s3")
    for _res, name, props in t.each("AWS::S3::Bucket"):
        if t.region == "us-east-1":
            s3.create_bucket(Bucket=name)
        else:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": t.region})
        if "VersioningConfiguration" in props:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration=props["VersioningConfiguration"])
        if "BucketEncryption" in props:
            rules = [{"ApplyServerSideEncryptionByDefault": r["ServerSideEncryptionByDefault"],
                      **({"BucketKeyEnabled": r["BucketKeyEnabled"]} if "BucketKeyEnabled" in r else {})}
                     for r in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]]
            s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
        if "PublicAccessBlockConfiguration" in props:
            s3.put_public_access_block(Bucket=name,
                                       PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"])
        if "LifecycleConfiguration" in props:
            s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={
                "Rules": [_lifecycle_rule(r) for r in props["LifecycleConfiguration"]["Rules"]]})
        if "CorsConfiguration" in props:
            s3.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": [
                {_CORS_KEYS.get(k, k): v for k, v in r.items()} for r in props["CorsConfiguration"]["CorsRules"]]})
    for _res, _name, props in t.each("AWS::S3::BucketPolicy"):
        # moto evaluates bucket policies on object calls but not their conditions: the stack's SSL-only Deny
        # (aws:SecureTransport false) would refuse every call. The embedded AWS speaks http on loopback, so
        # that Deny is out of its reach anyway (docs/reliability.md); its unconditional statements apply.
        statements = props["PolicyDocument"].get("Statement", [])
        stack.bucket_policies[props["Bucket"]] = statements if isinstance(statements, list) else [statements]
        view = moto_view(props["PolicyDocument"])
        if view["Statement"]:
            s3.put_bucket_policy(Bucket=props["Bucket"], Policy=json.dumps(view))


_CORS_KEYS = {"Id": "ID", "ExposedHeaders": "ExposeHeaders", "MaxAge": "MaxAgeSeconds"}


def _lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A CloudFormation lifecycle rule in the S3 API's shape."""
    out: dict[str, Any] = {"ID": rule.get("Id", "rule"), "Status": rule.get("Status", "Enabled"),
                           "Filter": {"Prefix": rule.get("Prefix", "")}}
    if "ExpirationInDays" in rule:
        out["Expiration"] = {"Days": rule["ExpirationInDays"]}
    if "NoncurrentVersionExpiration" in rule:
        out["NoncurrentVersionExpiration"] = {"NoncurrentDays": rule["NoncurrentVersionExpiration"]["NoncurrentDays"]}
    if "AbortIncompleteMultipartUpload" in rule:
        out["AbortIncompleteMultipartUpload"] = rule["AbortIncompleteMultipartUpload"]
    return out


_QUEUE_ATTRIBUTES = ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds", "ReceiveMessageWaitTimeSeconds",
                     "SqsManagedSseEnabled")


def _create_queues(stack: EmbeddedStack) -> None:
    t = stack.template
    sqs = aws.client("sqs")
    queues = list(t.resources("AWS::SQS::Queue"))
    # dead-letter queues first: a redrive policy names its target's ARN
    queues.sort(key=lambda r: "RedrivePolicy" in r.properties)
    for res in queues:
        props = t.properties(res.logical_id)
        attributes = {k: str(props[k]).lower() if isinstance(props[k], bool) else str(props[k])
                      for k in _QUEUE_ATTRIBUTES if k in props}
        if "RedrivePolicy" in props:
            attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
        name = t.physical_name(res.logical_id)
        stack.queues[name] = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    for _res, _name, props in t.each("AWS::SQS::QueuePolicy"):
        for url in props["Queues"]:
            name = url.rstrip("/").rsplit("/", 1)[-1]
            sqs.set_queue_attributes(QueueUrl=stack.queues[name], Attributes={"Policy": json.dumps(props["PolicyDocument"])})


def _create_rules(stack: EmbeddedStack) -> None:
    t = stack.template
    events = aws.client("events")
    for _res, name, props in t.each("AWS::Events::Rule"):
        # a rule matches events (EventPattern) or fires on a schedule (ScheduleExpression); moto keeps a scheduled
        # rule but never fires it: the runners deliver its event themselves
        rule: dict[str, Any] = {"Name": name, "State": props.get("State", "ENABLED"),
                                "Description": props.get("Description", "")}
        if "EventPattern" in props:
            rule["EventPattern"] = json.dumps(props["EventPattern"])
        if "ScheduleExpression" in props:
            rule["ScheduleExpression"] = props["ScheduleExpression"]
        if "EventPattern" not in rule and "ScheduleExpression" not in rule:
            raise TemplateError(f"rule {name} has neither an event pattern nor a schedule")
        events.put_rule(**rule)
        stack.rules[name] = EventRule(name=name, pattern=props.get("EventPattern"),
                                      schedule=props.get("ScheduleExpression"),
                                      targets=tuple(str(tgt["Arn"]) for tgt in props.get("Targets", [])))
        targets = [{"Id": tgt["Id"], "Arn": tgt["Arn"]} for tgt in props.get("Targets", [])]
        if targets:
            events.put_targets(Rule=name, Targets=targets)


def _create_tables(stack: EmbeddedStack) -> None:
    t = stack.template
    ddb = aws.client("dynamodb")
    for _res, name, props in t.each("AWS::DynamoDB::Table"):
        ddb.create_table(TableName=name, AttributeDefinitions=props["AttributeDefinitions"],
                         KeySchema=props["KeySchema"], BillingMode=props.get("BillingMode", "PAY_PER_REQUEST"))
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)


def _create_topics_and_logs(stack: EmbeddedStack) -> None:
    t = stack.template
    for res in t.resources("AWS::SNS::Topic"):
        aws.client("sns").create_topic(Name=t.physical_name(res.logical_id))
    for res in t.resources("AWS::Logs::LogGroup"):
        aws.client("logs").create_log_group(logGroupName=t.physical_name(res.logical_id))


def _create_model_package_groups(stack: EmbeddedStack) -> None:
    t = stack.template
    for _res, _name, props in t.each("AWS::SageMaker::ModelPackageGroup"):
        aws.client("sagemaker").create_model_package_group(
            ModelPackageGroupName=props["ModelPackageGroupName"],
            ModelPackageGroupDescription=props.get("ModelPackageGroupDescription", ""))


# --- what moto cannot run: functions, builds, pipelines ----------------------------------------------
def _read_functions(stack: EmbeddedStack) -> None:
    t = stack.template
    for res, name, props in t.each("AWS::Lambda::Function"):
        role_arn = props["Role"]
        role = t.logical_id_of("AWS::IAM::Role", role_arn.rsplit("/", 1)[-1])
        stack.functions[name] = Function(
            logical_id=res.logical_id, name=name, arn=t.arn(res.logical_id), role=role,
            handler=str(props.get("Handler", "")), environment=dict(props.get("Environment", {}).get("Variables", {})),
            timeout_seconds=int(props.get("Timeout", 3)))
    for _res, _name, props in t.each("AWS::Lambda::EventSourceMapping"):
        source = str(props.get("EventSourceArn", ""))
        if ":sqs:" in source:
            stack.event_sources[str(props["FunctionName"])] = source.rsplit(":", 1)[-1]


def _read_projects(stack: EmbeddedStack) -> None:
    t = stack.template
    for res, name, props in t.each("AWS::CodeBuild::Project"):
        role = t.logical_id_of("AWS::IAM::Role", str(props["ServiceRole"]).rsplit("/", 1)[-1])
        buildspec = props.get("Source", {}).get("BuildSpec", "{}")
        env = {v["Name"]: str(v["Value"]) for v in props.get("Environment", {}).get("EnvironmentVariables", [])}
        stack.projects[name] = BuildProject(logical_id=res.logical_id, name=name, role=role,
                                            buildspec=json.loads(buildspec) if isinstance(buildspec, str) else buildspec,
                                            environment=env, timeout_minutes=int(props.get("TimeoutInMinutes", 60)))


def _camel(value: Any, *, keep_keys: bool = False) -> Any:
    """CloudFormation's PascalCase pipeline properties in the CodePipeline API's camelCase."""
    if isinstance(value, list):
        return [_camel(v) for v in value]
    if not isinstance(value, dict):
        return value
    if keep_keys:  # an action's configuration: string values under the provider's own keys
        return {k: json.dumps(v) if isinstance(v, bool) else v if isinstance(v, str) else json.dumps(v)
                for k, v in value.items()}
    return {key[:1].lower() + key[1:]: _camel(item, keep_keys=key == "Configuration") for key, item in value.items()}


def _create_pipelines(stack: EmbeddedStack) -> None:
    t = stack.template
    cp = aws.client("codepipeline")
    for _res, name, props in t.each("AWS::CodePipeline::Pipeline"):
        role = t.logical_id_of("AWS::IAM::Role", str(props["RoleArn"]).rsplit("/", 1)[-1])
        stages = []
        api_stages = []
        for stage in props["Stages"]:
            project, env = None, {}
            for action in stage["Actions"]:
                config = action.get("Configuration", {})
                if action["ActionTypeId"].get("Provider") == "CodeBuild":
                    project = str(config["ProjectName"])
                    raw_env = config.get("EnvironmentVariables")
                    env = {v["name"]: v["value"] for v in json.loads(raw_env)} if raw_env else {}
            stages.append(PipelineStage(name=stage["Name"], project=project, environment=env))
            api_stages.append(_camel(stage))
        stack.pipelines[name] = Pipeline(name=name, role=role, stages=tuple(stages))
        artifact_store = _camel(props["ArtifactStore"])
        request = {"name": name, "roleArn": props["RoleArn"], "artifactStore": artifact_store, "stages": api_stages,
                   "pipelineType": props.get("PipelineType", "V1"),
                   "variables": [_camel(v) for v in props.get("Variables", [])]}
        if props.get("ExecutionMode"):
            request["executionMode"] = props["ExecutionMode"]
        cp.create_pipeline(pipeline=request)


# --- the deployments CDK makes at deploy time ---------------------------------------------------------
def _deploy_bucket_contents(stack: EmbeddedStack) -> None:
    """What ``BucketDeployment`` puts into the buckets (the settings, the worker templates), from the
    assets of the cdk.out folder. Unextracted deployments (the pipelines' source archive) are skipped: the
    embedded runners execute this checkout's code."""
    t = stack.template
    folder = t.folder
    assets = _file_assets(folder) if folder else {}
    s3 = aws.client("s3")
    for res, _name, props in t.each("Custom::CDKBucketDeployment"):
        if str(props.get("Extract", True)).lower() == "false":
            stack.skipped[res.logical_id] = "unextracted source archive: the embedded runners run this checkout"
            continue
        prefix = str(props.get("DestinationBucketKeyPrefix", ""))
        for key in props.get("SourceObjectKeys", []):
            source = assets.get(str(key))
            if source is None:
                raise TemplateError(f"{res.logical_id}: asset {key} is not in {folder}")
            for rel, data in _asset_files(source):
                s3.put_object(Bucket=props["DestinationBucketName"], Key=prefix + rel, Body=data)


def _file_assets(folder: Path) -> dict[str, Path]:
    """Asset object key (``<hash>.zip``) -> its file or folder in cdk.out."""
    out: dict[str, Path] = {}
    for manifest in folder.glob("*.assets.json"):
        for entry in json.loads(manifest.read_text()).get("files", {}).values():
            for dest in entry.get("destinations", {}).values():
                out[dest["objectKey"]] = folder / entry["source"]["path"]
    return out


def _asset_files(source: Path) -> list[tuple[str, bytes]]:
    if source.is_dir():
        return [(p.relative_to(source).as_posix(), p.read_bytes()) for p in sorted(source.rglob("*")) if p.is_file()]
    with zipfile.ZipFile(source) as archive, tempfile.TemporaryDirectory() as tmp:
        archive.extractall(tmp)  # noqa: S202 - an asset this checkout's synth wrote
        files = _asset_files(Path(tmp))
        shutil.rmtree(tmp, ignore_errors=True)
        return files


_CREATORS: tuple[tuple[frozenset[str], Callable[[EmbeddedStack], None]], ...] = (
    (frozenset({"AWS::IAM::Role", "AWS::IAM::Policy"}), _create_roles),
    (frozenset({"AWS::S3::Bucket", "AWS::S3::BucketPolicy", "Custom::S3BucketNotifications"}), _create_buckets),
    (frozenset({"AWS::SQS::Queue", "AWS::SQS::QueuePolicy"}), _create_queues),
    (frozenset({"AWS::Events::Rule"}), _create_rules),
    (frozenset({"AWS::DynamoDB::Table"}), _create_tables),
    (frozenset({"AWS::SNS::Topic", "AWS::Logs::LogGroup"}), _create_topics_and_logs),
    (frozenset({"AWS::SageMaker::ModelPackageGroup"}), _create_model_package_groups),
    (frozenset({"AWS::Lambda::Function", "AWS::Lambda::EventSourceMapping"}), _read_functions),
    (frozenset({"AWS::CodeBuild::Project"}), _read_projects),
    (frozenset({"AWS::CodePipeline::Pipeline"}), _create_pipelines),
    (frozenset({"Custom::CDKBucketDeployment"}), _deploy_bucket_contents),
)


def create_stack(template: StackTemplate, *, deploy_contents: bool = True,
                 before_events: Callable[[], None] | None = None) -> EmbeddedStack:
    """Create every resource of ``template`` in the embedded AWS the current clients point at.

    ``before_events`` runs after the buckets exist and before the upload rule and the bucket's EventBridge
    notifications are switched on (the demo restores its mirrored objects there, so restoring never emits
    upload events twice)."""
    stack = EmbeddedStack(template=template)
    handled = {t for types, _ in _CREATORS for t in types}
    for res in template.resources():
        if res.type in SKIPPED_TYPES:
            stack.skipped[res.logical_id] = f"{res.type}: cloud-only, not needed to run the steps"
        elif res.type not in handled:
            stack.skipped[res.logical_id] = f"{res.type}: not built by the embedded stack"
        else:
            stack.created[res.type] = stack.created.get(res.type, 0) + 1
    for _types, creator in _CREATORS:
        if creator is _deploy_bucket_contents and not deploy_contents:
            continue
        creator(stack)
    if before_events is not None:
        before_events()
    _enable_bucket_events(stack)  # last: from here on an upload is an event
    stack.outputs = {k: str(template.resolve(v.get("Value"), k)) for k, v in template.body.get("Outputs", {}).items()}
    return stack


def _enable_bucket_events(stack: EmbeddedStack) -> None:
    t = stack.template
    s3 = aws.client("s3")
    for _res, _name, props in t.each("Custom::S3BucketNotifications"):
        s3.put_bucket_notification_configuration(Bucket=props["BucketName"],
                                                 NotificationConfiguration=props["NotificationConfiguration"])
