"""The miniature demo, end to end: embedded AWS, batcher, both pipelines' steps, report; then a resume."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from PIL import Image

from alp.cli import main

MINI = ["--rounds", "1", "--pool", "24", "--seed-images", "10", "--test-images", "8", "--width", "128",
        "--height", "96", "--imgsz", "64", "--epochs", "1", "--batch", "8", "--no-progress"]


@pytest.mark.slow
def test_given_a_fresh_folder_when_the_mini_demo_runs_then_it_reports_every_round_and_resumes(tmp_path, capsys):
    run_dir = tmp_path / "demo-run"
    cwd = Path.cwd()
    env_before = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "ALP_SETTINGS_URI", "YOLO_CONFIG_DIR")}

    rc = main(["demo", "--run-dir", str(run_dir), "--fresh", *MINI])

    out = capsys.readouterr().out
    assert rc == 0, out
    assert Path.cwd() == cwd  # the run's chdir is undone
    assert {k: os.environ.get(k) for k in env_before} == env_before  # and its environment
    state = json.loads((run_dir / "state.json").read_text())
    rows = state["rounds"]
    assert [r["round"] for r in rows] == [0, 1]
    assert rows[0]["human"] == 10 and rows[0]["auto"] == 0  # cold start: every seed image to people
    for r in rows:
        # nothing is lost: every image ends auto-labeled, human-labeled, audited or quarantined
        assert r["images_seen"] == r["auto"] + r["human"] + r["audit"] + r["quarantine"] + r["deferred"], r
        assert r["deferred"] == 0  # without a human budget every doubted image goes to people
        assert r["dataset_version"] and r["bundle_uri"].startswith("s3://")
        for key in ("box_map50", "kpt_oks_map50"):
            assert r[key] is not None and 0.0 <= r[key] <= 1.0
        # undefined (None) while the 1-epoch model matches no person; a share when it does
        assert r["visibility_accuracy"] is None or 0.0 <= r["visibility_accuracy"] <= 1.0
    assert rows[1]["quarantine"] >= 1  # the broken upload of round 1 was quarantined, not lost
    assert rows[1]["human_labels_total"] == 10 + rows[1]["human"] + rows[1]["audit"]
    registry = json.loads((run_dir / "aws-mirror" / "registry.json").read_text())
    # every candidate went through the gate and is in the registry with the gate's decision
    assert [p["status"] == "Approved" for p in registry] == [r["approved"] for r in rows]

    # the table and the report path are printed, and every dataset version of the run verifies: each line's
    # image is the content-addressed copy holding the bytes its labels were made on
    assert "kpt_oks_map50" in out and "report:" in out
    verified = re.search(r"(\d+) dataset versions verified", out)
    assert verified and int(verified.group(1)) >= len(rows), out
    report = run_dir / "report" / "report.md"
    assert report.is_file() and str(report) in out
    text = report.read_text()
    for png in ("learning_curves.png", "labels_per_round.png"):
        assert png in text
        with Image.open(run_dir / "report" / png) as im:
            assert im.format == "PNG"
    metrics_log = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert any(json.loads(line).get("Step") == "Batch" for line in metrics_log)

    # a re-run with the same flags resumes: nothing to redo, same table
    rc = main(["demo", "--run-dir", str(run_dir), *MINI])
    out = capsys.readouterr().out
    assert rc == 0 and "resuming" in out
    assert json.loads((run_dir / "state.json").read_text())["rounds"] == rows

    # other flags without --fresh are refused with a clear message, and nothing is deleted
    rc = main(["demo", "--run-dir", str(run_dir), *MINI[:-1], "--epochs", "2", "--no-progress"])
    assert rc == 2 and "--fresh" in capsys.readouterr().err
    assert (run_dir / "state.json").is_file()


@pytest.mark.slow
def test_with_a_human_budget_the_least_confident_go_to_people_and_the_doubted_rest_waits_for_the_next_round(
        tmp_path, capsys, monkeypatch):
    from alp.demo.rounds import DemoRun

    run_dir = tmp_path / "demo-budget"
    mini = [*MINI[MINI.index("--pool"):], "--rounds", "2"]  # 7 uploads a round after the 10 seed images
    # Ctrl-C before round 2, then a resume: the new embedded AWS must get round 1's requeued images again
    real_round = DemoRun.run_round

    def stop_before_round_2(self, rnd):
        if rnd == 2:
            raise KeyboardInterrupt
        return real_round(self, rnd)

    monkeypatch.setattr(DemoRun, "run_round", stop_before_round_2)
    assert main(["demo", "--run-dir", str(run_dir), "--fresh", *mini, "--human-share", "0.5"]) == 130
    monkeypatch.setattr(DemoRun, "run_round", real_round)
    rc = main(["demo", "--run-dir", str(run_dir), *mini, "--human-share", "0.5"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "resuming" in out and "sent back last round" in out
    rows = json.loads((run_dir / "state.json").read_text())["rounds"]
    assert rows[0]["human"] == 10 and rows[0]["auto"] == 0  # cold start: no model, no budget to apply
    budget = round(0.5 * 7)
    for prev, r in zip(rows, rows[1:]):
        # nothing lost: uploads (new, re-driven and broken) = auto + human + audit + quarantine + deferred
        assert r["images_seen"] == r["auto"] + r["human"] + r["audit"] + r["quarantine"] + r["deferred"], r
        assert r["human"] + r["audit"] == budget and r["quarantine"] == 1
        # last round's Requeue step sent its deferred images back (new versions through the upload path), and
        # they came with this round's uploads, only those
        assert prev["requeued"] + prev["requeue_quarantined"] == prev["deferred"] == len(prev["deferred_images"])
        assert prev["requeue_quarantined"] == 0  # nothing deferred 3 times in 2 rounds
        assert r["redriven"] == prev["requeued"]
        assert r["images_seen"] == 7 + 1 + r["redriven"]
        assert len(r["deferred_images"]) == r["deferred"]
    batch = Path(str(run_dir / "aws-mirror" / "s3"))
    summaries = {p.parent.parent.name: json.loads(p.read_text()) for p in batch.rglob("inference/summary.json")}
    budgeted = [s for s in summaries.values() if s.get("strategy") == {"name": "judgement", "human_budget": budget}
                and not s["cold_start"]]
    assert len(budgeted) == 2  # rounds 1 and 2; in round 0 no model judged, every image went to people
    for r, summary in zip(rows[1:], sorted(budgeted, key=lambda s: s["manifest"]), strict=True):
        judged = summary["judgement_routes"]  # what the thresholds alone decided
        # people get the doubted images first; the doubted rest waits; only what passed is auto-labeled
        assert r["deferred"] == max(0, judged["human"] - budget)
        assert r["auto"] == judged["auto"] + judged["audit"] - max(0, budget - judged["human"])
        assert summary["routes"]["deferred"] == r["deferred"] and "deferred" in summary["invariant"]
    assert rows[2]["redriven"] == rows[1]["deferred"] > 0
    requeues = [json.loads(p.read_text()) for p in batch.rglob("requeue/summary.json")]
    assert sorted(len(q["requeued"]) for q in requeues) == sorted(r["deferred"] for r in rows)
    deferred = [p for p in batch.rglob("inference/deferred.jsonl") if p.read_text().strip()]
    assert deferred and all("deferred:" in line for p in deferred for line in p.read_text().splitlines())
    table = [line.split("|")[1:-1] for line in (run_dir / "report" / "report.md").read_text().splitlines()
             if line.startswith("| ")]
    column = [c.strip() for c in table[0]].index("deferred")
    assert [int(row[column]) for row in table[1:]] == [r["deferred"] for r in rows]
