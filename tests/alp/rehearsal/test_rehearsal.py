"""The deploy rehearsal: the synthesized stack, every step under its own role, IAM enforced.

The full rehearsal (three variants, two rounds) must pass with no denial, the ``yolo`` variant taking the split
human step in round 0 (its batch waits for people, the completion trigger starts the completion pipeline, once);
and a rehearsal that cannot fail is not one, so for one statement of each of seven roles a test removes it from
the synthesized template and shows that ``alp rehearse --cdk-out`` fails, naming the step, the action and the
resource.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aws_cdk")

from alp.cli import main  # noqa: E402
from alp.cloudformation.template import StackTemplate  # noqa: E402
from alp.rehearsal.policy import matches  # noqa: E402
from alp.rehearsal.run import ACCOUNT, run_rehearsal, synthesized_stack  # noqa: E402

PIPELINE_STEPS = {f"alp-labeling/{s}" for s in ("Infer", "Label", "Merge", "Requeue")} | {
    f"alp-training/{s}" for s in ("Prepare", "Train", "Evaluate", "Register")}
COMPLETION_STEPS = {f"alp-labeling-completion/{s}" for s in ("Label", "Merge", "Requeue")}
TRIGGER = "lambda alp-labeling-completion-trigger"


@pytest.mark.slow
def test_given_the_synthesized_stack_when_rehearsed_then_every_variant_runs_both_pipelines_without_a_denial(tmp_path):
    result = run_rehearsal(tmp_path, rounds=2, say=lambda _m: None)

    report = result.as_json()
    assert report["denied"] == [], report["denied"]
    assert report["ok"], {v: r["error"] for v, r in report["variants"].items()}
    assert set(report["variants"]) == {"yolo", "rekognition", "processing"}
    for variant, v in report["variants"].items():
        ran = [s["step"] for s in v["steps"] if s["ok"]]
        assert set(ran) >= PIPELINE_STEPS, (variant, ran)
        assert ran.count("alp-labeling/Infer") == 2 and ran.count("alp-training/Register") == 2  # two rounds
        calls = v["calls"]
        # each step ran under its own role, the Lambdas under theirs
        assert "LabelingPipelineBuildRole" in calls["alp-labeling/Infer"]["role"]
        assert "TrainingPipelineBuildRole" in calls["alp-training/Prepare"]["role"]
        assert "UploadTriggerBatcherRole" in calls["lambda alp-batcher"]["role"]
        assert any("lambda alp-gt-post-annotation" in step and "PostAnnotationRole" in c["role"]
                   for step, c in calls.items())
        # the per-step record names actions and resources
        assert "s3:GetObject" in calls["alp-training/Prepare"]["resources"]
        assert calls["lambda alp-batcher"]["calls"].get("codepipeline:StartPipelineExecution") == 2
    rek = report["variants"]["rekognition"]["calls"]
    for step in ("alp-labeling/Infer", "alp-training/Evaluate"):
        assert rek[step]["calls"].get("rekognition:DetectCustomLabels", 0) >= 1, step
        assert "rekognition:DescribeProjects" in rek[step]["calls"], step
    processing = report["variants"]["processing"]["calls"]
    # both rounds' batches (8 and 7 images) exceed the variant's threshold (4): two jobs of two instances
    shards = [s for s in processing if "processing job" in s and "#" in s]
    assert len(shards) == 4 and all("sagemaker-execution" in processing[s]["role"] for s in shards)
    assert processing["alp-labeling/Infer"]["calls"].get("sagemaker:CreateProcessingJob") == 2
    _assert_split_human_step(report["variants"]["yolo"])
    assert all("completion" not in report["variants"][v] for v in ("rekognition", "processing"))
    assert "iam:PassRole" in processing["alp-labeling/Infer"]["resources"]
    # round 1's instances detect heads with Rekognition under the SageMaker role; the Infer step that submitted
    # the job holds the model running around it (no instance stops it under the others)
    assert sum(processing[s]["calls"].get("rekognition:DetectCustomLabels", 0) for s in shards) == 6  # 6 images
    assert "rekognition:DescribeProjectVersions" in processing["alp-labeling/Infer"]["calls"]


def _assert_split_human_step(v: dict[str, Any]) -> None:
    """Round 0 of the variant: the Label step left the batch waiting, so the labeling pipeline's Merge started
    nothing; Ground Truth's job event and the scheduled check each started the completion pipeline (its steps
    under its own build role, the trigger under its role); one dataset version, one training run; a check after
    completion started nothing."""
    completion = v["completion"]
    assert completion["started"] == {"labeling-job": 1, "schedule": 1}
    assert completion["executions"] == ["alp-labeling-completion", "alp-labeling-completion", "alp-training"]
    assert completion["dataset_versions"] == 1 and completion["training_runs"] == 1
    assert completion["started_after_completion"] == 0
    ran = [s["step"] for s in v["steps"] if s["ok"]]
    assert set(ran) >= COMPLETION_STEPS
    assert all(ran.count(step) == 2 for step in COMPLETION_STEPS)  # the second execution changes nothing
    calls = v["calls"]
    assert all("LabelingCompletionPipelineBuildRole" in calls[step]["role"] for step in COMPLETION_STEPS)
    assert calls["alp-labeling-completion/Merge"]["calls"].get("codepipeline:StartPipelineExecution") == 1
    # the labeling pipeline's Merge started training in round 1 only: in round 0 the batch was waiting
    assert calls["alp-labeling/Merge"]["calls"].get("codepipeline:StartPipelineExecution") == 1
    for label in ("labeling-job state change", "scheduled check", "check after"):
        step = calls[f"{TRIGGER} ({label})"]
        assert "CompletionTriggerFunctionRole" in step["role"]
        assert set(step["calls"]) <= {"s3:GetObject", "s3:ListObjectsV2", "codepipeline:StartPipelineExecution",
                                      "codepipeline:ListPipelineExecutions", "codepipeline:GetPipelineExecution"}
    assert calls[f"{TRIGGER} (check after)"]["calls"].get("codepipeline:StartPipelineExecution") is None


# --- negative controls -----------------------------------------------------------------------------------
def _copy_without(src: Path, dst: Path, role: str, action: str, resource_part: str
                  ) -> tuple[list[str], list[str], list[str]]:
    """A copy of the cdk.out folder ``src`` whose template lacks the statement of ``role`` that grants
    ``action`` on a resource containing ``resource_part``; returns that statement's actions and resources
    and the names of the roles its policy is attached to."""
    dst.mkdir()
    for entry in src.iterdir():
        if entry.name.startswith("asset."):
            os.symlink(entry, dst / entry.name)
        elif entry.is_file():
            (dst / entry.name).write_bytes(entry.read_bytes())
    path = next(dst.glob("*.template.json"))
    body = json.loads(path.read_text())
    template = StackTemplate(stack_name=path.name.removesuffix(".template.json"), body=body, account=ACCOUNT,
                             region="us-east-1")
    for logical_id, res in body["Resources"].items():
        if res["Type"] != "AWS::IAM::Policy" or role not in logical_id:
            continue
        statements = res["Properties"]["PolicyDocument"]["Statement"]
        for stmt in statements:
            actions = stmt["Action"] if isinstance(stmt["Action"], list) else [stmt["Action"]]
            resources = template.resolve(stmt["Resource"])
            resources = resources if isinstance(resources, list) else [resources]
            hit = [r for r in resources if resource_part in r]
            if action in actions and hit:
                statements.remove(stmt)
                path.write_text(json.dumps(body))
                return actions, resources, template.resolve(res["Properties"]["Roles"])
    raise AssertionError(f"no statement of {role} grants {action} on *{resource_part}*")


CONTROLS = [
    # (role, action, resource part, the step that must be refused)
    # a dataset version's images are its pinned copies in the data bucket (alp/pixels.py), not the uploads
    ("TrainingPipelineBuildRole", "s3:GetObject", "-data/images/", "alp-training/Prepare"),
    ("LabelingPipelineBuildRole", "s3:GetObject", "-unlabeled/incoming/", "alp-labeling/Infer"),
    # round 0 of the yolo variant takes the split human step: its dataset version is made, and training started,
    # by the completion pipeline's Merge (the labeling pipeline's Merge starts training in round 1)
    ("LabelingCompletionPipelineBuildRole", "codepipeline:StartPipelineExecution", ":alp-training",
     "alp-labeling-completion/Merge"),
    ("CompletionTriggerFunctionRole", "codepipeline:StartPipelineExecution", ":alp-labeling-completion", TRIGGER),
    ("UploadTriggerBatcherRole", "dynamodb:PutItem", ":table/alp-batch-ledger", "lambda alp-batcher"),
    ("GroundTruthPostAnnotationRole", "s3:GetObject", "-data/labeling/", "alp-labeling/Label > lambda alp-gt-post"),
    ("SageMakerRole", "lambda:InvokeFunction", ":function:alp-gt-pre-annotation", "alp-labeling/Label"),
]


@pytest.fixture(scope="module")
def yolo_stack() -> Path:
    return synthesized_stack("yolo")


@pytest.mark.slow
@pytest.mark.parametrize(("role", "action", "resource_part", "step"), CONTROLS, ids=[c[0] for c in CONTROLS])
def test_given_a_needed_statement_removed_when_rehearsed_then_it_fails_naming_step_action_and_resource(
        yolo_stack, tmp_path, capsys, role, action, resource_part, step):
    actions, resources, role_names = _copy_without(yolo_stack, tmp_path / "cdk.out", role, action, resource_part)

    rc = main(["rehearse", "--cdk-out", str(tmp_path / "cdk.out"), "--variant", "yolo", "--rounds", "1",
               "--work-dir", str(tmp_path / "work"), "--json"])

    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert report["ok"] is False
    denied = report["denied"]
    assert denied, report["variants"]["yolo"]["error"]
    first = denied[0]
    assert first["step"].startswith(step), first
    assert first["role"] in role_names, (role_names, first)
    assert first["action"] in actions, first
    assert any(matches(r, first["resource"]) for r in resources), (resources, first)
