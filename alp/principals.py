"""Who does a piece of work, for the code paths that stand in for an AWS service locally.

In the cloud each Lambda runs under its own role and Ground Truth acts with the labeling job's role; the
local workforce (:mod:`alp.labeling.local`) does both in one process. It says here whose work it is doing,
and :mod:`alp.rehearsal` makes that true (credentials of that role, every call checked against it). With
no rehearsal running, both functions only call through.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol


class PrincipalSwitch(Protocol):
    def acting_as_role(self, role_name: str) -> contextlib.AbstractContextManager[None]: ...

    def invoke_function(self, function_name: str, handler: Callable[[Any], Any], event: Any) -> Any: ...


_switch: PrincipalSwitch | None = None


def install(switch: PrincipalSwitch | None) -> None:
    global _switch  # noqa: PLW0603 - one rehearsal per process at a time
    _switch = switch


@contextlib.contextmanager
def acting_as_role(role_name: str) -> Iterator[None]:
    """Run the block as the service that would use ``role_name`` (Ground Truth with the job's role)."""
    if _switch is None:
        yield
        return
    with _switch.acting_as_role(role_name):
        yield


def invoke_function(function_name: str, handler: Callable[[Any], Any], event: Any) -> Any:
    """Invoke a Lambda handler as ``function_name`` would run (its role), after checking the caller may."""
    if _switch is None:
        return handler(event)
    return _switch.invoke_function(function_name, handler, event)
