"""Pure steps keyed by their inputs: Infer and Prepare run again on the same inputs return the stored output.

Given the same batch manifest (by content), bundle (by id) and settings, ``alp infer-batch`` says it reused the
output and writes nothing; another bundle is another output. A run that died after writing the outputs but before
recording them complete is never taken for a finished one. ``alp prepare-training`` does the same for a dataset
version and the settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bundle_factory import bright_image, scripted_bundle
from faults import SimulatedCrash
from PIL import Image

from alp.cli import main
from alp.settings import SETTINGS_ENV, Settings
from alp.step_outputs import RECORD_FILE, read_record
from training.sample_data import write_sample_version


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A local batch of 6 images (one unreadable), two scripted bundles and the settings the step reads."""
    batch_dir = tmp_path / "data" / "batches" / "20260101T000000Z-0000000000000001"
    (tmp_path / "images").mkdir()
    lines = []
    for i in range(6):
        path = tmp_path / "images" / f"{i}.png"
        if i == 4:
            path.write_bytes(b"")
        else:
            Image.fromarray(bright_image(240 if i % 2 else 80)).save(path)
        lines.append(json.dumps({"source-ref": str(path)}))
    batch_dir.mkdir(parents=True)
    (batch_dir / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(Settings().with_overrides({"judgement.audit_fraction": 0.3}).to_json())
    monkeypatch.setenv(SETTINGS_ENV, str(settings_file))
    return {"manifest": str(batch_dir / "manifest.jsonl"), "out": batch_dir / "inference",
            "a": str(scripted_bundle(tmp_path / "bundle-a", bundle_id="scripted-a")),
            "b": str(scripted_bundle(tmp_path / "bundle-b", bundle_id="scripted-b"))}


def _infer(batch: dict[str, Any], bundle: str, *extra: str) -> int:
    return main(["infer-batch", "--manifest", batch["manifest"], "--out", str(batch["out"]) + "/", "--bundle",
                 bundle, "--executor", "local", *extra])


def _counting_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from inference import runner

    runs: list[str] = []
    real = runner.run_batch

    def run_batch(manifest_uri: str, *args: Any, **kwargs: Any) -> Any:
        runs.append(manifest_uri)
        return real(manifest_uri, *args, **kwargs)

    monkeypatch.setattr(runner, "run_batch", run_batch)
    return runs


def test_given_the_same_batch_and_bundle_then_infer_reuses_its_output_and_another_bundle_recomputes(
        batch, monkeypatch, capsys):
    runs = _counting_runs(monkeypatch)
    assert _infer(batch, batch["a"], "--json") == 0
    first_json = capsys.readouterr().out.strip().splitlines()[-1]
    first = _files(batch["out"])
    record = read_record(str(batch["out"]))
    assert record is not None and record.complete and record.inputs["bundle_id"] == "scripted-a"

    assert _infer(batch, batch["a"], "--json") == 0
    captured = capsys.readouterr()
    assert (f"infer-batch: reused the output for this batch and bundle scripted-a (inputs "
            f"{record.inputs_sha256[:12]}); nothing inferred") in captured.err
    assert captured.out.strip().splitlines()[-1] == first_json  # the same report, routes included
    assert _files(batch["out"]) == first  # not a byte rewritten, summary.json's timings included
    assert len(runs) == 1

    assert _infer(batch, batch["b"]) == 0
    assert "reused" not in capsys.readouterr().err and len(runs) == 2
    other = read_record(str(batch["out"]))
    assert other is not None and other.complete and other.inputs["bundle_id"] == "scripted-b"
    assert other.inputs_sha256 != record.inputs_sha256
    assert json.loads((batch["out"] / "summary.json").read_text())["bundle_id"] == "scripted-b"


def test_given_a_run_that_died_before_recording_its_output_then_the_next_run_does_not_trust_it(
        batch, monkeypatch, capsys):
    runs = _counting_runs(monkeypatch)
    assert _infer(batch, batch["a"]) == 0
    first = _files(batch["out"])

    def die(*args: Any, **kwargs: Any) -> None:
        raise SimulatedCrash("the container died after the outputs, before the record")

    with monkeypatch.context() as m:  # bundle b's run rewrites the outputs and dies just before the record
        m.setattr("alp.observability.emit_metrics", die)
        with pytest.raises(SimulatedCrash):
            _infer(batch, batch["b"])
    record = read_record(str(batch["out"]))
    assert record is not None and not record.complete
    assert json.loads((batch["out"] / "summary.json").read_text())["bundle_id"] == "scripted-b"

    assert _infer(batch, batch["a"]) == 0  # bundle a again: its old record is gone, so it is computed again
    assert "reused" not in capsys.readouterr().err and len(runs) == 3
    again = _files(batch["out"])

    def without_timings(files: dict[str, bytes]) -> dict[str, Any]:
        summary = json.loads(files.pop("summary.json"))
        record = json.loads(files.pop(RECORD_FILE))
        summary.pop("timings")
        record["result"]["summary"].pop("timings")
        return {**files, "summary.json": summary, RECORD_FILE: record}

    assert without_timings(again) == without_timings(first)


def test_given_the_same_dataset_version_then_prepare_reuses_the_prepared_data(tmp_path, monkeypatch, capsys):
    settings = Settings()
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(settings.to_json())
    monkeypatch.setenv(SETTINGS_ENV, str(settings_file))
    version = write_sample_version(str(tmp_path / "data"), settings, n_train=3, n_val=1, n_test=1, img_w=64, img_h=48)
    out = tmp_path / "yolo"
    assert main(["prepare-training", "--dataset", version, "--out", str(out), "--json"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["images"] == {"train": 3, "val": 1} and not first["reused"]
    record = read_record(str(out))
    assert record is not None and record.complete and record.inputs["dataset_version"] == "v0001"
    prepared = _files(out)

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("prepared again")

    with monkeypatch.context() as m:
        m.setattr("training.prepare.prepare_training", never)
        assert main(["prepare-training", "--dataset", version, "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    assert (f"prepare-training: reused the prepared data of dataset v0001 at {out} (inputs "
            f"{record.inputs_sha256[:12]}); nothing converted") in captured.err
    assert json.loads(captured.out.strip().splitlines()[-1]) == {**first, "reused": True}
    assert _files(out) == prepared

    # the version's content changed (a record less): converted again
    manifest = Path(version) / "manifest.jsonl"
    manifest.write_text("".join(manifest.read_text().splitlines(keepends=True)[1:]))
    assert main(["prepare-training", "--dataset", version, "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    assert "reused" not in captured.err and json.loads(captured.out.strip().splitlines()[-1])["images"]["train"] == 2
    changed = read_record(str(out))
    assert changed is not None and changed.complete and changed.inputs_sha256 != record.inputs_sha256
