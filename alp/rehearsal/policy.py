"""IAM policy evaluation for one request: explicit Deny wins, then any Allow, else the implicit deny.

Covers what identity policies of this stack use: ``Action``/``NotAction`` (case-insensitive, ``*`` and ``?``
wildcards), ``Resource``/``NotResource`` (case-sensitive wildcards) and the condition operators of the
String, Arn, Bool and Null families with ``...IfExists``. A condition on a key the request does not carry
does not match (as in IAM), so an Allow that needs ``iam:PassedToService`` is not granted to a request
without it. Unknown operators make the statement not apply, which can only deny more, never allow more.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal


@dataclass(frozen=True)
class Request:
    action: str
    resource: str
    context: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    effect: Literal["allow", "deny", "implicit-deny"]
    statement: str = ""  # the Sid (or index) of the deciding statement

    @property
    def allowed(self) -> bool:
        return self.effect == "allow"


@lru_cache(maxsize=4096)
def _pattern(glob: str, case_sensitive: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)
    return re.compile(f"^{body}$", 0 if case_sensitive else re.IGNORECASE)


def matches(glob: str, value: str, *, case_sensitive: bool = True) -> bool:
    return _pattern(glob, case_sensitive).match(value) is not None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _any_match(globs: Any, value: str, *, case_sensitive: bool) -> bool:
    return any(matches(str(g), value, case_sensitive=case_sensitive) for g in _as_list(globs))


def _condition_holds(operator: str, key: str, expected: Any, context: Mapping[str, str]) -> bool:
    if_exists = operator.endswith("IfExists")
    op = operator.removesuffix("IfExists")
    if op == "Null":
        want_null = str(_as_list(expected)[0]).lower() == "true"
        return (key not in context) == want_null
    if key not in context:
        return if_exists
    actual = context[key]
    values = [str(v) for v in _as_list(expected)]
    checks = {
        "StringEquals": lambda: actual in values,
        "StringNotEquals": lambda: actual not in values,
        "StringEqualsIgnoreCase": lambda: actual.lower() in [v.lower() for v in values],
        "StringLike": lambda: any(matches(v, actual) for v in values),
        "StringNotLike": lambda: not any(matches(v, actual) for v in values),
        "ArnEquals": lambda: actual in values,
        "ArnLike": lambda: any(matches(v, actual) for v in values),
        "ArnNotEquals": lambda: actual not in values,
        "ArnNotLike": lambda: not any(matches(v, actual) for v in values),
        "Bool": lambda: actual.lower() in [v.lower() for v in values],
    }
    check = checks.get(op)
    return bool(check()) if check else False


def _conditions_hold(conditions: Mapping[str, Mapping[str, Any]], context: Mapping[str, str]) -> bool:
    return all(_condition_holds(op, key, expected, context)
               for op, by_key in conditions.items() for key, expected in by_key.items())


def statement_applies(statement: Mapping[str, Any], request: Request) -> bool:
    if "Action" in statement:
        if not _any_match(statement["Action"], request.action, case_sensitive=False):
            return False
    elif "NotAction" in statement:
        if _any_match(statement["NotAction"], request.action, case_sensitive=False):
            return False
    else:
        return False
    if "Resource" in statement:
        if not _any_match(statement["Resource"], request.resource, case_sensitive=True):
            return False
    elif "NotResource" in statement and _any_match(statement["NotResource"], request.resource, case_sensitive=True):
        return False
    return _conditions_hold(statement.get("Condition") or {}, request.context)


def evaluate(statements: Sequence[Mapping[str, Any]], request: Request) -> Decision:
    allow: Decision | None = None
    for i, statement in enumerate(statements):
        if not statement_applies(statement, request):
            continue
        label = str(statement.get("Sid") or f"statement {i}")
        if statement.get("Effect") == "Deny":
            return Decision("deny", label)
        allow = allow or Decision("allow", label)
    return allow or Decision("implicit-deny")


def allows_action_anywhere(statements: Iterable[Mapping[str, Any]], action: str) -> bool:
    """Whether any Allow names ``action`` at all (the check for calls whose resource is not mapped)."""
    return any(s.get("Effect") == "Allow" and "Action" in s
               and _any_match(s["Action"], action, case_sensitive=False) for s in statements)
