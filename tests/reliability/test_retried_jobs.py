"""Retried Train and Infer (on a Processing job): one job and one bundle, whichever point the first run died at.

CodePipeline retries a failed stage by running its CodeBuild action again, and a container may die anywhere: before
the SageMaker job starts, while the step waits for it, after it ended (while its output is fetched, merged or
written). The crash is injected where the process would die (:mod:`faults`: a ``BaseException`` from inside the
boto3 call, or from the write of a file), the step runs again, and what SageMaker knows (ListTrainingJobs /
ListProcessingJobs) and what lies under the candidates prefix are counted.

Moto records a job ``Completed`` at once and runs nothing, so :mod:`job_doubles` puts each job's output where
SageMaker would (a ``model.tar.gz``; the shards of the Processing instances) and holds a job ``InProgress`` or
``Failed`` when a case needs it. Training itself and the ONNX export are replaced by placeholders (the files they
write, hashed like real ones): what is under test is which job a step takes and when a bundle counts as written.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bundle_factory import bright_image, scripted_bundle
from faults import SimulatedCrash, crash_on
from job_doubles import ProcessingJobShards, TrainingJobOutput, job_names, set_job_status
from PIL import Image

from alp import aws, storage
from alp.bundle import MODEL_ROLES, BundleDescriptor, ModelFile, sha256_file, write_bundle
from alp.cli import main
from alp.manifest import read_manifest
from alp.resources import ResourceNames
from alp.settings import SETTINGS_ENV, Settings
from alp.step_outputs import read_record
from training.checkpoints import StartPoint
from training.entry import TRAINING_SUMMARY, ModelOutcome, TrainingOutcome, TrainParams
from training.prepare import MODEL_NAMES
from training.sagemaker_job import TrainingJobFailed
from training.sample_data import write_sample_version

ACCOUNT = "123456789012"


# --- training -----------------------------------------------------------------------------------------------------

def _training_settings(backend: str) -> Settings:
    return Settings().with_overrides({
        "training.backend": backend, "training.warm_start": False, "training.onnx_precision": "fp32",
        "training.fit_visibility_thresholds": False, "training.epochs": 2})


def _trained_models(model_dir: Path, params: TrainParams) -> TrainingOutcome:
    """What the entry script leaves in its model folder: a checkpoint per model and ``training.json``."""
    (model_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    models = {}
    for model in MODEL_NAMES:
        path = model_dir / "checkpoints" / f"{model}.pt"
        path.write_bytes(f"weights of {model} after {params.epochs} epochs".encode())
        models[model] = ModelOutcome(checkpoint=f"checkpoints/{model}.pt", sha256=sha256_file(path),
                                     start=StartPoint(kind="cold", source="yolo11n.yaml"), seconds=0.1,
                                     epochs_run=params.epochs)
    outcome = TrainingOutcome(params=params, dataset_version="v0001", models=models, seconds=0.3)
    (model_dir / TRAINING_SUMMARY).write_text(outcome.model_dump_json())
    return outcome


def _placeholder_export(out_dir: Any, head: Any, main_model: Any, visible: Any, imgsz: int, schema: Any,
                        dataset_version: str | None = None, metrics: Any = None, training: Any = None, *,
                        bundle_id: str | None = None, **_: Any) -> BundleDescriptor:
    """``training.export.make_bundle`` without ultralytics: a file per model, hashed, and ``bundle.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files, entries = {}, {}
    for role, source in zip(MODEL_ROLES, (head, main_model, visible), strict=True):
        path = out / f"{role}.onnx"
        path.write_bytes(b"onnx of " + Path(source).read_bytes())
        files[role] = path
        entries[role] = ModelFile(file=path.name, sha256=sha256_file(path), input_size=(0, 0),
                                  task="detect" if role == "head" else "pose")
    desc = BundleDescriptor(bundle_id=bundle_id or "x", created_at="2026-01-01T00:00:00.000000", imgsz=imgsz,
                            keypoint_schema=schema.name, keypoint_names=schema.names, models=entries,
                            dataset_version=dataset_version, training=training or {})
    write_bundle(str(out), desc, files)
    return desc


@contextlib.contextmanager
def _crash_writing(monkeypatch: pytest.MonkeyPatch, suffix: str) -> Iterator[None]:
    """The process dies as it copies a file whose location ends with ``suffix`` (before any byte is there)."""
    real = storage.write_file

    def write_file(uri: str, local_path: Any, **kw: Any) -> str:
        if uri.endswith(suffix):
            raise SimulatedCrash(f"simulated crash writing {uri}")
        return real(uri, local_path, **kw)

    with monkeypatch.context() as m:
        m.setattr(storage, "write_file", write_file)
        yield


@contextlib.contextmanager
def _ends_while_watched(kind: str) -> Iterator[None]:
    """A job found ``InProgress`` completes right after the step looked: the step's wait then sees it end."""
    sm = aws.client("sagemaker")
    operation, key, status_key = ("DescribeTrainingJob", "TrainingJobName", "TrainingJobStatus") if kind == "training" \
        else ("DescribeProcessingJob", "ProcessingJobName", "ProcessingJobStatus")
    event = f"after-call.sagemaker.{operation}"

    def hook(parsed: dict[str, Any], **_: Any) -> None:
        if parsed.get(status_key) == "InProgress":
            set_job_status(kind, parsed[key], "Completed")  # type: ignore[arg-type]

    sm.meta.events.register(event, hook)
    try:
        yield
    finally:
        sm.meta.events.unregister(event, hook)


@pytest.fixture
def cloud(tmp_path: Path, aws_mock: None, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A dataset version, prepared data on S3 and the buckets of the stack, with training and export stubbed."""
    monkeypatch.setattr("training.export.make_bundle", _placeholder_export)
    settings = _training_settings("sagemaker")
    names = ResourceNames.from_settings(settings, ACCOUNT)
    s3 = aws.client("s3")
    for bucket in (names.data_bucket, names.training_artifact_bucket):
        s3.create_bucket(Bucket=bucket)
    version = write_sample_version(str(tmp_path / "data"), settings, n_train=2, n_val=1, n_test=0, img_w=64, img_h=48)
    candidate = f"s3://{names.data_bucket}/models/candidates/v0001/"
    s3.put_object(Bucket=names.data_bucket, Key="models/candidates/v0001/yolo/prepared.json", Body=b"{}")
    model_dir = tmp_path / "job-output"
    _trained_models(model_dir, TrainParams(epochs=2, imgsz=64, batch=4))
    return {"settings": settings, "names": names, "version": version, "prepared": candidate + "yolo/",
            "out": candidate + "bundle/", "model_dir": model_dir}


def _bundles(names: ResourceNames) -> list[str]:
    return [u for u in storage.list_uris(f"s3://{names.data_bucket}/models/candidates/") if u.endswith("/bundle.json")]


def _train(cloud: dict[str, Any], logs: list[str], settings: Settings | None = None) -> Any:
    from training.train import train_bundle

    return train_bundle(cloud["version"], cloud["out"], settings or cloud["settings"], prepared_uri=cloud["prepared"],
                        log=logs.append)


TRAIN_CRASHES = {
    # point of death -> what the retried step says it does about the job
    "before the job starts": "started, attempt 1",
    "while the job runs": "still runs; waiting for it",
    "after the job ended, fetching its artifacts": "completed already; fetching its artifacts",
    "after the job ended, writing the bundle": "completed already; fetching its artifacts",
    "after the step ended": "reused the bundle",
}


def _crash_in_job_calls(point: str, job: str) -> contextlib.AbstractContextManager[object] | None:
    """The crash at a point that lies in the SageMaker job calls themselves (``job``: TrainingJob or ProcessingJob);
    None for the points after the job."""
    sm = aws.client("sagemaker")
    if point == "before the job starts":
        return crash_on(sm, f"Create{job}")
    if point == "while the job runs":  # call 1 looks for the job (none yet); call 2 is the wait's first poll
        return crash_on(sm, f"Describe{job}", call=2)
    return None


@contextlib.contextmanager
def _train_crash(point: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    s3 = aws.client("s3")
    if (job_crash := _crash_in_job_calls(point, "TrainingJob")) is not None:
        with job_crash, pytest.raises(SimulatedCrash):
            yield
    elif point == "after the job ended, fetching its artifacts":
        with crash_on(s3, "GetObject", when=lambda p: str(p.get("Key", "")).endswith("model.tar.gz")), \
                pytest.raises(SimulatedCrash):
            yield
    elif point == "after the job ended, writing the bundle":
        with _crash_writing(monkeypatch, "/bundle/bundle.json"), pytest.raises(SimulatedCrash):
            yield
    else:
        yield


@pytest.mark.parametrize("point", list(TRAIN_CRASHES))
def test_given_train_dies_at_any_point_then_its_retry_leaves_one_training_job_and_one_bundle(
        cloud, monkeypatch, point):
    job_output = TrainingJobOutput(cloud["model_dir"], then="InProgress" if point == "while the job runs" else None)
    first_logs: list[str] = []
    with _train_crash(point, monkeypatch):
        _train(cloud, first_logs)
    if point == "after the job ended, writing the bundle":
        # every other file is there, bundle.json is not: not a bundle (the retry must not take it for one)
        assert storage.exists(cloud["out"] + "pose_main.onnx") and not _bundles(cloud["names"])
    logs: list[str] = []
    with _ends_while_watched("training"):
        result = _train(cloud, logs)
    job_output.close()

    assert any(TRAIN_CRASHES[point] in line for line in logs), logs
    jobs = job_names("training")
    assert len(jobs) == 1 and jobs == job_output.created
    assert jobs[0] == f"alp-train-v0001-{result.inputs_sha256[:12]}" == result.training_job_name
    assert _bundles(cloud["names"]) == [cloud["out"] + "bundle.json"]
    assert result.descriptor.bundle_id == f"v0001-{result.inputs_sha256[:12]}"
    assert result.reused == (point == "after the step ended")
    # the bundle is whole: every file it names is there with its hash
    from alp.bundle import load_bundle

    assert load_bundle(cloud["out"], cloud["model_dir"].parent / "cache").descriptor == result.descriptor
    # and a further retry takes it as it is
    assert _train(cloud, []).reused


def test_given_the_training_job_failed_then_the_retry_starts_attempt_two_and_nothing_more(cloud):
    job_output = TrainingJobOutput(cloud["model_dir"], then="Failed")
    with pytest.raises(TrainingJobFailed, match="ended Failed.*next attempt"):
        _train(cloud, [])
    assert not _bundles(cloud["names"])
    job_output.then = None
    logs: list[str] = []
    result = _train(cloud, logs)
    _train(cloud, [])  # one more retry, after the success: nothing new
    job_output.close()

    first = f"alp-train-v0001-{result.inputs_sha256[:12]}"
    assert job_names("training") == job_output.created == [first, f"{first}-a2"]
    assert result.training_job_name == f"{first}-a2" and result.descriptor.training["training_job_name"] == f"{first}-a2"
    assert any(f"attempt 2 (after {first}: Failed)" in line for line in logs), logs
    assert len(_bundles(cloud["names"])) == 1


def test_given_inputs_that_differ_then_another_bundle_id_and_another_job(cloud):
    job_output = TrainingJobOutput(cloud["model_dir"])
    first = _train(cloud, [])
    other = _train(cloud, [], cloud["settings"].with_overrides({"training.epochs": 3}))
    job_output.close()
    assert first.descriptor.bundle_id != other.descriptor.bundle_id and not other.reused
    assert job_names("training") == sorted([first.training_job_name, other.training_job_name])
    # one --out: the newer bundle replaced the older one whole
    assert _bundles(cloud["names"]) == [cloud["out"] + "bundle.json"]
    assert json.loads(storage.read_text(cloud["out"] + "bundle.json"))["bundle_id"] == other.descriptor.bundle_id


@pytest.fixture
def local_training(cloud, monkeypatch) -> dict[str, Any]:
    """The local backend, its trainer replaced by one that counts its calls."""
    calls: list[Path] = []

    def run_training(data_root: Path, out_dir: Path, work_dir: Path, params: TrainParams, **_: Any) -> TrainingOutcome:
        calls.append(out_dir)
        return _trained_models(out_dir, params)

    monkeypatch.setattr("training.train.run_training", run_training)
    prepared = cloud["model_dir"].parent / "prepared"
    prepared.mkdir()
    return {**cloud, "settings": _training_settings("local"), "prepared": str(prepared), "calls": calls}


def test_given_a_complete_local_bundle_then_a_retry_returns_it_without_training(local_training):
    logs: list[str] = []
    first = _train(local_training, logs)
    again = _train(local_training, logs)
    assert len(local_training["calls"]) == 1 and not first.reused and again.reused
    assert again.descriptor.bundle_id == first.descriptor.bundle_id and again.inputs_sha256 == first.inputs_sha256
    assert logs[-1] == (f"train: reused the bundle {first.descriptor.bundle_id} at {local_training['out']}: "
                        f"complete, from the same inputs ({first.inputs_sha256[:12]}); nothing trained")
    assert first.descriptor.training["inputs_sha256"] == first.inputs_sha256
    assert not job_names("training")


def test_given_a_local_bundle_cut_off_by_a_crash_then_the_retry_trains_it_again(local_training, monkeypatch):
    with _crash_writing(monkeypatch, "/bundle/bundle.json"), pytest.raises(SimulatedCrash):
        _train(local_training, [])
    assert storage.exists(local_training["out"] + "checkpoints/head.pt")  # a partial folder: not trusted
    result = _train(local_training, [])
    assert len(local_training["calls"]) == 2 and not result.reused
    assert _bundles(local_training["names"]) == [local_training["out"] + "bundle.json"]
    assert _train(local_training, []).reused and len(local_training["calls"]) == 2


def test_given_a_bundle_json_of_another_bundle_then_it_is_not_taken_for_this_one(local_training):
    first = _train(local_training, [])
    desc = json.loads(storage.read_text(local_training["out"] + "bundle.json"))
    desc["training"]["inputs_sha256"] = "0" * 64  # same id, other inputs: what the id's 12 hex cannot tell apart
    storage.write_text(local_training["out"] + "bundle.json", json.dumps(desc))
    again = _train(local_training, [])
    assert not again.reused and len(local_training["calls"]) == 2
    assert again.descriptor.bundle_id == first.descriptor.bundle_id


# --- inference on a Processing job --------------------------------------------------------------------------------

BATCH_ID = "20260101T000000Z-00000000000000aa"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/alp:1"


@pytest.fixture
def batch(tmp_path: Path, aws_mock: None, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A batch of 9 images (one unreadable) in the data bucket, a scripted bundle, settings for 2 instances."""
    from inference.engine import InferenceEngine

    bucket = "alp-retry-data"
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=bucket)
    lines = []
    for i in range(9):
        buf = io.BytesIO()
        Image.fromarray(bright_image(240 if i % 3 else 80)).save(buf, format="PNG")
        s3.put_object(Bucket=bucket, Key=f"incoming/{i}.png", Body=buf.getvalue() if i != 4 else b"")
        lines.append(json.dumps({"source-ref": f"s3://{bucket}/incoming/{i}.png"}))
    batch_dir = f"s3://{bucket}/batches/{BATCH_ID}/"
    storage.write_text(batch_dir + "manifest.jsonl", "\n".join(lines) + "\n")
    settings = Settings().with_overrides({"inference.processing_image_uri": IMAGE,
                                          "compute.processing_instance_count": 2, "judgement.audit_fraction": 0.3})
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(settings.to_json())
    monkeypatch.setenv(SETTINGS_ENV, str(settings_file))
    bundle = scripted_bundle(tmp_path / "bundle", bundle_id="scripted-a")
    engine = InferenceEngine.from_bundle(str(bundle), settings, tmp_path / "cache")
    return {"settings": settings, "batch_dir": batch_dir, "manifest": batch_dir + "manifest.jsonl",
            "out": batch_dir + "inference/", "bundle": str(bundle), "engine": engine, "images": 9}


def _infer(batch: dict[str, Any]) -> int:
    return main(["infer-batch", "--manifest", batch["manifest"], "--out", batch["out"], "--bundle", batch["bundle"],
                 "--executor", "processing"])


def _routed_once(batch: dict[str, Any]) -> None:
    """Every image of the manifest is in exactly one of the top-level outputs, and the output is recorded whole."""
    refs = [line.source_ref for name in ("auto.jsonl", "human.jsonl", "quarantine.jsonl")
            for line in read_manifest(batch["out"] + name)]
    assert sorted(refs) == sorted(line.source_ref for line in read_manifest(batch["manifest"]))
    summary = json.loads(storage.read_text(batch["out"] + "summary.json"))
    assert summary["inputs"] == batch["images"] and summary["invariant"].startswith(f"inputs {batch['images']} = ")
    record = read_record(batch["out"])
    assert record is not None and record.complete and record.inputs["bundle_id"] == "scripted-a"


INFER_CRASHES = {
    "before the job starts": "started processing job",
    "while the job runs": "still runs; waiting for it",
    "after the job ended, merging its shards": "completed already; merging its shards",
    "after the outputs, before the record": "completed already; merging its shards",
    "after the step ended": "reused the output for this batch and bundle scripted-a",
}


@contextlib.contextmanager
def _infer_crash(point: str, out: str) -> Iterator[None]:
    s3 = aws.client("s3")
    out_key = out.split("/", 3)[3]
    if (job_crash := _crash_in_job_calls(point, "ProcessingJob")) is not None:
        with job_crash, pytest.raises(SimulatedCrash):
            yield
    elif point == "after the job ended, merging its shards":  # the merged lines are written, not their summary
        with crash_on(s3, "PutObject", when=lambda p: p.get("Key") == out_key + "summary.json"), \
                pytest.raises(SimulatedCrash):
            yield
    elif point == "after the outputs, before the record":
        with crash_on(s3, "PutObject", when=lambda p: p.get("Key") == out_key + "inputs.json"), \
                pytest.raises(SimulatedCrash):
            yield
    else:
        yield


@pytest.mark.parametrize("point", list(INFER_CRASHES))
def test_given_infer_dies_at_any_point_then_its_retry_leaves_one_processing_job(batch, capsys, point):
    instances = ProcessingJobShards(batch["settings"], batch["engine"],
                                    then="InProgress" if point == "while the job runs" else None)
    with _infer_crash(point, batch["out"]):
        assert _infer(batch) == 0
    if point != "after the step ended":
        record = read_record(batch["out"])
        assert record is None or not record.complete  # what the dead run left is not taken for an output
    capsys.readouterr()
    with _ends_while_watched("processing"):
        assert _infer(batch) == 0
    instances.close()

    err = capsys.readouterr().err
    assert INFER_CRASHES[point] in err, err
    jobs = job_names("processing")
    assert len(jobs) == 1 and jobs == instances.created and jobs[0].startswith(f"alp-infer-{BATCH_ID}-")
    # the job's shards lie under its own name; nothing else was written there
    assert {u.split("/shards/")[1].split("/")[0] for u in storage.list_uris(batch["out"] + "shards/")} == set(jobs)
    _routed_once(batch)


def test_given_the_processing_job_failed_then_the_retry_runs_attempt_two_and_merges_only_its_shards(batch, capsys):
    # the first job dies after one of its two instances uploaded its shard
    instances = ProcessingJobShards(batch["settings"], batch["engine"], then="Failed", instances=1)
    assert _infer(batch) != 0  # one line on stderr: the job failed, run the step again
    assert "next attempt" in capsys.readouterr().err
    instances.then, instances.instances = None, None
    assert _infer(batch) == 0
    instances.close()

    first = instances.created[0]
    assert job_names("processing") == instances.created == [first, f"{first}-a2"]
    assert "attempt 2 (after" in capsys.readouterr().err
    shard_files = list(storage.list_uris(batch["out"] + "shards/"))
    # the failed attempt's one shard is still there, apart; the merge read only attempt 2's two
    assert {u.split("/shards/")[1].split("/")[1] for u in shard_files if f"/{first}/" in u} == {"shard-00000-of-00002"}
    assert len({u.split("/shards/")[1].split("/")[1] for u in shard_files if f"/{first}-a2/" in u}) == 2
    _routed_once(batch)


def test_a_job_of_one_instance_is_merged_from_the_top_of_its_output(batch, tmp_path, monkeypatch):
    one = batch["settings"].with_overrides({"compute.processing_instance_count": 1})
    (tmp_path / "settings.json").write_text(one.to_json())
    instances = ProcessingJobShards(one, batch["engine"])
    assert _infer(batch) == 0
    instances.close()
    assert len(job_names("processing")) == 1
    _routed_once(batch)
