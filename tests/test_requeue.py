"""The Requeue step: images a batch left unlabeled go back through the upload path, a bounded number of times."""

from __future__ import annotations

import pytest
from faults import MiniPipeline

from alp import aws, storage
from alp.manifest import ManifestLine, read_manifest, write_manifest
from alp.requeue import BATCH_META, COUNT_META, decide, requeue_batch


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


def _batch_with(p: MiniPipeline, batch_id: str, unlabeled: list[str], deferred: list[str]) -> str:
    batch_dir = f"s3://{p.names.data_bucket}/batches/{batch_id}/"
    bucket = p.names.unlabeled_bucket
    write_manifest(batch_dir + "labeling/unlabeled.jsonl",
                   [ManifestLine.for_image(f"s3://{bucket}/{key}") for key in unlabeled])
    write_manifest(batch_dir + "inference/deferred.jsonl",
                   [ManifestLine.for_image(key if key.startswith("s3://") else f"s3://{bucket}/{key}")
                    for key in deferred])
    return batch_dir


def test_given_unlabeled_and_deferred_images_then_each_comes_back_once_as_a_new_version(pipe: MiniPipeline):
    p = pipe
    keys = [p.upload(f"back-{i}.jpg", seed=i) for i in range(3)]
    p.receive_all()  # the first uploads' events
    batch_dir = _batch_with(p, "b-one", unlabeled=keys[:2], deferred=keys[1:])  # keys[1] is on both lists
    summary = requeue_batch(batch_dir, unlabeled_bucket=p.names.unlabeled_bucket,
                            unlabeled_prefix=p.settings.storage.unlabeled_prefix, max_requeues=3)
    assert summary.counts() == {"inputs": 3, "requeued": 3, "already_requeued": 0, "quarantined": 0}
    assert {r.origin for r in summary.requeued} == {"unlabeled", "deferred"}
    events = p.receive_all()
    assert len(events) == 3
    batch = p.batch(events)
    assert batch.manifest_uri is not None
    assert sorted(o.key for o in (x.object_identity() for x in read_manifest(batch.manifest_uri)) if o) == keys
    head = aws.client("s3").head_object(Bucket=p.names.unlabeled_bucket, Key=keys[0])
    assert head["Metadata"] == {COUNT_META: "1", BATCH_META: "b-one"}
    # the same bytes come back: the copy is not a re-encode
    assert storage.read_bytes(f"s3://{p.names.unlabeled_bucket}/{keys[0]}") == \
        aws.client("s3").get_object(Bucket=p.names.unlabeled_bucket, Key=keys[0],
                                    VersionId=head["VersionId"])["Body"].read()

    again = requeue_batch(batch_dir, unlabeled_bucket=p.names.unlabeled_bucket,
                          unlabeled_prefix=p.settings.storage.unlabeled_prefix, max_requeues=3)
    assert again.counts() == {"inputs": 3, "requeued": 3, "already_requeued": 3, "quarantined": 0}
    assert again.requeued == summary.requeued  # a re-run writes the same record...
    assert p.receive_all() == []  # ...and sends nothing twice


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


def test_one_bad_line_or_refused_copy_is_quarantined_alone_and_an_overwritten_image_is_not_sent_twice(
        pipe: MiniPipeline):
    from alp.manifest import ObjectIdentity

    p = pipe
    bucket = p.names.unlabeled_bucket
    good, changed = p.upload("good.jpg", seed=1), p.upload("changed.jpg", seed=2)
    first = aws.client("s3").head_object(Bucket=bucket, Key=changed)["VersionId"]
    p.upload("changed.jpg", seed=3)  # the uploader replaced it after the batch took the first version
    p.receive_all()
    batch_dir = f"s3://{p.names.data_bucket}/batches/b-mixed/"
    inline = ManifestLine({"source": "a text item, not an image"})
    judged_first = ManifestLine.for_image(f"s3://{bucket}/{changed}").with_fields(
        **{"alp-object": ObjectIdentity(bucket=bucket, key=changed, version_id=first).dump()})
    write_manifest(batch_dir + "labeling/unlabeled.jsonl",
                   [inline, judged_first, ManifestLine.for_image(f"s3://{bucket}/{good}")])
    summary = requeue_batch(batch_dir, unlabeled_bucket=bucket, unlabeled_prefix=p.settings.storage.unlabeled_prefix,
                            max_requeues=3)
    assert summary.quarantined == {"not_requeueable": 1, "superseded": 1}
    assert [r.source_ref for r in summary.requeued] == [f"s3://{bucket}/{good}"]
    assert len(p.receive_all()) == 1


def test_given_a_bucket_without_versions_then_the_image_is_quarantined_not_silently_dropped(pipe: MiniPipeline):
    p = pipe
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="plain-uploads")  # never versioned
    s3.put_object(Bucket="plain-uploads", Key="incoming/x.jpg", Body=b"\xff\xd8 bytes")
    batch_dir = f"s3://{p.names.data_bucket}/batches/b-plain/"
    write_manifest(batch_dir + "labeling/unlabeled.jsonl", [ManifestLine.for_image("s3://plain-uploads/incoming/x.jpg")])
    summary = requeue_batch(batch_dir, unlabeled_bucket="plain-uploads", unlabeled_prefix="incoming/", max_requeues=3)
    assert summary.quarantined == {"unversioned_bucket": 1} and summary.requeued == []


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
