"""The embedded AWS built from the synthesized template: what it creates, reads and skips of the split human
step (the completion pipeline, the completion trigger, its event rule and schedule, their Lambda permissions)."""

from __future__ import annotations

from pathlib import Path

import pytest
from events import event

pytest.importorskip("aws_cdk")

from alp import aws  # noqa: E402
from alp.cloudformation.embedded_stack import create_stack  # noqa: E402
from alp.cloudformation.synth import stack_settings, synthesize_cached  # noqa: E402
from alp.cloudformation.template import StackTemplate  # noqa: E402
from alp.resources import ResourceNames  # noqa: E402
from alp.settings import Settings  # noqa: E402
from alp.steps import LABELING_COMPLETION_PIPELINE  # noqa: E402

ACCOUNT = "123456789012"


@pytest.fixture(scope="module")
def cdk_out() -> Path:
    return synthesize_cached(stack_settings(Settings()))


def test_given_the_template_then_the_completion_pipeline_trigger_and_rules_exist_and_permissions_are_skipped(
        cdk_out: Path, aws_mock: None) -> None:
    settings = Settings()
    names = ResourceNames.from_settings(settings, ACCOUNT, settings.region)
    template = StackTemplate.load(cdk_out, account=ACCOUNT, region=settings.region)

    stack = create_stack(template, deploy_contents=False)

    pipelines = {p["name"] for p in aws.client("codepipeline").list_pipelines()["pipelines"]}
    assert pipelines == {names.labeling_pipeline, names.labeling_completion_pipeline, names.training_pipeline}
    completion = stack.pipelines[names.labeling_completion_pipeline]
    assert [s.name for s in completion.stages] == ["Source", *(s.name for s in LABELING_COMPLETION_PIPELINE.steps)]
    assert all(stack.projects[s.project].role == stack.projects[completion.stages[1].project or ""].role
               for s in completion.stages[1:] if s.project)

    function = stack.functions[names.completion_function]
    assert function.handler == "lambdas.labeling_completion.handler"
    assert "CompletionTriggerFunctionRole" in function.role

    events = aws.client("events")
    check = events.describe_rule(Name=names.waiting_check_rule)
    assert check["ScheduleExpression"] == f"rate({settings.labeling.studio.check_interval_minutes} minutes)"
    assert "EventPattern" not in check
    job_rule = stack.rules[names.labeling_job_state_rule]
    assert stack.rules[names.waiting_check_rule].targets == job_rule.targets == (function.arn,)
    assert [t["Arn"] for t in events.list_targets_by_rule(Rule=names.labeling_job_state_rule)["Targets"]] == [
        function.arn]
    ended = event("gt_labeling_job_state_change.eventbridge", JOB_NAME="alp-heads-0123456789abcdef",
                  STATUS="Completed")
    assert job_rule.matches(ended)
    assert not job_rule.matches({**ended, "detail": {"LabelingJobStatus": "InProgress"}})
    assert stack.rules[names.waiting_check_rule].matches(event("scheduled_event.eventbridge", RULE="r"))

    permissions = [lid for lid, why in stack.skipped.items() if why.startswith("AWS::Lambda::Permission")]
    assert len(permissions) == 2  # EventBridge's invoke rights: the runners hand the events over themselves
