"""The Requeue step: images a batch left unlabeled go back through the upload path, a bounded number of times."""

from __future__ import annotations

from typing import Any

import pytest
from faults import MiniPipeline

from alp import aws, storage
from alp.manifest import ManifestLine, ObjectIdentity, read_manifest, write_manifest
from alp.requeue import BATCH_META, COUNT_META, FROM_META, decide, requeue_batch


@pytest.fixture
def pipe(mini_pipe: MiniPipeline) -> MiniPipeline:
    return mini_pipe


def test_decide_sends_back_until_the_limit_and_never_twice_for_one_batch():
    assert decide({}, "b1", max_requeues=3) == "requeue"
    assert decide({COUNT_META: "2", BATCH_META: "b0"}, "b1", max_requeues=3) == "requeue"
    assert decide({COUNT_META: "3", BATCH_META: "b0"}, "b1", max_requeues=3) == "limit"
    assert decide({COUNT_META: "1", BATCH_META: "b1"}, "b1", max_requeues=3) == "already"  # a re-run
    assert decide({COUNT_META: "not a number"}, "b1", max_requeues=1) == "requeue"
    assert decide({}, "b1", max_requeues=0) == "limit"  # 0: never requeue, quarantine at once
    # the batch copied another version of the key (the same key judged twice): not this one's copy
    assert decide({COUNT_META: "1", BATCH_META: "b1", FROM_META: "v2"}, "b1", 3, judged_version="v1") == "requeue"
    assert decide({COUNT_META: "1", BATCH_META: "b1", FROM_META: "v1"}, "b1", 3, judged_version="v1") == "already"


def _batch_dir(p: MiniPipeline, batch_id: str) -> str:
    """A batch folder as the batcher leaves it (its manifest), for lists written by the test."""
    batch_dir = f"s3://{p.names.data_bucket}/batches/{batch_id}/"
    storage.write_text(batch_dir + "manifest.jsonl", "")
    return batch_dir


def _batch_with(p: MiniPipeline, batch_id: str, unlabeled: list[str], deferred: list[str]) -> str:
    batch_dir = _batch_dir(p, batch_id)
    bucket = p.names.unlabeled_bucket
    write_manifest(batch_dir + "labeling/unlabeled.jsonl",
                   [ManifestLine.for_image(f"s3://{bucket}/{key}") for key in unlabeled])
    write_manifest(batch_dir + "inference/deferred.jsonl",
                   [ManifestLine.for_image(key if key.startswith("s3://") else f"s3://{bucket}/{key}")
                    for key in deferred])
    return batch_dir


def _judged(bucket: str, key: str, version_id: str) -> ManifestLine:
    """A batch line for one version of an upload, as the batcher records it."""
    return ManifestLine.for_image(f"s3://{bucket}/{key}").with_fields(
        **{"alp-object": ObjectIdentity(bucket=bucket, key=key, version_id=version_id).dump()})


def _requeue(p: MiniPipeline, batch_dir: str, **kw: Any) -> Any:
    return requeue_batch(batch_dir, unlabeled_bucket=kw.pop("bucket", p.names.unlabeled_bucket),
                         unlabeled_prefix=p.settings.storage.unlabeled_prefix, max_requeues=kw.pop("max_requeues", 3))


def test_given_unlabeled_and_deferred_images_then_each_comes_back_once_as_a_new_version(pipe: MiniPipeline):
    p = pipe
    s3 = aws.client("s3")
    bucket = p.names.unlabeled_bucket
    keys = [p.upload(f"back-{i}.jpg", seed=i) for i in range(3)]
    s3.put_object(Bucket=bucket, Key=keys[0], Body=b"\xff\xd8 a camera's bytes", ContentType="image/jpeg",
                  CacheControl="no-cache")
    original = s3.head_object(Bucket=bucket, Key=keys[0])["VersionId"]
    p.receive_all()  # the first uploads' events
    batch_dir = _batch_with(p, "b-one", unlabeled=keys[:2], deferred=keys[1:])  # keys[1] is on both lists
    summary = _requeue(p, batch_dir)
    assert summary.counts() == {"inputs": 3, "requeued": 3, "already_requeued": 0, "quarantined": 0}
    assert {r.origin for r in summary.requeued} == {"unlabeled", "deferred"}
    events = p.receive_all()
    assert len(events) == 3
    batch = p.batch(events)
    assert batch.manifest_uri is not None
    assert sorted(o.key for o in (x.object_identity() for x in read_manifest(batch.manifest_uri)) if o) == keys
    head = s3.head_object(Bucket=bucket, Key=keys[0])
    assert head["VersionId"] != original
    assert head["Metadata"] == {COUNT_META: "1", BATCH_META: "b-one", FROM_META: original}
    assert (head["ContentType"], head["CacheControl"]) == ("image/jpeg", "no-cache")  # content headers kept
    # the same bytes come back: the copy is not a re-encode
    assert storage.read_bytes(f"s3://{bucket}/{keys[0]}") == \
        s3.get_object(Bucket=bucket, Key=keys[0], VersionId=original)["Body"].read()

    summary_file = batch_dir + "requeue/summary.json"
    written = storage.read_text(summary_file)
    again = _requeue(p, batch_dir)  # a finished step: its summary, untouched
    assert again == summary and storage.read_text(summary_file) == written
    assert p.receive_all() == []  # nothing sent twice

    # a run that stopped before its summary: the copies are found, not repeated
    s3.delete_object(Bucket=p.names.data_bucket, Key="batches/b-one/requeue/summary.json")
    resumed = _requeue(p, batch_dir)
    assert resumed.counts() == {"inputs": 3, "requeued": 3, "already_requeued": 3, "quarantined": 0}
    assert resumed.requeued == summary.requeued
    assert p.receive_all() == []


def test_given_an_image_past_the_limit_gone_or_outside_the_prefix_then_it_is_quarantined_with_the_reason(
        pipe: MiniPipeline):
    p = pipe
    bucket = p.names.unlabeled_bucket
    tired = p.upload("tired.jpg", seed=1)
    gone = p.upload("gone.jpg", seed=2)
    aws.client("s3").delete_object(Bucket=bucket, Key=gone)
    p.receive_all()
    for n in range(2):  # two earlier batches sent it back already
        summary = requeue_batch(_batch_with(p, f"b{n}", unlabeled=[tired], deferred=[]), unlabeled_bucket=bucket,
                                unlabeled_prefix=p.settings.storage.unlabeled_prefix, max_requeues=2)
        assert len(summary.requeued) == 1 and summary.requeued[0].requeues == n + 1
    p.receive_all()
    batch_dir = _batch_with(p, "b-last", unlabeled=[tired, gone], deferred=[f"s3://{p.names.data_bucket}/x.jpg"])
    summary = requeue_batch(batch_dir, unlabeled_bucket=bucket, unlabeled_prefix=p.settings.storage.unlabeled_prefix,
                            max_requeues=2)
    assert summary.quarantined == {"requeue_limit": 1, "source_missing": 1, "not_requeueable": 1}
    assert summary.requeued == [] and p.receive_all() == []
    quarantined = {line.source_ref: line.quarantine() for line in read_manifest(batch_dir + "requeue/quarantine.jsonl")}
    assert {q.reason for q in quarantined.values() if q} == {"requeue_limit", "source_missing", "not_requeueable"}
    assert all(q and q.stage == "requeue" and q.detail for q in quarantined.values())


def test_the_step_prints_its_counts_and_invariant(pipe: MiniPipeline, capsys: pytest.CaptureFixture[str]):
    import json

    from alp.cli import main

    p = pipe
    key = p.upload("one.jpg", seed=3)
    p.receive_all()
    batch_dir = _batch_with(p, "b-cli", unlabeled=[key], deferred=[])
    assert main(["requeue", "--batch", batch_dir, "--json",
                 "--unlabeled-bucket", p.names.unlabeled_bucket]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["requeued"] == 1 and out["inputs"] == 1
    assert out["invariant"] == "inputs 1 = requeued 1 (an earlier run 0) + quarantined 0"


def test_one_bad_line_is_quarantined_alone_and_an_overwritten_image_is_not_sent_twice(pipe: MiniPipeline):
    p = pipe
    bucket = p.names.unlabeled_bucket
    good, changed = p.upload("good.jpg", seed=1), p.upload("changed.jpg", seed=2)
    first = aws.client("s3").head_object(Bucket=bucket, Key=changed)["VersionId"]
    p.upload("changed.jpg", seed=3)  # the uploader replaced it after the batch took the first version
    p.receive_all()
    batch_dir = _batch_dir(p, "b-mixed")
    inline = ManifestLine({"source": "a text item, not an image"})
    malformed = ManifestLine.for_image("s3://")
    write_manifest(batch_dir + "labeling/unlabeled.jsonl",
                   [inline, malformed, _judged(bucket, changed, first), ManifestLine.for_image(f"s3://{bucket}/{good}")])
    summary = _requeue(p, batch_dir)
    assert summary.quarantined == {"not_requeueable": 2, "superseded": 1}
    assert [r.source_ref for r in summary.requeued] == [f"s3://{bucket}/{good}"]
    assert len(p.receive_all()) == 1


def test_given_a_bucket_without_versions_then_the_image_is_quarantined_before_any_copy(pipe: MiniPipeline):
    p = pipe
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="plain-uploads")  # never versioned
    s3.put_object(Bucket="plain-uploads", Key="incoming/x.jpg", Body=b"\xff\xd8 bytes", Metadata={"who": "cam-1"})
    before = s3.head_object(Bucket="plain-uploads", Key="incoming/x.jpg")
    batch_dir = _batch_dir(p, "b-plain")
    write_manifest(batch_dir + "labeling/unlabeled.jsonl", [ManifestLine.for_image("s3://plain-uploads/incoming/x.jpg")])
    summary = requeue_batch(batch_dir, unlabeled_bucket="plain-uploads", unlabeled_prefix="incoming/", max_requeues=3)
    assert summary.quarantined == {"unversioned_bucket": 1} and summary.requeued == []
    after = s3.head_object(Bucket="plain-uploads", Key="incoming/x.jpg")
    assert after["Metadata"] == {"who": "cam-1"} and after["LastModified"] == before["LastModified"]  # not copied


def test_two_versions_of_one_key_in_a_batch_are_both_counted_and_only_the_current_one_goes_back(
        pipe: MiniPipeline):
    p = pipe
    s3 = aws.client("s3")
    bucket = p.names.unlabeled_bucket
    key = p.upload("twice.jpg", seed=1)
    v1 = s3.head_object(Bucket=bucket, Key=key)["VersionId"]
    p.upload("twice.jpg", seed=2)  # uploaded again within one batching window
    v2 = s3.head_object(Bucket=bucket, Key=key)["VersionId"]
    p.receive_all()
    batch_dir = _batch_dir(p, "b-twice")
    write_manifest(batch_dir + "labeling/unlabeled.jsonl", [_judged(bucket, key, v1), _judged(bucket, key, v2)])
    summary = _requeue(p, batch_dir)
    assert summary.counts() == {"inputs": 2, "requeued": 1, "already_requeued": 0, "quarantined": 1}
    assert summary.quarantined == {"superseded": 1}
    assert s3.head_object(Bucket=bucket, Key=key)["Metadata"][FROM_META] == v2
    assert len(p.receive_all()) == 1


def test_a_wrong_batch_path_is_an_error_not_an_empty_success(pipe: MiniPipeline):
    with pytest.raises(FileNotFoundError, match="not a batch folder"):
        _requeue(pipe, f"s3://{pipe.names.data_bucket}/batches/typo/")
    assert not storage.exists(f"s3://{pipe.names.data_bucket}/batches/typo/requeue/summary.json")


def _client_error(code: str, status: int) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "CopyObject")


def test_a_refusal_of_one_object_is_quarantined_and_a_refusal_of_the_setup_fails_the_step(
        pipe: MiniPipeline, monkeypatch: pytest.MonkeyPatch):
    p = pipe
    keys = [p.upload(f"e-{i}.jpg", seed=i) for i in range(3)]
    p.receive_all()
    real_head, real_renew = storage.object_head, storage.renew_object

    def head(uri: str) -> Any:
        if uri.endswith(keys[0]):
            raise _client_error("400", 400)  # e.g. an SSE-C object: HEAD needs its key
        return real_head(uri)

    def renew(uri: str, *args: Any) -> Any:
        if uri.endswith(keys[1]):
            raise _client_error("InvalidRequest", 400)  # e.g. a copy source over 5 GB
        return real_renew(uri, *args)

    monkeypatch.setattr(storage, "object_head", head)
    monkeypatch.setattr(storage, "renew_object", renew)
    summary = _requeue(p, _batch_with(p, "b-refused", unlabeled=keys, deferred=[]))
    assert summary.quarantined == {"head_failed": 1, "copy_failed": 1}
    assert [r.source_ref for r in summary.requeued] == [f"s3://{p.names.unlabeled_bucket}/{keys[2]}"]

    def denied(uri: str, *args: Any) -> Any:
        raise _client_error("AccessDenied", 403)

    monkeypatch.setattr(storage, "renew_object", denied)
    batch_dir = _batch_with(p, "b-denied", unlabeled=keys[2:], deferred=[])
    with pytest.raises(Exception, match="AccessDenied"):
        _requeue(p, batch_dir)
    assert not storage.exists(batch_dir + "requeue/summary.json")  # not done: a retry goes on


def test_a_resume_resends_exactly_the_recorded_images_with_their_counts(pipe: MiniPipeline):
    from alp.requeue import read_summary, resend

    p = pipe
    keys = [p.upload(f"r-{i}.jpg", seed=i) for i in range(2)]
    p.receive_all()
    batch_dir = _batch_with(p, "b-resume", unlabeled=keys, deferred=[])
    requeue_batch(batch_dir, unlabeled_bucket=p.names.unlabeled_bucket,
                  unlabeled_prefix=p.settings.storage.unlabeled_prefix, max_requeues=3)
    p.receive_all()
    summary = read_summary(batch_dir)
    assert summary is not None
    assert resend(summary) == 2 and len(p.receive_all()) == 2
    head = aws.client("s3").head_object(Bucket=p.names.unlabeled_bucket, Key=keys[0])
    assert head["Metadata"] == {COUNT_META: "1", BATCH_META: "b-resume"}  # the recorded count, not a new trip


def test_an_archived_object_is_quarantined_archived_though_s3_answers_403(pipe: MiniPipeline,
                                                                          monkeypatch: pytest.MonkeyPatch):
    p = pipe
    key = p.upload("cold.jpg", seed=1)
    p.receive_all()

    def archived(uri: str, *args: Any) -> Any:
        raise _client_error("InvalidObjectState", 403)

    monkeypatch.setattr(storage, "renew_object", archived)
    summary = _requeue(p, _batch_with(p, "b-cold", unlabeled=[key], deferred=[]))
    assert summary.quarantined == {"archived": 1} and summary.requeued == []


def test_the_copy_keeps_a_readable_storage_class_and_never_an_archive_one(pipe: MiniPipeline):
    p = pipe
    s3 = aws.client("s3")
    bucket = p.names.unlabeled_bucket
    s3.put_object(Bucket=bucket, Key="incoming/ia.jpg", Body=b"\xff\xd8 ia", StorageClass="STANDARD_IA")
    assert storage.object_head(f"s3://{bucket}/incoming/ia.jpg").headers["StorageClass"] == "STANDARD_IA"
    s3.put_object(Bucket=bucket, Key="incoming/deep.jpg", Body=b"\xff\xd8 deep", StorageClass="DEEP_ARCHIVE")
    assert "StorageClass" not in storage.object_head(f"s3://{bucket}/incoming/deep.jpg").headers
