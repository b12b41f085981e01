"""Exporting a local project's dataset version: COCO keypoints JSON pycocotools loads, and YOLO datasets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pycocotools.coco import COCO

from alp import aws, registry
from alp.cli import main
from alp.datasets import create_version_from_lines
from alp.local.project import LocalState, ProjectPaths, save_state
from alp.machine import embedded
from alp.manifest import read_manifest
from alp.resources import ResourceNames
from alp.settings import Settings


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Path:
    """A project whose pipeline state holds one version: 6 synthetic frames labeled by people (seed), written the
    way the runner leaves it: the buckets' copy under alp-project/aws/, the frames under alp-project/unlabeled/."""
    monkeypatch.chdir(tmp_path)
    assert main(["synth-data", "--n", "6", "--out", "frames", "--width", "160", "--height", "128"]) == 0
    capsys.readouterr()
    settings = Settings()
    paths = ProjectPaths.of(tmp_path / "alp-project", settings)
    lines = read_manifest(str(tmp_path / "frames" / "manifest.jsonl"))
    frames = {Path(line.source_ref).name: Path(line.source_ref) for line in lines}
    server = embedded.EmbeddedAws.start()
    try:
        with embedded.aws_environment(server.endpoint, settings.region):
            names = ResourceNames.from_settings(settings, embedded.account_id())
            s3 = aws.client("s3")
            for bucket in embedded.mirrored_buckets(names):
                s3.create_bucket(Bucket=bucket)
            paths.incoming.mkdir(parents=True)
            prefix = settings.storage.unlabeled_prefix
            for name, source in frames.items():
                shutil.copyfile(source, paths.incoming / name)
                s3.put_object(Bucket=names.unlabeled_bucket, Key=prefix + name, Body=source.read_bytes())
            save_state(paths, LocalState(seeded=sorted(frames)))
            in_bucket = [line.with_fields(**{"source-ref": f"s3://{names.unlabeled_bucket}/{prefix}"
                                                          f"{Path(line.source_ref).name}"}) for line in lines]
            create_version_from_lines(in_bucket, names.data_root, settings)
            registry.ensure_model_package_group(settings)
            embedded.snapshot_state(settings, names, paths.mirror,
                                    buckets=embedded.mirrored_buckets(names, with_uploads=False))
    finally:
        server.stop()
    return tmp_path


def test_coco_export_holds_the_labels_and_loads_in_pycocotools(project: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["local", "export", "--format", "coco", "--out", "export/coco.json", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["version"] == "v0001" and summary["images"] == 6
    coco = COCO(str(project / "export" / "coco.json"))
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == {"person", "head"}
    truth = {Path(line.source_ref).name: line for line in read_manifest(str(project / "frames" / "manifest.jsonl"))}
    settings = Settings()
    for image in coco.loadImgs(coco.getImgIds()):
        line = truth[image["file_name"]]
        persons = line.keypoints(settings.labeling.keypoint_label_attribute)[0].persons
        heads = line.boxes(settings.labeling.head_label_attribute)[0].annotations
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        person_anns = [a for a in anns if a["category_id"] == 1]
        head_anns = [a for a in anns if a["category_id"] == 2]
        assert len(person_anns) == len(persons) and len(head_anns) == len(heads)
        for ann, person in zip(person_anns, persons, strict=True):
            flat = ann["keypoints"]
            for k, point in enumerate(person.keypoints):  # visibility 0/1/2 and the points, unchanged
                assert flat[3 * k + 2] == point.v
                if point.v:
                    assert (flat[3 * k], flat[3 * k + 1]) == pytest.approx((point.x, point.y))
        assert sorted(tuple(a["bbox"]) for a in head_anns) == sorted(
            (h.left, h.top, h.width, h.height) for h in heads)


def test_yolo_export_writes_the_pose_datasets_with_their_yaml(project: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["local", "export", "--format", "yolo", "--out", "export/yolo", "--version", "v0001", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == "yolo" and summary["skipped"] == 0
    yamls = sorted(p.name for p in (project / "export" / "yolo").rglob("*.yaml"))
    assert yamls, "no dataset YAML written"
    assert main(["local", "export", "--format", "coco", "--out", "x.json", "--version", "v0009"]) == 2
    assert "no dataset version v0009" in capsys.readouterr().err
