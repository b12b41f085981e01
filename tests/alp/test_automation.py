"""A batch's automation report: part shares, truth precision of the accepted parts, people's seconds vs by hand."""

from __future__ import annotations

import json

import pytest
from labeling_builders import auto_line, human_line, truth_line

from alp import aws, storage
from alp.automation import batch_automation
from alp.labeling.local import LocalWorkforceBackend
from alp.labeling.workflow import run_label_step
from alp.manifest import ManifestLine, PartDecision, PartRoutes, write_manifest
from alp.settings import Settings

BUCKET = "alp-data"
BATCH = f"s3://{BUCKET}/batches/b0001/"
TRUTH = f"s3://{BUCKET}/truth/truth.jsonl"
SETTINGS = Settings().with_overrides({
    "labeling.backend": "local", "labeling.local_truth_uri": TRUTH, "labeling.local_workers": 1,
    "labeling.gold_items_per_job": 0,
})


def _parts(heads: str, *persons: str) -> PartRoutes:
    return PartRoutes(heads=PartDecision(route=heads), persons=[PartDecision(route=p) for p in persons])


@pytest.fixture
def truths(aws_mock: None) -> list[ManifestLine]:
    aws.client("s3").create_bucket(Bucket=BUCKET)
    lines = [truth_line(f"s3://{BUCKET}/pool/img_{i:04d}.jpg", SETTINGS, persons=2, seed=i) for i in range(3)]
    write_manifest(TRUTH, lines)
    return lines


def test_the_report_counts_parts_truth_precision_and_peoples_seconds(truths: list[ManifestLine]) -> None:
    """One image auto-labeled (2 persons), one where people label only person 1 (heads and person 0 kept from the
    model), one labeled whole from scratch (cold start): the shares come from the Infer summary, the truth checks
    cover exactly the 5 parts the model's labels were kept for, and people spent less than by hand because
    they started from proposals for some parts."""
    auto = auto_line("s3://unlabeled/incoming/img_0000.jpg", truths[0], SETTINGS, seed=0)
    mixed = human_line("s3://unlabeled/incoming/img_0001.jpg", truths[1], SETTINGS, seed=1, drop_last_person=False,
                       parts=_parts("auto", "auto", "human"))
    cold = human_line("s3://unlabeled/incoming/img_0002.jpg", None, SETTINGS, seed=2)
    write_manifest(BATCH + "inference/auto.jsonl", [auto])
    write_manifest(BATCH + "inference/human.jsonl", [mixed, cold])
    storage.write_text(BATCH + "inference/summary.json", json.dumps({
        "bundle_id": "bundle-test", "parts": {"heads.auto": 2, "heads.human": 1, "persons.auto": 3,
                                              "persons.human": 1},
        "judgement": {"box_threshold": 0.5, "keypoint_threshold": 0.1}}))
    run_label_step(BATCH, SETTINGS, LocalWorkforceBackend(SETTINGS))
    report = batch_automation(BATCH, SETTINGS, f"s3://{BUCKET}/",
                              {storage.basename(t.source_ref): t for t in truths})
    assert (report.auto_share_heads, report.auto_share_persons) == (pytest.approx(2 / 3), 0.75)
    assert report.auto_parts_checked == 5  # auto image: heads + 2 persons; mixed image: heads + person 0
    assert report.auto_precision_truth_heads == 1.0 and report.auto_precision_truth_persons == 1.0
    assert 0 < report.human_seconds < report.by_hand_seconds
    assert report.human_seconds_ratio == pytest.approx(report.human_seconds / report.by_hand_seconds, abs=1e-3)
    assert report.thresholds == {"box_threshold": 0.5, "keypoint_threshold": 0.1}
    assert report.audits == 0 and report.audit_precision is None
