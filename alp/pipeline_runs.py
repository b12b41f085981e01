"""The one place a pipeline execution is started (the CodePipeline adapter).

The batcher starts the labeling pipeline for each batch and ``alp merge`` the training pipeline for each
new dataset version. The variables a pipeline takes are declared in :mod:`alp.steps`; a start that names
others is refused here rather than by CodePipeline, after the call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from alp import aws
from alp.steps import PipelineSpec


def start_execution(pipeline_name: str, spec: PipelineSpec, variables: Mapping[str, str], *,
                    request_token: str | None = None) -> str:
    """Start ``pipeline_name`` (deployed from ``spec``) with ``variables`` by their declared names.

    Args:
        pipeline_name: The deployed pipeline's name (``ResourceNames.labeling_pipeline`` and the like).
        spec: Its declaration; ``variables`` must name exactly its variables.
        variables: Variable name -> value.
        request_token: CodePipeline's idempotency token (``clientRequestToken``): a retry with the same token
            starts no second execution. None: every call starts one.

    Returns:
        The pipeline execution id. AWS errors are raised as botocore reports them.
    """
    declared = [v.name for v in spec.variables]
    if sorted(variables) != sorted(declared):
        raise ValueError(f"pipeline {spec.name!r} takes the variables {declared}, not {sorted(variables)}")
    request: dict[str, Any] = {"name": pipeline_name,
                               "variables": [{"name": name, "value": variables[name]} for name in declared]}
    if request_token is not None:
        request["clientRequestToken"] = request_token
    response = aws.client("codepipeline").start_pipeline_execution(**request)
    return str(response["pipelineExecutionId"])
