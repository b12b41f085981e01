"""COCO in, COCO out: labels given with ``alp local up --labels`` become the first dataset version and export unchanged.

The file names the frames by their path under the imported folder (one in a sub-folder); persons carry keypoints
with all three visibilities and a ``head_bbox``. A file naming a frame that was not imported
is refused before anything starts.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import ultralytics

from alp.cli import main
from alp.schema import INCABIN17

ASSETS = Path(ultralytics.__file__).parent / "assets"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _person(ann_id: int, image_id: int, x0: float, y0: float) -> dict[str, Any]:
    keypoints: list[float] = []
    for j in range(INCABIN17.num_keypoints):
        v = (2, 1, 0)[j % 3]
        keypoints += [0.0, 0.0, 0] if v == 0 else [x0 + 7.25 * j, y0 + 3.5 * j, v]
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "keypoints": keypoints,
            "num_keypoints": sum(1 for j in range(INCABIN17.num_keypoints) if j % 3 != 2),
            "bbox": [x0 - 10.0, y0 - 10.0, 150.0, 90.0], "area": 13500.0, "iscrowd": 0,
            "head_bbox": [x0 + 5.5, y0 - 40.25, 30.0, 36.0]}


@pytest.fixture
def labeled(tmp_path: Path) -> tuple[Path, Path]:
    photos = tmp_path / "photos"
    (photos / "cam2").mkdir(parents=True)
    shutil.copyfile(ASSETS / "bus.jpg", photos / "bus.jpg")
    shutil.copyfile(ASSETS / "zidane.jpg", photos / "cam2" / "zidane.jpg")
    coco = {
        "images": [{"id": 1, "file_name": "bus.jpg", "width": 810, "height": 1080},
                   {"id": 2, "file_name": "cam2/zidane.jpg", "width": 1280, "height": 720}],
        "annotations": [_person(1, 1, 100.0, 200.0), _person(2, 1, 400.5, 250.25), _person(3, 2, 600.0, 100.0)],
        "categories": [{"id": 1, "name": "person", "keypoints": list(INCABIN17.names),
                        "skeleton": [[a + 1, b + 1] for a, b in INCABIN17.skeleton_idx]}],
    }
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(coco))
    return photos, labels


def _keypoints_by_image(coco: dict[str, Any]) -> dict[str, list[list[float]]]:
    names = {im["id"]: im["file_name"] for im in coco["images"]}
    out: dict[str, list[list[float]]] = {name: [] for name in names.values()}
    for ann in coco["annotations"]:
        if ann.get("category_id", 1) == 1 and "keypoints" in ann:
            out[names[ann["image_id"]]].append([round(float(v), 3) for v in [*ann["keypoints"], *ann["head_bbox"]]])
    return {k: sorted(v) for k, v in out.items()}


def test_labels_given_with_up_export_unchanged(labeled: tuple[Path, Path], tmp_path: Path) -> None:
    photos, labels = labeled
    project = tmp_path / "project"
    try:
        assert main(["local", "up", "--images", str(photos), "--labels", str(labels), "--project-dir", str(project),
                     "--port", str(_free_port()), "--epochs", "1", "--train-imgsz", "64"]) == 0
        deadline = time.monotonic() + 300
        while not (project / "aws" / "registry.json").is_file() and time.monotonic() < deadline:
            time.sleep(0.5)
        out = tmp_path / "out.json"
        assert main(["local", "export", "--project-dir", str(project), "--format", "coco", "--out", str(out)]) == 0
    finally:
        main(["local", "down", "--project-dir", str(project)])
    exported = json.loads(out.read_text())
    given = json.loads(labels.read_text())
    assert _keypoints_by_image(exported) == _keypoints_by_image(given)
    assert sorted(im["file_name"] for im in exported["images"]) == ["bus.jpg", "cam2/zidane.jpg"]
    from pycocotools.coco import COCO

    assert len(COCO(str(out)).getAnnIds(catIds=[1])) == 3


def test_labels_naming_a_frame_that_was_not_imported_are_refused(labeled: tuple[Path, Path], tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    photos, labels = labeled
    coco = json.loads(labels.read_text())
    coco["images"][1]["file_name"] = "cam9/elsewhere.jpg"
    labels.write_text(json.dumps(coco))
    project = tmp_path / "project"
    rc = main(["local", "up", "--images", str(photos), "--labels", str(labels), "--project-dir", str(project)])
    assert rc != 0
    assert "cam9/elsewhere.jpg" in capsys.readouterr().err
    assert not (project / "runner.json").exists()
