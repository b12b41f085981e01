"""Credentials per role and the record of every AWS call, checked against the role that makes it.

Every client made through :mod:`alp.aws` during a rehearsal gets a handler that runs before botocore
builds the request: it maps the call to IAM requests (:mod:`alp.rehearsal.calls`), evaluates each against
the true statements of the acting role (:mod:`alp.rehearsal.policy`), records the outcome and refuses a
denied call the way AWS does (``AccessDenied``), naming the role, the action and the resource. moto, with
its own enforcement switched on, checks the same calls again on the server (S3 at resource level).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from alp import aws, principals
from alp.cloudformation.embedded_stack import EmbeddedStack, Role
from alp.environment import patched_environ
from alp.rehearsal.calls import ALWAYS_ALLOWED, Scope, iam_prefix, iam_requests
from alp.rehearsal.policy import Request, allows_action_anywhere, evaluate

_CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@dataclass(frozen=True)
class Denial:
    step: str
    role: str
    action: str
    resource: str
    call: str  # service:Operation as made

    def __str__(self) -> str:
        return f"step {self.step}: role {self.role} may not {self.action} on {self.resource} ({self.call})"


@dataclass
class StepCalls:
    """What one step did: its calls (``service:Operation`` counts) and the resources each IAM action touched."""

    role: str
    calls: Counter[str] = field(default_factory=Counter)
    resources: dict[str, set[str]] = field(default_factory=dict)
    action_only: set[str] = field(default_factory=set)  # calls whose resource is not mapped: action-level check

    def as_json(self) -> dict[str, Any]:
        return {"role": self.role, "calls": dict(sorted(self.calls.items())),
                "resources": {a: sorted(r) for a, r in sorted(self.resources.items())},
                "action_only": sorted(self.action_only)}


@dataclass
class Identity:
    """Who acts: a role of the stack, or a user the rehearsal plays (the uploader)."""

    name: str
    statements: list[dict[str, Any]]
    credentials: dict[str, str]


class PrincipalSwitch:
    """Acts as one identity at a time; checks and records every call made through :mod:`alp.aws`."""

    def __init__(self, stack: EmbeddedStack, scope: Scope) -> None:
        self.stack = stack
        self.scope = scope
        self.identities: dict[str, Identity] = {}
        self.steps: dict[str, StepCalls] = {}
        self.denied: list[Denial] = []
        self._current: Identity | None = None
        self._step = "setup"
        self._env: dict[str, str] = {}

    @property
    def step(self) -> str:
        """The step the calls are booked to now."""
        return self._step

    # --- identities --------------------------------------------------------------------------------
    def assume_roles(self) -> None:
        """STS credentials for every role of the stack (made before IAM enforcement starts)."""
        sts = aws.client("sts")
        for role in self.stack.roles.values():
            creds = sts.assume_role(RoleArn=role.arn, RoleSessionName="rehearsal")["Credentials"]
            self.identities[role.name] = Identity(role.name, role.statements(), {
                "AWS_ACCESS_KEY_ID": creds["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
                "AWS_SESSION_TOKEN": creds["SessionToken"]})

    def add_user(self, name: str, statements: list[dict[str, Any]]) -> None:
        """An IAM user with one inline policy (the uploader the rehearsal plays; not part of the stack)."""
        import json

        iam = aws.client("iam")
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="rehearsal",
                            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        self.identities[name] = Identity(name, statements, {
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]})

    def role(self, role: Role) -> Identity:
        return self.identities[role.name]

    # --- acting ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def acting_as(self, identity: Identity, step: str, environment: Mapping[str, str] | None = None) -> Iterator[None]:
        """Run the block with ``identity``'s credentials (and ``environment``), its calls booked to ``step``."""
        saved = (self._current, self._step)
        values: dict[str, str | None] = {**dict.fromkeys(_CREDENTIAL_ENV), **identity.credentials, **(environment or {})}
        with patched_environ(values):
            self._current, self._step = identity, step
            self.steps.setdefault(step, StepCalls(role=identity.name))
            aws.reset_clients()
            try:
                yield
            finally:
                self._current, self._step = saved
                aws.reset_clients()

    # alp.principals.PrincipalSwitch: what the local workforce asks for
    def acting_as_role(self, role_name: str) -> contextlib.AbstractContextManager[None]:
        return self.acting_as(self.identities[role_name], f"{self._step} > {role_name}")

    def invoke_function(self, function_name: str, handler: Callable[[Any], Any], event: Any) -> Any:
        function = self.stack.functions[function_name]
        self.check("lambda:Invoke", [Request("lambda:InvokeFunction", function.arn)])
        identity = self.identities[self.stack.roles[function.role].name]
        with self.acting_as(identity, f"{self._step.split(' > ')[0]} > lambda {function_name}", function.environment):
            return handler(event)

    # --- checking ----------------------------------------------------------------------------------
    def install(self) -> None:
        aws.add_client_observer(self._observe)
        principals.install(self)

    def uninstall(self) -> None:
        principals.install(None)
        aws.remove_client_observer(self._observe)

    def _observe(self, service: str, client: Any) -> None:
        def before(params: dict[str, Any], model: Any, **_: Any) -> None:
            self.check_call(service, model.name, params)

        def after(http_response: Any, parsed: dict[str, Any], model: Any, **_: Any) -> None:
            # moto's own enforcement refused what the rehearsal's check let through: count it too
            if http_response.status_code == 403 and self._current is not None:
                code = parsed.get("Error", {}).get("Code", "")
                if code in ("AccessDenied", "AccessDeniedException", "403"):
                    denial = Denial(step=self._step, role=self._current.name, action=f"{iam_prefix(service)}:{model.name}",
                                    resource="(refused by the embedded AWS)", call=f"{iam_prefix(service)}:{model.name}")
                    if denial not in self.denied:
                        self.denied.append(denial)

        event_service = client.meta.service_model.service_id.hyphenize()
        client.meta.events.register_first(f"before-parameter-build.{event_service}", before)
        client.meta.events.register(f"after-call.{event_service}", after)

    def check_call(self, service: str, operation: str, params: Mapping[str, Any]) -> None:
        prefix = iam_prefix(service)
        call = f"{prefix}:{operation}"
        if self._current is None or call in ALWAYS_ALLOWED:
            self._book(call, [])
            return
        requests = iam_requests(self.scope, prefix, operation, params)
        if requests is None:
            self._book(call, [], action_only=True)
            if not allows_action_anywhere(self._current.statements, call):
                self._deny(call, Request(call, "*"))
            return
        self.check(call, requests)

    def check(self, call: str, requests: list[Request]) -> None:
        """Evaluate ``requests`` for the acting identity and, for an object of a bucket of the stack, the Deny
        statements of that bucket's policy (an explicit Deny there refuses whatever the role allows; the
        policies here grant nothing, so only their Denies matter); book them; refuse the call on the first
        denial."""
        self._book(call, requests)
        assert self._current is not None
        for request in requests:
            if not evaluate(self._current.statements, request).allowed or self._bucket_policy_denies(request):
                self._deny(call, request)

    def _bucket_policy_denies(self, request: Request) -> bool:
        prefix = f"arn:{self.scope.partition}:s3:::"
        if not request.resource.startswith(prefix):
            return False
        bucket = request.resource[len(prefix):].split("/", 1)[0]
        denies = [s for s in self.stack.bucket_policies.get(bucket, []) if s.get("Effect") == "Deny"]
        # every call of a step in the cloud goes over TLS (the SDK's default), which the SSL-only Deny checks
        context = {**request.context, "aws:SecureTransport": "true"}
        return evaluate(denies, Request(request.action, request.resource, context)).effect == "deny"

    def _book(self, call: str, requests: list[Request], *, action_only: bool = False) -> None:
        name = self._current.name if self._current else "setup"
        record = self.steps.setdefault(self._step, StepCalls(role=name))
        record.calls[call] += 1
        if action_only:
            record.action_only.add(call)
        for r in requests:
            record.resources.setdefault(r.action, set()).add(r.resource)

    def _deny(self, call: str, request: Request) -> None:
        assert self._current is not None
        denial = Denial(step=self._step, role=self._current.name, action=request.action, resource=request.resource,
                        call=call)
        if denial not in self.denied:
            self.denied.append(denial)
        error: Any = {"Error": {"Code": "AccessDenied", "Message": f"rehearsal: {denial}"},
                      "ResponseMetadata": {"HTTPStatusCode": 403}}
        raise ClientError(error, call.split(":", 1)[1])
