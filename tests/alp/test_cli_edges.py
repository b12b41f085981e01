"""The command line's edges: every subcommand fails on a missing file, bad input or missing AWS credentials with one
line naming the problem and the fix, a non-zero exit code and no traceback; ``--debug`` shows the traceback;
``--json`` prints exactly one JSON document, one line; every command says where its settings came from."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from alp import aws
from alp.cli import build_parser, main

M = "/nonexistent/alp-edges"
# per subcommand: arguments that meet an expected condition (a missing file or folder, a bad value, no AWS
# credentials, Label Studio not running) and a word the error line must hold
CASES: dict[str, tuple[list[str], str]] = {
    "bench active-learning": (["--human-share", "2"], "--human-share must be in (0, 1]"),
    "bench local": (["--frames", "0"], "frames"),
    "bench serve": (["--requests", "1"], "requests"),
    "bench infer": (["--weights", f"{M}.pt"], "no such file"),
    "bench synth": (["--width", "0"], "width"),
    "bench train": (["--epochs", "0"], "epochs"),
    "datasets verify": (["--data-root", M], "no dataset version under"),
    "demo": (["--pool", "-1"], "pool"),
    "evaluate": (["--truth", M, "--pred", M], "no such file"),
    "evaluate-bundle": (["--bundle", M, "--dataset", M], "no such file"),
    "infer-batch": (["--manifest", M, "--out", M], "pass --bundle"),
    "label": (["--batch", f"{M}/"], "no such file"),
    "local add": (["--images", M], "give --images a folder of frames"),
    "local status": (["--project-dir", M], "alp local up --images DIR"),
    "local export": (["--format", "coco", "--out", M, "--project-dir", M], "`alp local up` runs the first round"),
    "local up": (["--images", M, "--project-dir", M], "give --images a folder of frames"),
    "local run": (["--project-dir", M], "alp local up --images DIR"),
    "local down": (["--project-dir", M], ""),  # nothing to stop is not an error
    "merge": (["--batch", f"{M}/"], "run the infer and label steps first"),
    "models list": ([], "no AWS credentials"),
    "models current": ([], "no AWS credentials"),
    "models register": (["--bundle", M, "--report", M], "no such file"),
    "prepare-training": (["--dataset", M, "--out", M], "no such file"),
    "quantize-bundle": (["--bundle", M, "--calibration", M, "--out", M], "no such file"),
    "rehearse": (["--cdk-out", M], "run `make synth`"),
    "requeue": (["--batch", f"{M}/"], "no AWS credentials"),
    "serve": (["--bundle", M], "no such file"),
    "settings show": (["--settings-file-missing"], "no such file"),  # the global --settings, see below
    "steps list": (["--settings-file-missing"], ""),  # lists the declared steps: reads no settings, cannot fail
    "steps run": (["labeling", "Merge"], "is not set"),
    "studio up": (["--port", "0"], "port"),
    "studio status": (["--run-dir", M], "alp studio up"),
    "studio down": (["--run-dir", M], ""),  # nothing to stop is not an error
    "synth-data": (["--n", "1", "--out", M, "--width", "0"], "width"),
    "train": (["--dataset", M], "no such file"),
}


def _subcommands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return [name for sub_name, sub in action.choices.items()
                    for name in _subcommands(sub, (*prefix, sub_name))]
    return [" ".join(prefix)]


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials anywhere (environment, files, instance metadata), a folder without cdk.json."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL",
                "ALP_SETTINGS_URI", "ALP_DATA_ROOT", "ALP_STUDIO_FILE", "ALP_STUDIO_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.chdir(tmp_path)
    aws.reset_clients()
    yield
    aws.reset_clients()


def test_every_subcommand_has_a_case() -> None:
    assert sorted(_subcommands(build_parser())) == sorted(CASES)


@pytest.mark.parametrize("command", sorted(CASES))
def test_a_failing_subcommand_says_one_line_with_the_fix_and_no_traceback(
        command: str, no_aws: None, capsys: pytest.CaptureFixture[str]) -> None:
    args, expected = CASES[command]
    argv = [*command.split(), *args]
    if "--settings-file-missing" in args:
        argv = ["--settings", f"{M}.json", *command.split()]
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse refuses a value: its usage line and one error line
        rc = exc.code
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert "Traceback" not in err and "Traceback" not in out
    if command in ("steps list", "studio down", "local down"):
        assert rc == 0
        return
    assert rc not in (0, None), (command, err)
    assert expected in lines[-1], (command, lines[-1])
    assert lines[-1].startswith(("alp ", "usage:")) or "error:" in lines[-1]


def test_every_command_names_its_settings_source(no_aws: None, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["settings", "show", "--json"]) == 0
    out, err = capsys.readouterr()
    assert "built-in default settings (no --settings, no $ALP_SETTINGS_URI, no cdk.json in" in err
    defaults = json.loads(out)
    assert out.count("\n") == 1 and defaults["judgement"]["part_routing"] is True
    # a cdk.json in a folder above the working directory is found
    (tmp_path / "cdk.json").write_text(json.dumps({"context": {"alp": {"judgement": {"audit_fraction": 0.2}}}}))
    below = tmp_path / "a" / "b"
    below.mkdir(parents=True)
    import os

    os.chdir(below)
    assert main(["settings", "show", "--json"]) == 0
    out, err = capsys.readouterr()
    assert f"settings from {tmp_path / 'cdk.json'}" in err and json.loads(out)["judgement"]["audit_fraction"] == 0.2
    # the shown settings read back as a settings file
    (tmp_path / "shown.json").write_text(out)
    assert main(["--settings", str(tmp_path / "shown.json"), "settings", "show", "--json"]) == 0
    again, err = capsys.readouterr()
    assert again == out and f"settings from {tmp_path / 'shown.json'}" in err


def test_debug_shows_the_traceback(no_aws: None) -> None:
    with pytest.raises(FileNotFoundError):
        main(["--debug", "train", "--dataset", M])


@pytest.mark.parametrize("argv", [["settings", "show", "--json"], ["studio", "status", "--json", "--run-dir", "x"]])
def test_json_output_is_one_document_on_one_line(argv: list[str], no_aws: None, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    if argv[0] == "studio":
        from alp.studio.server import STUDIO_FILE, StudioConnection

        (tmp_path / "x").mkdir()
        StudioConnection(url="http://127.0.0.1:9", token="t", username="u", password="p").write(
            tmp_path / "x" / STUDIO_FILE)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n") and out.count("\n") == 1
    json.loads(out)


def test_models_json_is_one_line_with_aws(aws_mock: None, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["models", "list", "--json"], ["models", "current", "--json"]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert out.count("\n") == 1
        json.loads(out)
