"""A synthesized CloudFormation template, read and resolved for one embedded account.

CloudFormation decides physical names when the template does not; the embedded account decides them here
the same way for every run (``<stack>-<logical id>``), so a role or function without a name in the template
still gets one stable name. ``Ref``/``Fn::GetAtt``/``Fn::Sub``/``Fn::Join``/``Fn::Select``/``Fn::Split``
and the pseudo parameters are resolved; anything else raises :class:`TemplateError` naming the resource.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PARTITION = "aws"
URL_SUFFIX = "amazonaws.com"
_SUB_VAR = re.compile(r"\$\{([^}!][^}]*)\}")


class TemplateError(ValueError):
    """The template (or the cdk.out folder) is not what the embedded stack can build."""


@dataclass(frozen=True)
class Resource:
    logical_id: str
    type: str
    properties: dict[str, Any]


def find_template(cdk_out: Path, stack_name: str | None = None) -> Path:
    """The stack template in a cdk.out folder (from its ``manifest.json``)."""
    manifest_path = cdk_out / "manifest.json"
    if not manifest_path.is_file():
        raise TemplateError(f"{cdk_out} holds no manifest.json: not a cdk.out folder (run `make synth`)")
    artifacts = json.loads(manifest_path.read_text()).get("artifacts", {})
    stacks = {name: a for name, a in artifacts.items() if a.get("type") == "aws:cloudformation:stack"}
    if not stacks:
        raise TemplateError(f"{cdk_out}/manifest.json lists no stack")
    if stack_name is None:
        if len(stacks) != 1:
            raise TemplateError(f"{cdk_out} holds {len(stacks)} stacks ({sorted(stacks)}); name one")
        stack_name = next(iter(stacks))
    if stack_name not in stacks:
        raise TemplateError(f"{cdk_out} holds no stack {stack_name!r}; stacks: {sorted(stacks)}")
    template_file = str(stacks[stack_name].get("properties", {}).get("templateFile", f"{stack_name}.template.json"))
    return cdk_out / template_file


@dataclass
class StackTemplate:
    """One stack's template with the account and region it is resolved for."""

    stack_name: str
    body: dict[str, Any]
    account: str
    region: str
    folder: Path | None = None
    _physical: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, cdk_out: Path, *, account: str, region: str, stack_name: str | None = None) -> StackTemplate:
        path = find_template(cdk_out, stack_name)
        if not path.is_file():
            raise TemplateError(f"template {path} is missing")
        name = path.name.removesuffix(".template.json")
        return cls(stack_name=name, body=json.loads(path.read_text()), account=account, region=region,
                   folder=cdk_out)

    # --- resources ----------------------------------------------------------------------------------
    def resources(self, type_: str | None = None) -> Iterator[Resource]:
        for logical_id, raw in self.body.get("Resources", {}).items():
            if type_ is None or raw["Type"] == type_:
                yield Resource(logical_id, raw["Type"], raw.get("Properties", {}))

    def resource(self, logical_id: str) -> Resource:
        raw = self.body.get("Resources", {}).get(logical_id)
        if raw is None:
            raise TemplateError(f"template of {self.stack_name} has no resource {logical_id!r}")
        return Resource(logical_id, raw["Type"], raw.get("Properties", {}))

    def each(self, type_: str) -> Iterator[tuple[Resource, str, dict[str, Any]]]:
        """Every resource of ``type_`` with its physical name and resolved properties."""
        for res in self.resources(type_):
            yield res, self.physical_name(res.logical_id), self.properties(res.logical_id)

    def logical_ids(self, type_: str) -> list[str]:
        return [r.logical_id for r in self.resources(type_)]

    # --- physical names and ARNs --------------------------------------------------------------------
    def physical_name(self, logical_id: str) -> str:
        """The resource's name: the template's own name property, else ``<stack>-<logical id>`` (64 chars)."""
        if logical_id in self._physical:
            return self._physical[logical_id]
        res = self.resource(logical_id)
        prop = _NAME_PROPERTY.get(res.type)
        explicit = res.properties.get(prop) if prop else None
        name = str(self.resolve(explicit, logical_id)) if explicit is not None else \
            f"{self.stack_name[:24]}-{logical_id}"[:64]
        self._physical[logical_id] = name
        return name

    def ref(self, logical_id: str) -> str:
        res = self.resource(logical_id)
        name = self.physical_name(logical_id)
        if res.type == "AWS::SQS::Queue":
            return f"http://sqs.{self.region}.localhost/{self.account}/{name}"  # moto's queue URL shape
        if res.type == "AWS::SNS::Topic":
            return f"arn:{PARTITION}:sns:{self.region}:{self.account}:{name}"
        return name

    def arn(self, logical_id: str) -> str:
        res = self.resource(logical_id)
        name = self.physical_name(logical_id)
        acct, region = self.account, self.region
        builders = {
            "AWS::S3::Bucket": lambda: f"arn:{PARTITION}:s3:::{name}",
            "AWS::SQS::Queue": lambda: f"arn:{PARTITION}:sqs:{region}:{acct}:{name}",
            "AWS::IAM::Role": lambda: f"arn:{PARTITION}:iam::{acct}:role/{name}",
            "AWS::Lambda::Function": lambda: f"arn:{PARTITION}:lambda:{region}:{acct}:function:{name}",
            "AWS::DynamoDB::Table": lambda: f"arn:{PARTITION}:dynamodb:{region}:{acct}:table/{name}",
            "AWS::SNS::Topic": lambda: f"arn:{PARTITION}:sns:{region}:{acct}:{name}",
            "AWS::Logs::LogGroup": lambda: f"arn:{PARTITION}:logs:{region}:{acct}:log-group:{name}:*",
            "AWS::Events::Rule": lambda: f"arn:{PARTITION}:events:{region}:{acct}:rule/{name}",
            "AWS::CodeBuild::Project": lambda: f"arn:{PARTITION}:codebuild:{region}:{acct}:project/{name}",
            "AWS::KMS::Key": lambda: f"arn:{PARTITION}:kms:{region}:{acct}:key/{name}",
            "AWS::Lambda::LayerVersion": lambda: f"arn:{PARTITION}:lambda:{region}:{acct}:layer:{name}:1",
            "AWS::SageMaker::ModelPackageGroup":
                lambda: f"arn:{PARTITION}:sagemaker:{region}:{acct}:model-package-group/{name}",
        }
        if res.type not in builders:
            raise TemplateError(f"no ARN for {logical_id} ({res.type}) in the embedded stack")
        return builders[res.type]()

    def get_att(self, logical_id: str, attribute: str) -> Any:
        if attribute in ("Arn", "ModelPackageGroupArn"):
            return self.arn(logical_id)
        if attribute == "QueueName":
            return self.physical_name(logical_id)
        if attribute == "QueueUrl":
            return self.ref(logical_id)
        if attribute == "RoleId":
            return "AROA" + hashlib.sha256(logical_id.encode()).hexdigest()[:16].upper()
        if attribute in ("RegionalDomainName", "DomainName"):
            return f"{self.physical_name(logical_id)}.s3.{self.region}.{URL_SUFFIX}"
        res = self.resource(logical_id)
        if res.type.startswith("Custom::") and attribute in res.properties:
            # CDK's BucketDeployment answers with its own inputs (SourceObjectKeys -> the deployed keys)
            return self.resolve(res.properties[attribute], logical_id)
        raise TemplateError(f"Fn::GetAtt {logical_id}.{attribute} is not supported by the embedded stack")

    # --- intrinsic functions ------------------------------------------------------------------------
    def pseudo(self, name: str) -> str | None:
        return {
            "AWS::AccountId": self.account, "AWS::Region": self.region, "AWS::Partition": PARTITION,
            "AWS::URLSuffix": URL_SUFFIX, "AWS::StackName": self.stack_name,
            "AWS::StackId": f"arn:{PARTITION}:cloudformation:{self.region}:{self.account}:stack/{self.stack_name}/0",
            "AWS::NoValue": None,
        }.get(name, "") if name.startswith("AWS::") else None

    def resolve(self, value: Any, where: str = "") -> Any:
        """``value`` with every intrinsic function replaced by its value in this account."""
        if isinstance(value, list):
            return [self.resolve(v, where) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                if arg.startswith("AWS::"):
                    return self.pseudo(arg)
                if arg in self.body.get("Parameters", {}):
                    return self.body["Parameters"][arg].get("Default", "")
                return self.ref(arg)
            if key == "Fn::GetAtt":
                target, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(target, attribute)
            if key == "Fn::Join":
                sep, parts = arg
                return str(sep).join(str(self.resolve(p, where)) for p in self.resolve(parts, where))
            if key == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1], where))
                return _SUB_VAR.sub(lambda m: str(self._sub_var(m.group(1), variables)), text)
            if key == "Fn::Select":
                index, items = arg
                return self.resolve(items, where)[int(self.resolve(index, where))]
            if key == "Fn::Split":
                sep, text = arg
                return str(self.resolve(text, where)).split(sep)
            if key.startswith("Fn::") or key == "Condition":
                raise TemplateError(f"{key} in {where or 'the template'} is not supported by the embedded stack")
        return {k: self.resolve(v, where) for k, v in value.items()}

    def _sub_var(self, name: str, variables: dict[str, Any]) -> Any:
        if name in variables:
            return variables[name]
        if name.startswith("AWS::"):
            return self.pseudo(name)
        if "." in name:
            target, attribute = name.split(".", 1)
            return self.get_att(target, attribute)
        return self.ref(name)

    def properties(self, logical_id: str) -> dict[str, Any]:
        """The resource's properties with every intrinsic resolved."""
        resolved: dict[str, Any] = self.resolve(self.resource(logical_id).properties, logical_id)
        return resolved

    def logical_id_of(self, type_: str, physical_name: str) -> str:
        for res in self.resources(type_):
            if self.physical_name(res.logical_id) == physical_name:
                return res.logical_id
        raise TemplateError(f"the template has no {type_} named {physical_name!r}")


_NAME_PROPERTY = {
    "AWS::S3::Bucket": "BucketName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::IAM::Role": "RoleName",
    "AWS::IAM::Policy": "PolicyName",
    "AWS::Lambda::Function": "FunctionName",
    "AWS::DynamoDB::Table": "TableName",
    "AWS::Events::Rule": "Name",
    "AWS::CodeBuild::Project": "Name",
    "AWS::CodePipeline::Pipeline": "Name",
    "AWS::SNS::Topic": "TopicName",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::SageMaker::ModelPackageGroup": "ModelPackageGroupName",
}
