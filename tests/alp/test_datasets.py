"""Dataset versions: merge, immutability, reproducibility, frozen split, automation quality."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from labeling_builders import auto_line, human_line, truth_line

from alp import datasets, storage
from alp.datasets import (
    DATASET_FILE,
    MANIFEST_FILE,
    QUALITY_FILE,
    SPLIT_KEY,
    SplitRule,
    automation_quality,
    create_version_from_lines,
    data_root_for,
    image_key,
    latest_version,
    list_versions,
    merge_batch,
    merge_batch_result,
    read_automation_quality,
    read_version,
    read_version_info,
)
from alp.labeling.contracts import AUDIT_MODEL_KEY
from alp.labeling.local import LocalWorkforceBackend
from alp.labeling.workflow import run_label_step
from alp.manifest import ManifestLine, read_manifest, write_manifest
from alp.pixels import PixelsError
from alp.settings import Settings
from alp.steps import DATA_ROOT_ENV

BASE = Settings().with_overrides({"labeling.backend": "local", "labeling.gold_items_per_job": 3})


def _upload(folder: Path, i: int) -> str:
    """An uploaded image (its bytes only matter to the pixel pins: merging never decodes them)."""
    path = folder / f"img_{i:04d}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(f"pixels of image {i}".encode())
    return str(path)


@pytest.fixture(scope="module")
def labeled_batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Settings, list[ManifestLine]]:
    """A batch folder after the infer and label steps: 8 human/audit items labeled locally, 6 auto items; the
    uploads are files in ``<root>/incoming/``."""
    root = tmp_path_factory.mktemp("src")
    truths = [truth_line(f"/pool/img_{i:04d}.jpg", BASE, persons=1 + i % 3, seed=i) for i in range(20)]
    write_manifest(str(root / "truth.jsonl"), truths)
    settings = BASE.with_overrides({"labeling.local_truth_uri": str(root / "truth.jsonl")})
    batch = root / "batches" / "b0001"
    write_manifest(str(batch / "inference" / "human.jsonl"), [
        human_line(_upload(root / "incoming", i), truths[i], settings, seed=i,
                   route="audit" if i % 3 == 0 else "human") for i in range(8)])
    write_manifest(str(batch / "inference" / "auto.jsonl"), [
        auto_line(_upload(root / "incoming", i), truths[i], settings, seed=i) for i in range(8, 14)])
    for i in range(14, 20):
        _upload(root / "incoming", i)
    run_label_step(str(batch), settings, LocalWorkforceBackend(settings))
    return batch, settings, truths


def _copy_batch(batch: Path, root: Path, name: str = "b0001") -> str:
    dest = root / "batches" / name
    shutil.copytree(batch, dest)
    return str(dest) + "/"


def test_merge_writes_an_immutable_version_with_every_record_once(
        labeled_batch: tuple[Path, Settings, list[ManifestLine]], tmp_path: Path) -> None:
    batch, settings, _ = labeled_batch
    uri = merge_batch(_copy_batch(batch, tmp_path), settings)
    assert uri == str(tmp_path) + "/datasets/v0001/"
    lines = read_version(uri)
    keys = [image_key(line) for line in lines]
    assert len(keys) == len(set(keys)) == 14 and keys == sorted(keys)
    info = read_version_info(uri)
    assert info.parent is None and info.batches == ["b0001"] and info.records == 14
    assert info.counts_by_source == {"audit": 3, "auto": 6, "human": 5}
    assert sum(info.counts_by_split.values()) == 14
    assert all(j.startswith(("alp-heads-", "alp-kpts-")) for j in info.labeling_jobs) and len(info.labeling_jobs) == 2
    assert info.settings_sha256 == settings.sha256() and set(info.content_sha256) == {MANIFEST_FILE, QUALITY_FILE}
    for line in lines:
        assert set(line.data) <= {"source-ref", "head-boxes", "head-boxes-metadata", "keypoints", "keypoints-metadata",
                                  "alp-object", "alp-source", "alp-split"}
        # the record names its own content-addressed copy of the upload, whose hash it pins
        sha = line.data["alp-object"]["sha256"]
        assert line.source_ref == str(tmp_path / "images" / "sha256" / sha[:2] / f"{sha}.jpg")
        assert hashlib.sha256(Path(line.source_ref).read_bytes()).hexdigest() == sha
        assert Path(line.source_ref).read_bytes() == f"pixels of image {int(image_key(line)[4:8])}".encode()
        assert line.data[SPLIT_KEY] in ("train", "val", "test")
        source = line.data["alp-source"]
        assert source["batch"] == "b0001" and (source["job"] is None) == (source["kind"] == "auto")
        assert line.boxes("head-boxes") is not None and line.keypoints("keypoints") is not None


def test_a_rerun_of_merge_returns_the_same_version(labeled_batch: tuple[Path, Settings, list[ManifestLine]],
                                                   tmp_path: Path) -> None:
    batch, settings, _ = labeled_batch
    batch_dir = _copy_batch(batch, tmp_path)
    first = merge_batch_result(batch_dir, settings)
    again = merge_batch_result(batch_dir, settings)
    assert first.created and not again.created and again.uri == first.uri
    assert list_versions(str(tmp_path) + "/") == [first.uri]


def test_the_same_inputs_reproduce_the_version_byte_for_byte(
        labeled_batch: tuple[Path, Settings, list[ManifestLine]], tmp_path: Path) -> None:
    batch, settings, _ = labeled_batch
    batch_dir = _copy_batch(batch, tmp_path)
    uri = Path(merge_batch(batch_dir, settings))
    first = {name: (uri / name).read_bytes() for name in (MANIFEST_FILE, DATASET_FILE, QUALITY_FILE)}
    # the same data root (its records name their copies there) without the version: the merge writes it again
    shutil.rmtree(tmp_path / "datasets")
    assert Path(merge_batch(batch_dir, settings)) == uri
    for name, data in first.items():
        assert (uri / name).read_bytes() == data, name


def test_a_human_label_replaces_an_auto_label_of_the_same_image_and_keeps_its_split(
        labeled_batch: tuple[Path, Settings, list[ManifestLine]], tmp_path: Path) -> None:
    batch, settings, truths = labeled_batch
    batch_dir = _copy_batch(batch, tmp_path)
    labeled = read_manifest(batch_dir + "labeling/labeled.jsonl")
    people_ref = labeled[0].source_ref
    # The same image also arrives as an auto line in this batch: the people's label wins.
    auto = read_manifest(batch_dir + "inference/auto.jsonl")
    write_manifest(batch_dir + "inference/auto.jsonl", [*auto, auto_line(people_ref, truths[0], settings)])
    v1 = merge_batch(batch_dir, settings)
    by_key = {image_key(line): line for line in read_version(v1)}
    assert by_key[image_key(labeled[0])].data["alp-source"]["kind"] in ("human", "audit")
    # A later batch labels one of v1's auto images by hand: it replaces the auto record, split unchanged.
    auto_ref, auto_key = auto[0].source_ref, image_key(auto[0])
    later = tmp_path / "batches" / "b0002"
    relabeled = labeled[1].with_fields(**{"source-ref": auto_ref, "alp-object": auto[0].data["alp-object"]})
    write_manifest(str(later / "labeling" / "labeled.jsonl"), [relabeled])
    v2 = merge_batch(str(later), settings)
    lines = read_version(v2)
    assert len(lines) == len(read_version(v1))
    replaced = next(line for line in lines if image_key(line) == auto_key)
    assert replaced.data["alp-source"]["kind"] in ("human", "audit") and replaced.data["alp-source"]["batch"] == "b0002"
    assert replaced.data[SPLIT_KEY] == by_key[auto_key].data[SPLIT_KEY]
    assert replaced.source_ref == by_key[auto_key].source_ref  # the same pixels, the same copy
    info = read_version_info(v2)
    assert info.parent == "v0001" and info.batches == ["b0001", "b0002"] and info.changes["replaced"] == 1


def test_the_split_is_frozen_even_when_the_settings_change(
        labeled_batch: tuple[Path, Settings, list[ManifestLine]], tmp_path: Path) -> None:
    batch, settings, truths = labeled_batch
    v1 = merge_batch(_copy_batch(batch, tmp_path), settings)
    changed = settings.with_overrides({"labeling.test_split_fraction": 0.5, "labeling.split_seed": "other"})
    later = tmp_path / "batches" / "b0002"
    write_manifest(str(later / "inference" / "auto.jsonl"),
                   [auto_line(str(batch.parent.parent / "incoming" / f"img_{i:04d}.jpg"), truths[i], changed)
                    for i in range(14, 20)])
    v2 = merge_batch(str(later), changed)
    before = {image_key(line): line.data[SPLIT_KEY] for line in read_version(v1)}
    after = {image_key(line): line.data[SPLIT_KEY] for line in read_version(v2)}
    assert all(after[k] == v for k, v in before.items())
    rule = read_version_info(v1).split
    assert read_version_info(v2).split == rule
    kinds = {image_key(line): line.data["alp-source"]["kind"] for line in read_version(v2)}
    assert all(after[k] == rule.split_for(k, kinds[k]) for k in after)


def test_the_test_and_val_splits_hold_only_labels_people_made() -> None:
    rule = SplitRule(seed="s", test_fraction=0.2, val_fraction=0.1)
    keys = [f"img_{i}.jpg" for i in range(500)]
    held_out = {k: rule.split_for(k) for k in keys if rule.split_for(k) in ("test", "val")}
    assert set(held_out.values()) == {"test", "val"}
    assert all(rule.split_for(k, "human") == rule.split_for(k, "seed") == s for k, s in held_out.items())
    # a model's own label never becomes test truth nor picks the epoch on val: it trains instead
    assert {rule.split_for(k, "auto") for k in held_out} == {"train"}
    assert all(rule.split_for(k, "auto") == "train" for k in keys)


def test_the_gate_scores_only_test_records_people_labeled(tmp_path: Path) -> None:
    from training.evaluate import EvaluationError, frozen_test_lines

    def record(name: str, kind: str, split: str) -> ManifestLine:
        return ManifestLine({"source-ref": f"s3://u/incoming/{name}", "alp-source": {"kind": kind},
                             SPLIT_KEY: split})

    version = tmp_path / "v0001"
    write_manifest(str(version / "manifest.jsonl"), [
        record("a.jpg", "human", "test"), record("b.jpg", "auto", "test"), record("c.jpg", "seed", "test"),
        record("d.jpg", "auto", "train")])
    assert [line.source_ref[-5:] for line in frozen_test_lines(str(version))] == ["a.jpg", "c.jpg"]
    write_manifest(str(version / "manifest.jsonl"), [record("b.jpg", "auto", "test")])
    with pytest.raises(EvaluationError, match="labeled by people"):
        frozen_test_lines(str(version))


def test_split_shares_follow_the_fractions() -> None:
    rule = SplitRule(seed="s", test_fraction=0.2, val_fraction=0.1)
    splits = [rule.split_for(f"img_{i}.jpg") for i in range(5000)]
    assert 0.18 < splits.count("test") / 5000 < 0.22 and 0.08 < splits.count("val") / 5000 < 0.12


def test_a_seed_version_then_a_batch_version_accumulates_everything(
        labeled_batch: tuple[Path, Settings, list[ManifestLine]], tmp_path: Path) -> None:
    batch, settings, truths = labeled_batch
    root = str(tmp_path) + "/"
    assert latest_version(root) is None
    seed = [t.with_fields(**{"source-ref": str(batch.parent.parent / "incoming" / storage.basename(t.source_ref))})
            for t in truths[14:20]]
    v1 = create_version_from_lines(seed, root, settings, "seed", "round 0 seed set")
    assert create_version_from_lines(seed, root, settings, "seed", "round 0 seed set") == v1
    assert read_version_info(v1).counts_by_source == {"seed": 6}
    v2 = merge_batch(_copy_batch(batch, tmp_path), settings)
    assert latest_version(root) == v2 and read_version_info(v2).parent == "v0001"
    assert read_version_info(v2).records == 6 + 14


def test_lines_with_broken_labels_are_set_aside_not_merged(
        labeled_batch: tuple[Path, Settings, list[ManifestLine]], tmp_path: Path) -> None:
    batch, settings, _ = labeled_batch
    batch_dir = _copy_batch(batch, tmp_path)
    labeled = read_manifest(batch_dir + "labeling/labeled.jsonl")
    broken = labeled[0].with_fields(**{"head-boxes": {"image_size": [], "annotations": []}})
    write_manifest(batch_dir + "labeling/labeled.jsonl", [broken, *labeled[1:]])
    uri = merge_batch(batch_dir, settings)
    assert image_key(labeled[0]) not in {image_key(line) for line in read_version(uri)}
    rejected = read_manifest(batch_dir + "merge/rejected.jsonl")
    assert len(rejected) == 1 and "head-boxes" in rejected[0].data["alp-merge-rejected"]
    assert read_version_info(uri).added_from["rejected"] == 1


def test_merge_without_any_step_output_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run the infer and label steps"):
        merge_batch(str(tmp_path / "batches" / "empty"), BASE)


def test_the_automation_quality_report_is_written_beside_the_version(
        labeled_batch: tuple[Path, Settings, list[ManifestLine]], tmp_path: Path) -> None:
    batch, settings, _ = labeled_batch
    uri = merge_batch(_copy_batch(batch, tmp_path), settings)
    quality = read_automation_quality(uri)
    assert quality is not None and quality.batch == "b0001"
    assert quality.audit_items == 3 and quality.compared_items == 3
    for p in (quality.boxes, quality.persons_oks, quality.visibility, quality.images_fully_agree):
        assert p.total > 0 and p.share is not None and p.ci95[0] <= p.share <= p.ci95[1]


def _audit(truth: ManifestLine, model: ManifestLine) -> ManifestLine:
    keys = ("head-boxes", "head-boxes-metadata", "keypoints", "keypoints-metadata")
    return truth.with_fields(**{AUDIT_MODEL_KEY: {k: model.data[k] for k in keys}})


def test_automation_quality_measures_agreement_with_a_confidence_interval() -> None:
    truths = [truth_line(f"/p/{i}.jpg", BASE, persons=2, seed=i) for i in range(10)]
    perfect = automation_quality([_audit(t, t) for t in truths], BASE)
    assert perfect.boxes.share == 1.0 and perfect.persons_oks.share == 1.0 and perfect.visibility.share == 1.0
    assert perfect.images_fully_agree.agree == 10 and perfect.images_fully_agree.ci95[0] > 0.65
    # The model misses the second head of every image and shifts all points far away.
    worse = []
    for t in truths:
        found = t.boxes("head-boxes")
        kps = t.keypoints("keypoints")
        assert found is not None and kps is not None
        label = found[0].model_copy(update={"annotations": found[0].annotations[:1]})
        far = kps[0].model_copy(update={"persons": [p.model_copy(update={"keypoints": [
            k.model_copy(update={"x": k.x + 80}) for k in p.keypoints]}) for p in kps[0].persons[:1]]})
        worse.append(_audit(t, t.with_boxes("head-boxes", label, found[1]).with_keypoints("keypoints", far, kps[1])))
    report = automation_quality(worse, BASE)
    assert report.boxes.share == 0.5 and report.box_precision.share == 1.0
    assert report.images_boxes_agree.agree == 0 and report.persons_oks.agree == 0
    assert automation_quality([truths[0]], BASE).missing_model_labels == 1


def test_data_root_comes_from_the_environment_or_two_levels_above_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    assert data_root_for("s3://bucket/batches/b1/") == "s3://bucket/"
    assert data_root_for("/data/batches/b1") == "/data/"
    monkeypatch.setenv(DATA_ROOT_ENV, "s3://other")
    assert data_root_for("s3://bucket/batches/b1/") == "s3://other/"


# --- write-once versions: numbering, crashes, races -----------------------------------------------------------------

def _auto_batch(labeled: tuple[Path, Settings, list[ManifestLine]], root: Path, name: str,
                images: range) -> str:
    """A later batch of auto lines for the fixture's uploads ``images``."""
    batch, settings, truths = labeled
    incoming = batch.parent.parent / "incoming"
    folder = root / "batches" / name
    write_manifest(str(folder / "inference" / "auto.jsonl"),
                   [auto_line(str(incoming / f"img_{i:04d}.jpg"), truths[i], settings, seed=i) for i in images])
    return str(folder) + "/"


def _no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(seconds: float) -> None:
        raise AssertionError("the merge waited for a version nobody is writing")

    monkeypatch.setattr(datasets.time, "sleep", refuse)


def test_a_crash_s_incomplete_folder_is_never_listed_nor_written_again(
        labeled_batch: tuple[Path, Settings, list[ManifestLine]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Given v0001 and a v0002 folder a crashed merge left without dataset.json an hour ago, when a batch is merged,
    then it becomes v0003 on top of v0001 at once, and v0002 stays as the crash left it, unlisted."""
    batch, settings, _ = labeled_batch
    merge_batch(_copy_batch(batch, tmp_path), settings)
    crashed = tmp_path / "datasets" / "v0002" / MANIFEST_FILE
    crashed.parent.mkdir()
    crashed.write_text("half a manifest")
    os.utime(crashed, (time.time() - 3600, time.time() - 3600))
    _no_waiting(monkeypatch)
    result = merge_batch_result(_auto_batch(labeled_batch, tmp_path, "b0002", range(14, 17)), settings)
    assert result.uri == str(tmp_path) + "/datasets/v0003/" and result.version.parent == "v0001"
    assert crashed.read_text() == "half a manifest" and not (crashed.parent / DATASET_FILE).exists()
    assert [storage.basename(v.rstrip("/")) for v in list_versions(str(tmp_path) + "/")] == ["v0001", "v0003"]


def test_a_merge_waits_for_a_version_another_merge_is_writing_and_builds_on_it(
        labeled_batch: tuple[Path, Settings, list[ManifestLine]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Given another merge that has written v0002's manifest a moment ago and not yet its dataset.json, when a batch
    is merged, then it waits until v0002 is complete and writes v0003 on top of it (building on v0001 would leave
    v0002's records out of every later version)."""
    batch, settings, _ = labeled_batch
    v1 = Path(merge_batch(_copy_batch(batch, tmp_path), settings))
    other = tmp_path / "datasets" / "v0002"
    other.mkdir()
    shutil.copyfile(v1 / MANIFEST_FILE, other / MANIFEST_FILE)
    info = read_version_info(str(v1)).model_copy(update={"version": "v0002", "parent": "v0001",
                                                         "batches": ["b0001", "elsewhere"]})
    waits: list[float] = []

    def other_merge_finishes(seconds: float) -> None:
        waits.append(seconds)
        (other / DATASET_FILE).write_text(info.model_dump_json())

    monkeypatch.setattr(datasets.time, "sleep", other_merge_finishes)
    result = merge_batch_result(_auto_batch(labeled_batch, tmp_path, "b0002", range(14, 17)), settings)
    assert len(waits) == 1
    assert result.uri == str(tmp_path) + "/datasets/v0003/" and result.version.parent == "v0002"
    assert result.version.batches == ["b0001", "b0002", "elsewhere"]


def test_a_merge_that_waited_for_another_merge_of_the_same_batch_returns_its_version(
        labeled_batch: tuple[Path, Settings, list[ManifestLine]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Given another merge of the very batch (the completion pipeline started by the job's event and by the
    scheduled check) still writing v0002, when the batch is merged again, then it waits and returns v0002: one
    version, one training start, not a v0003 holding the batch a second time."""
    batch, settings, _ = labeled_batch
    v1 = Path(merge_batch(_copy_batch(batch, tmp_path), settings))
    second = _auto_batch(labeled_batch, tmp_path, "b0002", range(14, 17))
    other = tmp_path / "datasets" / "v0002"
    other.mkdir()
    shutil.copyfile(v1 / MANIFEST_FILE, other / MANIFEST_FILE)
    info = read_version_info(str(v1)).model_copy(update={"version": "v0002", "parent": "v0001",
                                                         "batches": ["b0001", "b0002"]})
    monkeypatch.setattr(datasets.time, "sleep", lambda _s: (other / DATASET_FILE).write_text(info.model_dump_json()))

    result = merge_batch_result(second, settings)

    assert result.created is False and result.uri == str(tmp_path) + "/datasets/v0002/"
    assert [p.name for p in sorted((tmp_path / "datasets").iterdir())] == ["v0001", "v0002"]


def _racing(monkeypatch: pytest.MonkeyPatch, taken: str, competitor: Callable[[], object]) -> list[str]:
    """Runs ``competitor`` (another merge) the moment this merge first writes ``taken``: it wins the number."""
    real = storage.write_text
    raced: list[str] = []

    def write_text(uri: str, text: str, **kwargs: Any) -> str:
        if uri.endswith(taken) and not raced:
            raced.append(uri)
            competitor()
        return real(uri, text, **kwargs)

    monkeypatch.setattr(storage, "write_text", write_text)
    return raced


def test_the_loser_of_a_race_for_a_version_number_takes_the_next_on_the_winner_s_version(
        labeled_batch: tuple[Path, Settings, list[ManifestLine]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Given two merges that both chose v0002, when the other one writes v0002 first, then this one's first write
    is refused (write-once), and it writes v0003 with v0002 as its parent: both batches' records are kept."""
    batch, settings, _ = labeled_batch
    merge_batch(_copy_batch(batch, tmp_path), settings)
    winner = _auto_batch(labeled_batch, tmp_path, "b0002", range(14, 17))
    loser = _auto_batch(labeled_batch, tmp_path, "b0003", range(17, 20))
    raced = _racing(monkeypatch, "/v0002/" + MANIFEST_FILE, lambda: merge_batch(winner, settings))
    result = merge_batch_result(loser, settings)
    assert raced and result.created
    assert result.uri == str(tmp_path) + "/datasets/v0003/" and result.version.parent == "v0002"
    assert result.version.batches == ["b0001", "b0002", "b0003"] and result.version.records == 14 + 3 + 3
    assert read_version_info(str(tmp_path) + "/datasets/v0002/").batches == ["b0001", "b0002"]


def test_two_merges_of_the_same_batch_racing_give_one_version(
        labeled_batch: tuple[Path, Settings, list[ManifestLine]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    batch, settings, _ = labeled_batch
    merge_batch(_copy_batch(batch, tmp_path), settings)
    again = _auto_batch(labeled_batch, tmp_path, "b0002", range(14, 17))
    raced = _racing(monkeypatch, "/v0002/" + MANIFEST_FILE, lambda: merge_batch(again, settings))
    result = merge_batch_result(again, settings)
    assert raced and not result.created and result.uri == str(tmp_path) + "/datasets/v0002/"
    assert len(list_versions(str(tmp_path) + "/")) == 2


def test_a_seed_set_with_an_image_gone_writes_no_version_and_names_it(
        labeled_batch: tuple[Path, Settings, list[ManifestLine]], tmp_path: Path) -> None:
    _, settings, truths = labeled_batch
    present = tmp_path / "incoming" / "a.jpg"
    present.parent.mkdir()
    present.write_bytes(b"a")
    seed = [truths[0].with_fields(**{"source-ref": str(present)}),
            truths[1].with_fields(**{"source-ref": str(tmp_path / "incoming" / "gone.jpg")})]
    with pytest.raises(PixelsError, match=r"1 of 2 images cannot be pinned.*gone\.jpg"):
        create_version_from_lines(seed, str(tmp_path) + "/", settings)
    assert list_versions(str(tmp_path) + "/") == []
