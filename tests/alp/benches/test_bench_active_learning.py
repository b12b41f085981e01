"""The label-savings bench: its baseline router, its scoring and its headline arithmetic (fast, pure)."""

from __future__ import annotations

import os
import random

import pytest

from alp import manifest
from alp.agreement import auto_label_matches
from alp.benches.label_savings import (
    RoundPoint,
    SeedResult,
    TargetRatio,
    cost_per_100k,
    labels_to_target,
    plot_label_savings,
    ratio_at,
    score_diagnostics,
)
from alp.demo.strategies import route_randomly
from alp.manifest import ManifestLine
from alp.schema import INCABIN17
from alp.settings import Settings
from inference.budget import auto_to_human, human_to_auto, route_within_budget

SETTINGS = Settings()
HEAD = SETTINGS.labeling.head_label_attribute
KP = SETTINGS.labeling.keypoint_label_attribute
SIZE = manifest.ImageSize(width=128, height=96)


def _person(dx: float = 0.0) -> manifest.PersonKeypoints:
    pts = [manifest.Keypoint(name=n, x=30 + 3 * i + dx, y=20 + 2 * i, v=2) for i, n in enumerate(INCABIN17.names)]
    return manifest.PersonKeypoints(keypoints=pts, head_box_index=0, bbox=[25, 15, 60, 50])


def _auto_line(name: str, dx: float = 0.0, box_dx: float = 0.0) -> ManifestLine:
    line = ManifestLine.for_image(f"s3://b/incoming/{name}")
    line = line.with_boxes(HEAD, manifest.BoundingBoxLabel(image_size=[SIZE], annotations=[
        manifest.BoxAnnotation(left=30 + box_dx, top=10, width=20, height=20)]),
        manifest.BoxMetadata(objects=[manifest.ObjectConfidence(confidence=0.9)], human_annotated="no"))
    line = line.with_keypoints(KP, manifest.KeypointLabel(image_size=[SIZE], persons=[_person(dx)]),
                               manifest.KeypointMetadata(human_annotated="no"))
    return line.with_model("alp-route",
                           manifest.RouteInfo(route="auto", reason="confident", score=0.9, bundle_id="b1"))


def _human_line(name: str, with_proposal: bool = True, score: float | None = 0.3) -> ManifestLine:
    boxes = [manifest.ScoredBox(left=30, top=10, width=20, height=20, score=0.3)] if with_proposal else []
    pre = manifest.PreAnnotation(route="human", reason="low_box", image_size=SIZE if with_proposal else None,
                                 boxes=boxes, persons=[_person()] if with_proposal else [], bundle_id="b1")
    line = ManifestLine.for_image(f"s3://b/incoming/{name}").with_model("alp-preannotation", pre)
    return line.with_model("alp-route",
                           manifest.RouteInfo(route="human", reason="low_box", score=score, bundle_id="b1"))


def test_given_labels_reached_between_rounds_then_target_is_interpolated():
    curve = [(10, 0.1), (20, 0.3), (30, 0.7)]
    assert labels_to_target(curve, 0.5) == pytest.approx(25.0)
    assert labels_to_target(curve, 0.05) == 10.0
    assert labels_to_target(curve, 0.9) is None  # never reached: reported as null, not faked
    assert labels_to_target([(10, None), (20, 0.6)], 0.5) == 20.0


def test_cost_compares_pipeline_with_all_human():
    cost = cost_per_100k(human_share=0.25, compute_seconds_per_image=0.036, price_task=0.36, price_hour=0.526)
    assert cost.all_human_usd == 36000.0
    assert cost.pipeline_human_usd == 9000.0
    assert cost.pipeline_compute_usd == pytest.approx(0.526, abs=0.01)
    assert cost.saving_ratio == pytest.approx(0.25, abs=0.001)


def test_auto_and_human_lines_convert_both_ways_keeping_the_proposal():
    human = auto_to_human(_auto_line("a.jpg"), SETTINGS)
    assert HEAD not in human.data and KP not in human.data
    pre = human.preannotation()
    assert pre is not None and pre.route == "human" and pre.boxes[0].score == 0.9
    assert human.route().route == "human"
    back = human_to_auto(human, SETTINGS)
    assert back.preannotation() is None and back.route().route == "auto"
    assert back.boxes(HEAD)[0].annotations == _auto_line("a.jpg").boxes(HEAD)[0].annotations
    assert back.keypoints(KP)[0].persons == _auto_line("a.jpg").keypoints(KP)[0].persons
    assert back.boxes(HEAD)[1].human_annotated == "no"


def test_given_a_budget_when_routed_randomly_then_exactly_that_many_go_to_people_and_nothing_is_lost():
    auto = [_auto_line(f"a{i}.jpg") for i in range(8)]
    human = [_human_line(f"h{i}.jpg") for i in range(3)]
    routed = route_randomly(auto, human, budget=5, rng=random.Random(1), settings=SETTINGS)
    assert len(routed.human) == 5 and len(routed.auto) == 6
    names = sorted(line.source_ref for line in [*routed.auto, *routed.human])
    assert names == sorted(line.source_ref for line in [*auto, *human])
    assert all(line.route().route == "auto" and HEAD in line.data for line in routed.auto)
    assert all(line.route().route == "human" and line.preannotation() is not None for line in routed.human)
    again = route_randomly(auto, human, budget=5, rng=random.Random(1), settings=SETTINGS)
    assert [x.source_ref for x in again.human] == [x.source_ref for x in routed.human]  # seeded: repeatable


def test_lines_without_a_model_proposal_stay_with_people_and_use_the_budget():
    auto = [_auto_line(f"a{i}.jpg") for i in range(4)]
    human = [_human_line("cold.jpg", with_proposal=False)]
    routed = route_randomly(auto, human, budget=2, rng=random.Random(0), settings=SETTINGS)
    assert "s3://b/incoming/cold.jpg" in {x.source_ref for x in routed.human}
    assert len(routed.human) == 2 and len(routed.auto) == 3


def test_given_a_budget_the_judgement_strategy_sends_the_least_confident_images_to_people():
    scores = [0.45, 0.05, 0.3, None, 0.2, 0.4]
    human = [_human_line(f"h{i}.jpg", score=s) for i, s in enumerate(scores)]
    auto = [_auto_line("a0.jpg")]  # score 0.9: the most confident
    routed = route_within_budget(auto, human, 3, "judgement", random.Random(0), SETTINGS)
    # no score at all (nothing detected) ranks least confident, then 0.05, then 0.2
    assert [x.source_ref.rsplit("/", 1)[1] for x in routed.human] == ["h1.jpg", "h3.jpg", "h4.jpg"]
    assert all("lowest_score" in x.route().reason for x in routed.human)
    # only what the thresholds passed is auto-labeled; what they sent to people beyond the budget waits
    assert [x.source_ref for x in routed.auto] == ["s3://b/incoming/a0.jpg"]
    assert all(x.route().route == "auto" and HEAD in x.data for x in routed.auto)
    assert [x.source_ref.rsplit("/", 1)[1] for x in routed.deferred] == ["h0.jpg", "h2.jpg", "h5.jpg"]
    assert all(x.route().reason.startswith("deferred:") and HEAD not in x.data and x.preannotation() is not None
               and x.route().score is not None for x in routed.deferred)
    # nothing lost: every input ends in exactly one list
    assert sorted(x.source_ref for x in [*routed.auto, *routed.human, *routed.deferred]) == sorted(
        x.source_ref for x in [*auto, *human])
    # the random baseline defers nothing: it has no judgement to trust, so it auto-labels the rest
    assert route_within_budget(auto, human, 3, "random", random.Random(0), SETTINGS).deferred == []
    # an image the judgement sent to people outranks one it would auto-label, whatever the scores
    structural = [_human_line("structural.jpg", score=0.95)]
    routed = route_within_budget(auto, structural, 1, "judgement", random.Random(0), SETTINGS)
    assert [x.source_ref for x in routed.human] == ["s3://b/incoming/structural.jpg"]
    # a larger budget than the batch sends everything, a zero budget nothing (proposals exist for all)
    assert len(route_within_budget(auto, human, 50, "judgement", random.Random(0), SETTINGS).human) == 7
    assert len(route_within_budget(auto, human, 0, "judgement", random.Random(0), SETTINGS).human) == 0
    # a budget left over after the thresholds' human images goes to the least confident passed ones
    passed = [_auto_line(f"p{i}.jpg").with_model("alp-route", manifest.RouteInfo(route="auto", reason="confident",
                                                                        score=sc, bundle_id="b1"))
              for i, sc in enumerate([0.9, 0.6, 0.7])]
    routed = route_within_budget(passed, human[:1], 2, "judgement", random.Random(0), SETTINGS)
    assert [x.source_ref.rsplit("/", 1)[1] for x in routed.human] == ["p1.jpg", "h0.jpg"]
    assert routed.deferred == [] and len(routed.auto) == 2


def test_ratio_at_a_target_averages_seeds_and_is_null_unless_every_seed_reaches_it():
    def seed(j: list[float], r: list[float]) -> SeedResult:
        labels = [10, 20, 30]
        return SeedResult(seed=0, rounds={
            "judgement": [RoundPoint(round=i, human_labels=n, kpt_oks_map50=v) for i, (n, v) in enumerate(zip(labels, j))],
            "random": [RoundPoint(round=i, human_labels=n, kpt_oks_map50=v) for i, (n, v) in enumerate(zip(labels, r))]})

    seeds = [seed([0.0, 0.4, 0.6], [0.0, 0.2, 0.4]), seed([0.0, 0.2, 0.4], [0.0, 0.1, 0.3])]
    at_02 = ratio_at(seeds, 0.2)
    assert at_02.judgement == pytest.approx((15 + 20) / 2)
    assert at_02.random == pytest.approx((20 + 25) / 2)
    assert at_02.label_ratio == pytest.approx(17.5 / 22.5, abs=1e-4)
    assert ratio_at(seeds, 0.5).label_ratio is None  # the second seed never gets there
    assert "label_ratio_at_most" not in ratio_at(seeds, 0.5).model_dump()  # judgement did not get there either
    # judgement reaches 0.35 in both seeds (18.75, 27.5), random in one (27.5) and not the other (30 spent):
    # the ratio is unknown, but at most 23.125 / 28.75
    bounded = ratio_at(seeds, 0.35)
    assert bounded.label_ratio is None and bounded.random is None
    assert bounded.label_ratio_at_most == pytest.approx(23.125 / 28.75, abs=1e-4)


def test_the_goal_is_met_by_the_ratio_or_by_a_bound_under_it_and_unknown_otherwise():
    from alp.benches.label_savings import goal_met

    assert goal_met(TargetRatio(label_ratio=0.45)) is True
    assert goal_met(TargetRatio(label_ratio=0.55, label_ratio_at_most=None)) is False
    assert goal_met(TargetRatio(label_ratio=None, label_ratio_at_most=0.47)) is True  # the true ratio is lower still
    assert goal_met(TargetRatio(label_ratio=None, label_ratio_at_most=0.58)) is None  # could be either
    assert goal_met(TargetRatio(label_ratio=None)) is None


def test_score_diagnostics_rank_right_above_wrong_and_bin_precision():
    perfect = [(0.9, True), (0.8, True), (0.2, False), (None, False)]  # no score = nothing detected = 0
    d = score_diagnostics(perfect)
    assert d.auroc == 1.0 and d.precision == 0.5 and d.images == 4
    bins = {b.score: b for b in d.by_score}
    assert bins["[0.0, 0.1)"].model_dump() == {"score": "[0.0, 0.1)", "images": 1, "precision": 0.0}
    assert bins["[0.8, 1.0]"].images == 2 and bins["[0.8, 1.0]"].precision == 1.0
    assert score_diagnostics([(0.3, True), (0.3, False)]).auroc == 0.5  # ties count half
    assert score_diagnostics([(0.3, False)]).auroc is None  # undefined without both kinds
    assert score_diagnostics([]).precision is None


def test_the_label_savings_plot_is_a_png(tmp_path):
    from PIL import Image

    rows = [RoundPoint(round=i, human_labels=n, kpt_oks_map50=v, box_map50=v)
            for i, (n, v) in enumerate([(10, 0.0), (20, None), (30, 0.6)])]
    path = plot_label_savings([SeedResult(seed=0, rounds={"judgement": rows, "random": rows})], 0.5,
                              tmp_path / "savings.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 500


def test_cold_start_and_model_error_lines_are_never_auto_labeled_even_over_budget():
    size_only = [
        ManifestLine.for_image(f"s3://b/incoming/{name}").with_model(
            "alp-preannotation", manifest.PreAnnotation(route="human", reason=reason, image_size=SIZE, bundle_id=bundle))
        .with_model("alp-route", manifest.RouteInfo(route="human", reason=reason, bundle_id=bundle))
        for name, reason, bundle in [("cold.jpg", "no_model", None), ("err.jpg", "model_error: boom", "b1")]
    ]
    for strategy in ("judgement", "random"):
        routed = route_within_budget([], size_only, 1, strategy, random.Random(0), SETTINGS)
        assert len(routed.human) == 2 and routed.auto == []  # the budget is exceeded rather than invent labels


def test_auto_label_match_needs_box_iou_and_oks():
    truth = _auto_line("t.jpg")
    assert auto_label_matches(_auto_line("t.jpg", dx=0.5), truth, SETTINGS)
    assert not auto_label_matches(_auto_line("t.jpg", dx=25.0), truth, SETTINGS)  # keypoints far off
    assert not auto_label_matches(_auto_line("t.jpg", box_dx=15.0), truth, SETTINGS)  # box IoU < 0.5
    empty = ManifestLine.for_image("s3://b/incoming/t.jpg").with_boxes(
        HEAD, manifest.BoundingBoxLabel(image_size=[SIZE]), manifest.BoxMetadata(human_annotated="no"))
    assert not auto_label_matches(empty, truth, SETTINGS)  # a missed head is not a match


IN_PROCESS_SKIP = pytest.mark.skipif(
    not os.environ.get("ALP_BENCH_TESTS"),
    reason="trains 4 rounds (minutes on 2 cores); the two-worker variant and the mini demo cover the loop by "
           "default. Set ALP_BENCH_TESTS=1 to run it")


@pytest.mark.slow
@pytest.mark.parametrize("jobs", [pytest.param(1, marks=IN_PROCESS_SKIP), 2], ids=["in-process", "two-workers"])
def test_quick_bench_runs_both_strategies_with_the_same_budget_and_prints_the_headline(tmp_path, capsys, jobs):
    """End to end at the smallest size: the numbers are meaningless, the bookkeeping is not."""
    import json

    from alp.cli import main

    rc = main(["bench", "active-learning", "--json", "--quick", "--seeds", "1", "--rounds", "1", "--pool", "20",
               "--seed-images", "10", "--test-images", "6", "--width", "96", "--height", "64", "--imgsz", "64",
               "--epochs", "1", "--run-dir", str(tmp_path / "bench"), "--jobs", str(jobs)])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)  # stdout holds only the JSON
    assert result["jobs"] == jobs
    # workers write one log per run (seed x strategy); in-process runs print to stderr instead
    logs = sorted(p.name for p in (tmp_path / "bench").glob("*.log"))
    assert logs == (["seed0-judgement.log", "seed0-random.log"] if jobs > 1 else [])
    for name in logs:
        assert "round 1 done" in (tmp_path / "bench" / name).read_text()
    for key in ("label_ratio", "label_ratio_goal_met", "labels_to_target_judgement", "labels_to_target_random", "auto_label_precision",
                "cost_per_100k_images", "per_seed", "notes"):
        assert key in result
    assert result["label_ratio"] is None or result["label_ratio"] > 0
    if result["label_ratio"] is None:
        assert result["notes"]  # a missing headline is explained, never faked
    seed = result["per_seed"][0]
    judged, randomised = seed["rounds"]["judgement"], seed["rounds"]["random"]
    assert [r["round"] for r in judged] == [r["round"] for r in randomised] == [0, 1]
    # the same human budget per round under both strategies
    assert [r["human_labels"] for r in judged] == [r["human_labels"] for r in randomised]
    cost = result["cost_per_100k_images"]
    assert cost["all_human_usd"] == pytest.approx(100_000 * 0.36)
    if jobs == 1:
        return
    # a resumed bench reads the finished runs back instead of training them again
    pool_manifest = tmp_path / "bench" / "seed0-data" / "pool" / "manifest.jsonl"
    generated_at = pool_manifest.stat().st_mtime_ns
    rc = main(["bench", "active-learning", "--json", "--quick", "--seeds", "1", "--rounds", "1", "--pool", "20",
               "--seed-images", "10", "--test-images", "6", "--width", "96", "--height", "64", "--imgsz", "64",
               "--epochs", "1", "--run-dir", str(tmp_path / "bench"), "--jobs", str(jobs), "--resume"])
    assert rc == 0
    again = json.loads(capsys.readouterr().out)
    assert again["per_seed"] == result["per_seed"]
    assert pool_manifest.stat().st_mtime_ns == generated_at  # the shared pool was not generated again
    for name in logs:
        text = (tmp_path / "bench" / name).read_text()
        assert "round 1 done" in text and "resuming" in text and text.count("round 1 done") == 1


def test_given_a_run_that_fails_then_the_bench_stops_the_others_and_names_its_log(tmp_path, capsys):
    from alp.cli import main

    (tmp_path / "seed0-random").write_text("a file where the run folder goes")
    rc = main(["bench", "active-learning", "--json", "--quick", "--seeds", "1", "--rounds", "1", "--pool", "20",
               "--seed-images", "10", "--test-images", "6", "--width", "96", "--height", "64", "--imgsz", "64",
               "--epochs", "1", "--run-dir", str(tmp_path), "--jobs", "2"])
    captured = capsys.readouterr()
    assert rc == 1 and captured.out == ""  # no half result on stdout
    assert "seed 0 random failed (NotADirectoryError" in captured.err
    assert str(tmp_path / "seed0-random.log") in captured.err
    assert "NotADirectoryError" in (tmp_path / "seed0-random.log").read_text()  # the traceback is kept


def test_given_a_worker_killed_from_outside_then_the_bench_stops_with_an_error_instead_of_waiting(tmp_path):
    """An out-of-memory kill leaves no exception behind: the bench must notice the dead worker and stop."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    cmd = [sys.executable, "-m", "alp.cli", "bench", "active-learning", "--json", "--quick", "--seeds", "1",
           "--rounds", "1", "--pool", "20", "--seed-images", "10", "--test-images", "6", "--width", "96",
           "--height", "64", "--imgsz", "64", "--epochs", "1", "--run-dir", str(tmp_path), "--jobs", "2"]
    if not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists():
        pytest.skip("needs Linux's /proc/<pid>/task/<pid>/children to find the bench's workers")
    bench = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        workers: list[int] = []
        while time.monotonic() < deadline and not workers:  # the runs' logs appear once the workers run
            time.sleep(0.5)
            if (tmp_path / "seed0-random.log").exists():
                children = Path(f"/proc/{bench.pid}/task/{bench.pid}/children").read_text().split()
                workers = [int(pid) for pid in children
                           if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]
        assert workers, "the bench started no worker"
        os.kill(workers[0], signal.SIGKILL)
        out, err = bench.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(bench.pid, signal.SIGKILL)  # the bench and whatever worker is left
    assert bench.returncode == 1 and out == ""
    assert "died without a word" in err and str(tmp_path / "seed0-random.log") in err
