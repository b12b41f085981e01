"""The local backend runs whole labeling jobs against moto S3 with a simulated workforce."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from labeling_builders import human_line, truth_line

from alp import aws, storage
from alp.audits import batch_outcomes
from alp.cli import main
from alp.datasets import merge_batch_result
from alp.geometry import Box, box_agreement, oks
from alp.labeling.answers import parse_box_answer, parse_keypoint_answer
from alp.labeling.job_output import PAYLOAD_PATH
from alp.labeling.local import LocalJobSimulation, LocalWorkforceBackend, NoiseModel, workforce
from alp.labeling.workflow import UNLABELED_KEY, run_label_step
from alp.manifest import ManifestLine, PartDecision, PartRoutes, read_manifest, write_manifest
from alp.settings import Settings

BUCKET = "alp-data"
BATCH = f"s3://{BUCKET}/batches/b0001/"
TRUTH = f"s3://{BUCKET}/truth/truth.jsonl"
SETTINGS = Settings().with_overrides({
    "labeling.backend": "local", "labeling.local_truth_uri": TRUTH, "labeling.local_workers": 3,
    "labeling.local_careless_share": 0.34, "labeling.gold_items_per_job": 4,
})


def _truths(n: int = 16) -> list[ManifestLine]:
    return [truth_line(f"s3://{BUCKET}/pool/img_{i:04d}.jpg", SETTINGS, persons=1 + i % 3, seed=i) for i in range(n)]


def _batch(truths: list[ManifestLine], n: int = 8, batch: str = BATCH, cold: bool = False) -> list[ManifestLine]:
    lines = [human_line(f"s3://unlabeled/incoming/img_{i:04d}.jpg", None if cold else truths[i], SETTINGS, seed=i,
                        route="audit" if i % 4 == 0 and not cold else "human") for i in range(n)]
    write_manifest(batch + "inference/human.jsonl", lines)
    return lines


@pytest.fixture
def data(aws_mock: None) -> list[ManifestLine]:
    aws.client("s3").create_bucket(Bucket=BUCKET)
    truths = _truths()
    write_manifest(TRUTH, truths)
    return truths


def _truth_for(truths: list[ManifestLine], ref: str) -> ManifestLine:
    return next(t for t in truths if storage.basename(t.source_ref) == storage.basename(ref))


def test_a_whole_job_with_one_careless_worker_of_three(data: list[ManifestLine]) -> None:
    """Given 8 images and 3 simulated workers, one careless, when the label step runs,
    then every image is labeled, the careless worker is excluded on gold, and the consolidated labels
    are closer to the truth than the careless worker's own answers."""
    _batch(data)
    summary = run_label_step(BATCH, SETTINGS, LocalWorkforceBackend(SETTINGS))
    assert summary.items == 8 and summary.labeled == 8 and summary.unlabeled == 0 and summary.audit_items == 2
    careless = workforce(3, 0.34)[-1].worker_id
    assert careless == "local-worker-03" and summary.excluded_workers == [careless]
    heads, kpts = summary.jobs
    assert (heads.kind, heads.state, heads.gold) == ("head-boxes", "Completed", 4)
    head_attr, kp_attr = SETTINGS.labeling.head_label_attribute, SETTINGS.labeling.keypoint_label_attribute
    labeled = read_manifest(BATCH + "labeling/labeled.jsonl")
    # One keypoint task per consolidated head box: one person per task.
    heads_found = sum(len(found[0].annotations) for line in labeled if (found := line.boxes(head_attr)))
    assert kpts.kind == "keypoints" and kpts.items == heads_found and kpts.gold == 4
    # Boxes: the careless worker's answers (from the payload Ground Truth would send) vs the consolidated boxes.
    payload = json.loads(storage.read_text(heads.folder + PAYLOAD_PATH))
    careless_scores, consolidated_scores = [], []
    by_ref = {line.source_ref: line for line in labeled}
    for obj in payload:
        ref = obj["dataObject"]["s3Uri"]
        if ref not in by_ref:
            continue  # a gold item
        truth_boxes = _truth_for(data, ref).boxes(head_attr)
        assert truth_boxes is not None
        truth = [Box(a.left, a.top, a.width, a.height) for a in truth_boxes[0].annotations]
        answer = next(a for a in obj["annotations"] if a["workerId"] == careless)
        careless_scores.append(box_agreement(parse_box_answer(careless, answer["annotationData"]["content"]).boxes,
                                             truth))
        found = by_ref[ref].boxes(head_attr)
        assert found is not None and found[1].human_annotated == "yes"
        consolidated_scores.append(box_agreement([Box(a.left, a.top, a.width, a.height)
                                                  for a in found[0].annotations], truth))
    assert sum(consolidated_scores) / len(consolidated_scores) > sum(careless_scores) / len(careless_scores) + 0.2
    # Keypoints: OKS of the careless worker's persons vs the consolidated persons, against the truth.
    names, sigmas = list(SETTINGS.schema_.names), SETTINGS.schema_.sigmas
    kp_payload = json.loads(storage.read_text(kpts.folder + PAYLOAD_PATH))
    kp_input = read_manifest(kpts.folder + "input.manifest")
    careless_oks, consolidated_oks = [], []
    for obj in kp_payload:
        line = kp_input[int(obj["datasetObjectId"])]
        if line.data.get("alp-gold"):
            continue
        person = line.data["alp-person"]
        truth_kp = _truth_for(data, line.source_ref).keypoints(kp_attr)
        assert truth_kp is not None
        nearest = _nearest_head(data, line.source_ref, person["head_box"])
        truth_person = next(p for p in truth_kp[0].persons if p.head_box_index == nearest)
        gt_xy, gt_v = [(k.x, k.y) for k in truth_person.keypoints], [k.v for k in truth_person.keypoints]
        area = truth_person.bbox[2] * truth_person.bbox[3] if truth_person.bbox else 1.0
        answer = next(a for a in obj["annotations"] if a["workerId"] == careless)
        mine = parse_keypoint_answer(careless, answer["annotationData"]["content"], names)
        careless_oks.append(oks(gt_xy, gt_v, [(p[0], p[1]) for p in mine.points], area, sigmas))
        final = read_kp(by_ref[line.source_ref], kp_attr, person["head_index"])
        consolidated_oks.append(oks(gt_xy, gt_v, final, area, sigmas))
    assert sum(consolidated_oks) / len(consolidated_oks) > sum(careless_oks) / len(careless_oks) + 0.2
    report = json.loads(storage.read_text(BATCH + "labeling/worker-reports.json"))
    workers = {w["worker_id"]: w for w in report[heads.name]["workers"]}
    assert workers[careless]["excluded"] and workers[careless]["gold_agreement"] < 0.6
    assert workers["local-worker-01"]["seconds_per_item"] > 0


def _nearest_head(truths: list[ManifestLine], ref: str, head_box: list[float]) -> int:
    found = _truth_for(truths, ref).boxes(SETTINGS.labeling.head_label_attribute)
    assert found is not None
    target = Box(*head_box)
    scores = [box_agreement([target], [Box(a.left, a.top, a.width, a.height)]) for a in found[0].annotations]
    return scores.index(max(scores))


def read_kp(line: ManifestLine, attr: str, head_index: int) -> list[tuple[float, float]]:
    found = line.keypoints(attr)
    assert found is not None
    person = next(p for p in found[0].persons if p.head_box_index == head_index)
    return [(k.x, k.y) for k in person.keypoints]


def _parts(heads: str, *persons: str) -> PartRoutes:
    return PartRoutes(heads=PartDecision(route=heads), persons=[PartDecision(route=p) for p in persons])


def test_only_the_parts_people_must_label_become_tasks(data: list[ManifestLine], tmp_path: Path) -> None:
    """Per-part routing: image A's head boxes are doubtful (the model missed its third person), image B's are
    not; in each, the model's first person is confident and the second doubtful. Then only A goes to the head
    task, the confident persons keep the model's keypoints, every other person (A's missed one included) is a
    task, the labeled lines say which parts were people's, and the merged records are ``mixed`` (train only)."""
    head_attr, kp_attr = SETTINGS.labeling.head_label_attribute, SETTINGS.labeling.keypoint_label_attribute
    # the uploads (Merge copies their bytes into the version)
    uploads = [storage.write_bytes(f"s3://{BUCKET}/incoming/img_{i:04d}.jpg", f"image {i}".encode()) for i in (1, 2)]
    a = human_line(uploads[1], data[2], SETTINGS, seed=2,  # 3 persons, 1 missed
                   parts=_parts("human", "auto", "human"))
    b_parts = _parts("auto", "auto", "human")
    b_parts.persons[1].blind = True  # drawn for the blind sample: people label it without the proposal
    b = human_line(uploads[0], data[1], SETTINGS, seed=1, drop_last_person=False, parts=b_parts)
    write_manifest(BATCH + "inference/human.jsonl", [a, b])
    summary = run_label_step(BATCH, SETTINGS, LocalWorkforceBackend(SETTINGS))
    heads, kpts = summary.jobs
    assert (heads.kind, heads.items, kpts.kind, kpts.items) == ("head-boxes", 1, "keypoints", 3)
    assert summary.labeled == 2 and summary.unlabeled == 0
    prefill = {(line.source_ref, line.data["alp-person"]["head_index"]): line.data["alp-person"].get("prefill")
               for line in read_manifest(kpts.folder + "input.manifest") if not line.data.get("alp-gold")}
    assert prefill[b.source_ref, 1] is None and prefill[a.source_ref, 1] is not None
    by_ref = {line.source_ref: line for line in read_manifest(BATCH + "labeling/labeled.jsonl")}
    got_b = by_ref[b.source_ref]
    pre_b = b.preannotation()
    assert pre_b is not None
    boxes_b = got_b.boxes(head_attr)
    assert boxes_b is not None and boxes_b[1].human_annotated == "no"
    assert [(x.left, x.top) for x in boxes_b[0].annotations] == [(x.left, x.top) for x in pre_b.boxes]
    kps_b = got_b.keypoints(kp_attr)
    assert kps_b is not None and kps_b[1].human_annotated == "no"
    assert [(k.x, k.y, k.v) for k in kps_b[0].persons[0].keypoints] == \
        [(k.x, k.y, k.v) for k in pre_b.persons[0].keypoints]
    assert got_b.data["alp-labeling"]["parts"] == {"heads": "model", "persons": ["model", "people"]}
    parts_a = by_ref[a.source_ref].data["alp-labeling"]["parts"]
    assert parts_a["heads"] == "people" and sorted(parts_a["persons"]) == ["model", "people", "people"]
    # the audits see one outcome per part people labeled; A's head boxes missed a head, so they disagree
    outcomes = {(storage.basename(o.source_ref), o.part): o for o in batch_outcomes(BATCH, SETTINGS)}
    assert sorted(outcomes) == [("img_0001.jpg", "person-1"), ("img_0002.jpg", "heads"), ("img_0002.jpg", "person-1")]
    assert not outcomes["img_0002.jpg", "heads"].agreed and outcomes["img_0001.jpg", "person-1"].agreed
    settings = SETTINGS.with_overrides({"labeling.test_split_fraction": 0.5, "labeling.val_split_fraction": 0.5})
    version = merge_batch_result(BATCH, settings, data_root=f"s3://{BUCKET}/").version
    assert version.counts_by_source == {"mixed": 2} and version.counts_by_split["train"] == 2


def test_labeled_lines_are_valid_manifest_lines_with_both_labels(data: list[ManifestLine]) -> None:
    _batch(data)
    run_label_step(BATCH, SETTINGS, LocalWorkforceBackend(SETTINGS))
    for line in read_manifest(BATCH + "labeling/labeled.jsonl"):
        boxes = line.boxes(SETTINGS.labeling.head_label_attribute)
        kps = line.keypoints(SETTINGS.labeling.keypoint_label_attribute)
        assert boxes is not None and kps is not None
        kps[0].check_schema(SETTINGS.schema_.names)
        assert [p.head_box_index for p in kps[0].persons] == list(range(len(boxes[0].annotations)))
        assert len(boxes[1].objects) == len(boxes[0].annotations)
        assert boxes[1].job_name.startswith("labeling-job/alp-heads-")
        assert "alp-preannotation" not in line.data and "alp-object" in line.data


def test_a_rerun_finds_the_existing_jobs_and_reproduces_the_outputs(data: list[ManifestLine]) -> None:
    _batch(data)
    first = run_label_step(BATCH, SETTINGS, LocalWorkforceBackend(SETTINGS))
    labeled = storage.read_bytes(BATCH + "labeling/labeled.jsonl")
    status_files = {j.name: storage.read_bytes(j.folder + "alp-local-status.json") for j in first.jobs}
    second = run_label_step(BATCH, SETTINGS, LocalWorkforceBackend(SETTINGS))
    assert [j.name for j in second.jobs] == [j.name for j in first.jobs]
    assert {j.name: storage.read_bytes(j.folder + "alp-local-status.json") for j in second.jobs} == status_files
    assert storage.read_bytes(BATCH + "labeling/labeled.jsonl") == labeled
    jobs = {uri.split("/jobs/")[1].split("/")[0] for uri in storage.list_uris(BATCH + "labeling/jobs/")}
    assert jobs == {j.name for j in first.jobs}


@pytest.mark.parametrize("outcome", ["failed", "stopped", "partial"])
def test_jobs_that_do_not_finish_send_every_unfinished_item_back_with_a_reason(
        data: list[ManifestLine], outcome: str) -> None:
    lines = _batch(data)
    sim = LocalJobSimulation(outcome=outcome, finished_share=0.5)  # type: ignore[arg-type]
    summary = run_label_step(BATCH, SETTINGS, LocalWorkforceBackend(SETTINGS, simulation=sim))
    unlabeled = read_manifest(BATCH + "labeling/unlabeled.jsonl")
    labeled = read_manifest(BATCH + "labeling/labeled.jsonl")
    assert summary.labeled + summary.unlabeled == len(lines) == len(labeled) + len(unlabeled)
    assert {line.source_ref for line in labeled} | {line.source_ref for line in unlabeled} == \
        {line.source_ref for line in lines}
    assert unlabeled and all(line.data[UNLABELED_KEY]["reason"] for line in unlabeled)
    if outcome == "failed":
        assert summary.jobs[0].state == "Failed" and not labeled
        assert "failed" in unlabeled[0].data[UNLABELED_KEY]["reason"]
    # The batch line comes back as it was, so the item can be queued again.
    original = {line.source_ref: line.data for line in lines}
    for line in unlabeled:
        assert {k: v for k, v in line.data.items() if k != UNLABELED_KEY} == original[line.source_ref]


def test_cold_start_labels_from_scratch(data: list[ManifestLine]) -> None:
    _batch(data, n=4, cold=True)
    summary = run_label_step(BATCH, SETTINGS, LocalWorkforceBackend(SETTINGS))
    assert summary.labeled == 4


def test_malformed_answers_are_ignored_and_counted(data: list[ManifestLine]) -> None:
    _batch(data, n=6)
    sim = LocalJobSimulation(noise=NoiseModel(malformed_answer_rate=0.3), careless_share=0.0)
    summary = run_label_step(BATCH, SETTINGS, LocalWorkforceBackend(SETTINGS, simulation=sim))
    assert summary.labeled + summary.unlabeled == 6 and summary.labeled >= 4
    report = json.loads(storage.read_text(BATCH + "labeling/worker-reports.json"))
    ignored = sum(sum(w["ignored"].values()) for r in report.values() for w in r["workers"])
    assert ignored > 0


def test_items_without_truth_come_back_unlabeled(data: list[ManifestLine]) -> None:
    lines = _batch(data, n=3)
    extra = human_line("s3://unlabeled/incoming/unknown.jpg", data[0], SETTINGS, seed=99)
    write_manifest(BATCH + "inference/human.jsonl", [*lines, extra])
    run_label_step(BATCH, SETTINGS, LocalWorkforceBackend(SETTINGS))
    unlabeled = read_manifest(BATCH + "labeling/unlabeled.jsonl")
    assert [line.source_ref for line in unlabeled] == ["s3://unlabeled/incoming/unknown.jpg"]
    assert unlabeled[0].data[UNLABELED_KEY]["reason"] == "no worker answered"


def test_the_label_command_runs_on_a_local_folder(tmp_path: Path) -> None:
    """Given settings naming the local backend and a batch in a plain folder, `alp label` writes every output."""
    truths = _truths(10)
    truth_uri = str(tmp_path / "truth.jsonl")
    write_manifest(truth_uri, truths)
    settings = SETTINGS.with_overrides({"labeling.local_truth_uri": truth_uri})
    settings_path = tmp_path / "settings.json"
    settings_path.write_text(settings.to_json())
    batch = str(tmp_path / "batches" / "b7") + "/"
    write_manifest(batch + "inference/human.jsonl",
                   [human_line(f"/imgs/img_{i:04d}.jpg", truths[i], settings, seed=i) for i in range(3)])
    simulation = tmp_path / "sim.json"
    simulation.write_text(LocalJobSimulation(workers=2, careless_share=0.0).model_dump_json())
    assert main(["--settings", str(settings_path), "label", "--batch", batch,
                 "--local-simulation", str(simulation)]) == 0
    out = Path(batch) / "labeling"
    assert {p.name for p in out.iterdir()} >= {"labeled.jsonl", "unlabeled.jsonl", "worker-reports.json",
                                               "labeling.json", "jobs"}
    summary = json.loads((out / "labeling.json").read_text())
    assert summary["labeled"] == 3 and summary["backend"] == "local"
    reports = json.loads((out / "worker-reports.json").read_text())
    assert all(len(r["workers"]) == 2 for r in reports.values())


def test_the_label_command_reports_a_missing_human_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings_path = tmp_path / "settings.json"
    settings_path.write_text(SETTINGS.with_overrides({"labeling.local_truth_uri": str(tmp_path / "t.jsonl")}).to_json())
    assert main(["--settings", str(settings_path), "label", "--batch", str(tmp_path / "nope")]) == 2
    assert "human.jsonl" in capsys.readouterr().err


def test_gold_never_repeats_an_image_of_the_batch_though_the_dataset_names_its_pinned_copy():
    """A dataset line's source-ref is its content-addressed copy; the batch names the upload. The gold draw must
    still see that they are one image."""
    from labeling_builders import truth_line

    from alp.labeling.workflow import select_gold
    from alp.manifest import OBJECT_KEY

    settings = Settings()
    copy = "s3://data/images/sha256/ab/" + "ab" * 32 + ".jpg"
    pinned = truth_line(copy, settings).with_fields(
        **{OBJECT_KEY: {"bucket": "unlabeled", "key": "incoming/cam1/frame-7.jpg", "sha256": "ab" * 32}})
    other = truth_line("s3://data/images/sha256/cd/" + "cd" * 32 + ".jpg", settings, seed=1)

    drawn = select_gold([pinned, other], {"frame-7.jpg"}, 5, "batch-1", settings)
    assert [line.source_ref for line, _, _ in drawn] == [other.source_ref]
    # without the batch's image, both may be drawn: the check excludes, it does not drop pinned lines
    assert len(select_gold([pinned, other], set(), 5, "batch-1", settings)) == 2
