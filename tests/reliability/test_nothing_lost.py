"""Nothing lost: every upload ends auto-labeled, human-labeled, returned to the queue, or quarantined with a reason.

Faults are injected into the real pipeline on moto (see ``tests/faults.py``): S3 throttling and errors as
HTTP responses inside botocore's retry loop, crashes (a ``BaseException`` nothing may catch) in the middle
of the Infer, Label and Merge steps and of the batcher, and labeling jobs that fail, are stopped or end
partially. After recovery the accounting invariant holds: each uploaded object is in exactly one final
state, quarantined and returned objects carry a reason, and no object is counted twice.
"""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from bundle_factory import bright_image, scripted_bundle
from faults import MiniPipeline, SimulatedCrash, aws_errors, crash_on, no_retry_sleep
from PIL import Image

from alp import aws, storage
from alp.batching.window import BatchResult
from alp.datasets import image_key, list_versions, read_version
from alp.labeling.local import LocalJobSimulation, LocalWorkforceBackend
from alp.labeling.workflow import UNLABELED_KEY, run_label_step
from alp.manifest import OBJECT_KEY, QUARANTINE_KEY, ManifestLine, read_manifest, read_manifest_if_present

SCRIPTED_SIZE = (320, 256)  # the scripted bundle maps a frame of this size 1:1


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def pipe(mini_pipe: MiniPipeline) -> MiniPipeline:
    return mini_pipe


@pytest.fixture
def with_model(pipe: MiniPipeline, tmp_path: Path) -> MiniPipeline:
    """The scripted bundle registered as the champion: bright frames go auto, dark ones to people."""
    pipe.register_approved(scripted_bundle(tmp_path / "scripted-v1"))
    return pipe


def _upload_mixed(p: MiniPipeline) -> dict[str, str]:
    """Uploads whose expected final state is known: key -> expected state."""
    expected: dict[str, str] = {}
    for i in range(3):  # confident -> auto (or audit -> people, also a label)
        expected[p.upload(f"bright-{i}.png", _png(bright_image(235 + i, SCRIPTED_SIZE)), seed=i,
                          size=SCRIPTED_SIZE)] = "labeled"
    for i in range(3):  # weak -> people
        expected[p.upload(f"dark-{i}.png", _png(bright_image(60 + 5 * i, SCRIPTED_SIZE)), seed=10 + i,
                          size=SCRIPTED_SIZE)] = "labeled"
    jpeg = io.BytesIO()
    Image.fromarray(bright_image(200, SCRIPTED_SIZE)).save(jpeg, format="JPEG")
    expected[p.upload("truncated.jpg", jpeg.getvalue()[: len(jpeg.getvalue()) // 2])] = "quarantined"
    expected[p.upload("notes.jpg", b"these are not the pixels you are looking for")] = "quarantined"
    return expected


def final_states(results: list[BatchResult]) -> dict[str, list[str]]:
    """Every object the batches saw -> the final states it reached (a correct run has exactly one each).

    States: ``auto``, ``human`` (labeled by people, audit included), ``returned:<reason>`` (back to the queue)
    and ``quarantined:<stage>:<reason>``. A human or audit item that is neither labeled nor returned is lost.
    """
    states: dict[str, list[str]] = defaultdict(list)

    def key_of(line: ManifestLine) -> str:
        return str(line.data[OBJECT_KEY]["key"])

    for r in results:
        if r.quarantine_uri:
            for line in read_manifest(r.quarantine_uri):
                info = line.quarantine()
                assert info is not None and info.reason
                states[key_of(line)].append(f"quarantined:{info.stage}:{info.reason}")
        if not r.manifest_uri:
            continue
        batch_dir = storage.parent(r.manifest_uri)
        for line in read_manifest(r.manifest_uri):
            states.setdefault(key_of(line), [])
        inf = storage.join(batch_dir, "inference") + "/"
        for line in read_manifest(inf + "auto.jsonl"):
            states[key_of(line)].append("auto")
        for line in read_manifest(inf + "quarantine.jsonl"):
            info = line.data[QUARANTINE_KEY]
            assert info["reason"] and info["stage"] == "infer"
            states[key_of(line)].append(f"quarantined:infer:{info['reason']}")
        sent_to_people = {key_of(line) for line in read_manifest(inf + "human.jsonl")}
        lab = storage.join(batch_dir, "labeling") + "/"
        labeled = read_manifest_if_present(lab + "labeled.jsonl")
        returned = read_manifest_if_present(lab + "unlabeled.jsonl")
        for line in labeled:
            states[key_of(line)].append("human")
        for line in returned:
            info = line.data[UNLABELED_KEY]
            assert info["reason"], line
            states[key_of(line)].append(f"returned:{info['reason']}")
        for key in sent_to_people - {key_of(line) for line in labeled + returned}:
            states[key].append("LOST: sent to people, neither labeled nor returned")
    return dict(states)


def assert_accounted(results: list[BatchResult], uploaded: list[str]) -> dict[str, str]:
    states = final_states(results)
    assert sorted(states) == sorted(uploaded), "an upload never reached a batch"
    twice = {k: v for k, v in states.items() if len(v) != 1}
    assert not twice, f"objects without exactly one final state: {twice}"
    return {k: v[0] for k, v in states.items()}


def _dataset_keys(p: MiniPipeline) -> list[str]:
    versions = list_versions(p.names.data_root, p.settings)
    return sorted(image_key(line) for line in read_version(versions[-1])) if versions else []


# --- S3 errors and throttling --------------------------------------------------------------------------
def test_given_s3_throttling_on_reads_and_writes_then_retries_absorb_it_and_nothing_is_lost(
        with_model: MiniPipeline) -> None:
    """Given S3 answering 503 SlowDown to the first image reads and output writes of every step, when the
    pipeline runs, then botocore's retries absorb it: every image gets the route it would have had, and
    no image is quarantined for a read error."""
    p = with_model
    expected = _upload_mixed(p)
    result = p.batch(p.receive_all())
    s3 = aws.client("s3")
    with no_retry_sleep(), \
            aws_errors(s3, "GetObject", times=6, when=lambda url: "/incoming/" in url) as reads, \
            aws_errors(s3, "PutObject", times=4, when=lambda url: "/batches/" in url) as writes:
        p.run_labeling(result.manifest_uri)  # type: ignore[arg-type]
    assert len(reads.injected) == 6 and len(writes.injected) == 4
    states = assert_accounted([result], list(expected))
    for key, state in states.items():
        if expected[key] == "labeled":
            assert state in ("auto", "human"), (key, state)
        else:
            assert state.startswith("quarantined:infer:") and "read_error" not in state, (key, state)
    assert {states[k] for k in states if "bright" in k} <= {"auto", "human"}
    assert {states[k] for k in states if "dark" in k} == {"human"}
    assert _dataset_keys(p) == sorted(k for k, e in expected.items() if e == "labeled")


def test_given_an_object_s3_refuses_for_good_then_it_is_quarantined_with_the_reason(with_model: MiniPipeline) -> None:
    """Given one image S3 answers 500 to on every attempt (retries exhausted), then that image is
    quarantined with reason read_error and the S3 error in its detail; its neighbours are routed."""
    p = with_model
    expected = _upload_mixed(p)
    result = p.batch(p.receive_all())
    with no_retry_sleep(), aws_errors(aws.client("s3"), "GetObject", code="InternalError", status=500, times=None,
                                      # Infer reads the batched version: ?versionId=... follows the key
                                      when=lambda url: url.split("?")[0].endswith("/incoming/dark-1.png")) as log:
        p.run_labeling(result.manifest_uri)  # type: ignore[arg-type]
    assert len(log.injected) == 9  # 1 try + 8 retries (alp.aws: max_attempts 8)
    states = assert_accounted([result], list(expected))
    assert states["incoming/dark-1.png"] == "quarantined:infer:read_error"
    quarantined = read_manifest(storage.parent(result.manifest_uri) + "inference/quarantine.jsonl")  # type: ignore[arg-type]
    detail = next(line.data[QUARANTINE_KEY]["detail"] for line in quarantined if "dark-1" in line.source_ref)
    assert "InternalError" in detail


# --- crashes and resume --------------------------------------------------------------------------------
def test_given_a_crash_in_the_middle_of_inference_then_a_resume_routes_every_image_once(
        with_model: MiniPipeline) -> None:
    """Given the Infer step killed while reading its 4th image, then it leaves no partial outputs (no
    summary, no route files); re-running it routes every image exactly once."""
    p = with_model
    expected = _upload_mixed(p)
    result = p.batch(p.receive_all())
    manifest = result.manifest_uri
    assert manifest is not None
    with pytest.raises(SimulatedCrash), crash_on(aws.client("s3"), "GetObject", call=4,
                                                 when=lambda params: params["Key"].startswith("incoming/")):
        p.run_step("Infer", manifest)
    assert not list(storage.list_uris(storage.parent(manifest) + "inference/")), "a crashed Infer step left outputs"
    p.run_labeling(manifest)
    states = assert_accounted([result], list(expected))
    assert sum(s.startswith("quarantined") for s in states.values()) == 2
    assert _dataset_keys(p) == sorted(k for k, e in expected.items() if e == "labeled")


def test_given_a_crash_between_the_two_labeling_jobs_then_the_resume_reuses_the_first_job(
        pipe: MiniPipeline) -> None:
    """Given the Label step killed after the head-box job finished, while preparing the keypoint job, then
    a re-run finds the head-box job (no second job, no second payment) and labels every image once."""
    p = pipe
    keys = [p.upload(f"cabin-{i}.jpg", seed=i, persons=1 + i % 2) for i in range(4)]
    result = p.batch(p.receive_all())
    manifest = result.manifest_uri
    assert manifest is not None
    assert p.run_step("Infer", manifest) == 0
    with pytest.raises(SimulatedCrash), crash_on(
            aws.client("s3"), "PutObject",
            when=lambda params: "/jobs/alp-kpts-" in params["Key"] and params["Key"].endswith("input.manifest")):
        p.run_step("Label", manifest)
    jobs_dir = storage.parent(manifest) + "labeling/jobs/"
    head_jobs = {u[len(jobs_dir):].split("/")[0] for u in storage.list_uris(jobs_dir)}
    assert len(head_jobs) == 2 and sum(j.startswith("alp-heads-") for j in head_jobs) == 1  # kpts job unfinished
    assert p.run_step("Label", manifest) == 0
    assert p.run_step("Merge", manifest) == 0
    jobs = {u[len(jobs_dir):].split("/")[0] for u in storage.list_uris(jobs_dir)}
    assert jobs == head_jobs
    states = assert_accounted([result], keys)
    assert set(states.values()) == {"human"}
    assert _dataset_keys(p) == sorted(keys)


def test_given_a_crash_while_writing_a_dataset_version_then_the_half_version_is_invisible_and_redone(
        pipe: MiniPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """Given Merge killed after writing the version's manifest but before its dataset.json, then no
    version is listed (training cannot pick up half a version); a re-run writes the next number once, complete,
    and leaves the half version as it is (version files are write-once)."""
    from alp import datasets

    # the crashed merge is known dead here: no waiting for its half version to be finished by someone
    monkeypatch.setattr(datasets, "IN_PROGRESS_SECONDS", 0.0)
    p = pipe
    keys = [p.upload(f"merge-{i}.jpg", seed=i) for i in range(3)]
    result = p.batch(p.receive_all())
    manifest = result.manifest_uri
    assert manifest is not None
    for step in ("Infer", "Label"):
        assert p.run_step(step, manifest) == 0
    with pytest.raises(SimulatedCrash), crash_on(aws.client("s3"), "PutObject",
                                                 when=lambda params: params["Key"].endswith("/dataset.json")):
        p.run_step("Merge", manifest)
    assert list_versions(p.names.data_root, p.settings) == []
    half = p.names.data_root + "datasets/v0001/manifest.jsonl"
    written = storage.read_bytes(half)
    assert p.run_step("Merge", manifest) == 0
    assert p.run_step("Merge", manifest) == 0
    versions = list_versions(p.names.data_root, p.settings)
    assert [storage.basename(v) for v in versions] == ["v0002"]
    assert storage.read_bytes(half) == written and not storage.exists(p.names.data_root + "datasets/v0001/dataset.json")
    assert _dataset_keys(p) == sorted(keys)


def test_given_the_batcher_crashes_before_starting_the_pipeline_then_a_redelivery_finishes_the_batch_once(
        pipe: MiniPipeline) -> None:
    """Given the batcher killed after writing the manifest, before StartPipelineExecution (SQS keeps the
    messages: nothing was acknowledged), when SQS redelivers after the lease, then the same batch is
    started once, and a further redelivery is a duplicate."""
    from alp.batching.window import process_sqs_records

    p = pipe
    keys = [p.upload(f"crash-{i}.jpg", seed=i) for i in range(3)]
    window = p.receive_all()
    with pytest.raises(SimulatedCrash), crash_on(aws.client("codepipeline"), "StartPipelineExecution"):
        process_sqs_records(window, p.settings, p.names, clock=lambda: 1_000.0)
    assert p.keys_under("batches/"), "the manifest was written before the crash"
    lease = p.settings.trigger.batcher_timeout_seconds + 60
    resumed = process_sqs_records(list(reversed(window)), p.settings, p.names, clock=lambda: 1_000.0 + lease)
    assert resumed.failed_message_ids == [] and len(resumed.resumed_batches) == 1
    again = process_sqs_records(window, p.settings, p.names, clock=lambda: 9_000.0)
    assert again.failed_message_ids == [] and again.batch_id is None
    cp = aws.client("codepipeline")
    executions = cp.list_pipeline_executions(pipelineName=p.names.labeling_pipeline)["pipelineExecutionSummaries"]
    assert len(executions) == 1
    manifests = [u for u in p.keys_under("batches/") if u.endswith("/manifest.jsonl")]
    assert len(manifests) == 1
    assert sorted(line.data[OBJECT_KEY]["key"] for line in read_manifest(manifests[0])) == sorted(keys)


# --- labeling jobs that fail, stop or end partially ----------------------------------------------------
@pytest.mark.parametrize("outcome", ["failed", "stopped", "partial"])
def test_given_a_labeling_job_that_does_not_complete_then_its_items_return_to_the_queue_with_a_reason(
        with_model: MiniPipeline, outcome: str) -> None:
    """Given the head-box job failing, being stopped half way, or leaving half its objects unanswered, then
    every unanswered image is written to ``unlabeled.jsonl`` with the job's reason; auto and quarantined
    images are unaffected; the dataset version holds exactly the labeled ones; nothing is counted twice."""
    p = with_model
    expected = _upload_mixed(p)
    extra = [p.upload(f"more-dark-{i}.png", _png(bright_image(50, SCRIPTED_SIZE)), seed=20 + i, size=SCRIPTED_SIZE)
             for i in range(3)]
    result = p.batch(p.receive_all())
    manifest = result.manifest_uri
    assert manifest is not None
    assert p.run_step("Infer", manifest) == 0
    simulation = LocalJobSimulation(outcome=outcome, finished_share=0.5,  # type: ignore[arg-type]
                                    failure_reason="ClientError: the workteam was deleted")
    summary = run_label_step(storage.parent(manifest), p.settings,
                             LocalWorkforceBackend(p.settings, simulation=simulation))
    assert summary.jobs[0].state == {"failed": "Failed", "stopped": "Stopped", "partial": "Completed"}[outcome]
    assert p.run_step("Merge", manifest) == 0

    uploaded = list(expected) + extra
    states = assert_accounted([result], uploaded)
    returned = {k: s for k, s in states.items() if s.startswith("returned:")}
    assert returned, "a job that did not complete returned nothing to the queue"
    if outcome == "failed":
        assert all("the workteam was deleted" in s for s in returned.values())
        assert not any(s == "human" for s in states.values())
    assert summary.unlabeled == len(returned)
    labeled = sorted(k for k, s in states.items() if s in ("auto", "human"))
    assert _dataset_keys(p) == labeled
    kinds = Counter(s.split(":")[0] for s in states.values())
    assert kinds["quarantined"] == 2 and sum(kinds.values()) == len(uploaded)

    # "back in the queue" is real: the Requeue step sends exactly the returned images through the upload path
    # again (EventBridge -> SQS -> batcher), as new versions; a re-run of the step sends nothing twice.
    assert p.run_step("Requeue", manifest) == 0
    assert p.run_step("Requeue", manifest) == 0
    again = p.batch(p.receive_all())
    assert again.manifest_uri is not None
    before = {o.key: o.version_id for o in (line.object_identity() for line in read_manifest(manifest)) if o}
    after = [o for o in (line.object_identity() for line in read_manifest(again.manifest_uri)) if o]
    assert sorted(o.key for o in after) == sorted(returned)
    assert all(o.version_id and o.version_id != before[o.key] for o in after)  # new versions, same keys


def test_given_unsafe_keys_among_uploads_then_they_are_quarantined_at_the_batcher(pipe: MiniPipeline) -> None:
    """Given real uploads whose keys hold a '..' segment or a control character, then the batcher
    quarantines them with the reason (they never reach a step that would use the key as a path)."""
    p = pipe
    good = p.upload("fine.jpg", seed=1)
    bad = ["incoming/../escape.jpg", "incoming/tab\tname.jpg"]
    for key in bad:
        aws.client("s3").put_object(Bucket=p.names.unlabeled_bucket, Key=key, Body=b"\xff\xd8")
    result = p.batch(p.receive_all())
    assert result.manifest_uri is not None
    assert [line.data[OBJECT_KEY]["key"] for line in read_manifest(result.manifest_uri)] == [good]
    p.run_labeling(result.manifest_uri)
    states = assert_accounted([result], [good, *bad])
    assert states == {good: "human", **{k: "quarantined:batch:unsafe-key" for k in bad}}
