"""``alp demo --workforce studio``: the miniature demo with people labeling in a real Label Studio.

The "people" are a scripted annotator working through Label Studio's API as the editor submits: it draws the
synthetic truth's head boxes and places the truth's points (occluded ones marked occluded) on every open task,
while the demo's rounds wait for it. The demo's labeling pipeline never waits for people; the completion
pipeline takes each finished job on.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from studio_fixtures import StudioServer

from alp import storage
from alp.manifest import ManifestLine
from alp.studio.client import StudioClient


def _truth(run_dir: Path) -> dict[str, ManifestLine]:
    """The pool's truth by image name: the uploaded file's, and the pinned copy's a gold item shows (a dataset
    version names its images ``<sha256><ext>``, alp/pixels.py)."""
    state = json.loads((run_dir / "state.json").read_text())
    truth = {}
    for line in (ManifestLine.parse(t) for t in storage.iter_lines(str(state["pool_manifest"]))):
        name = storage.basename(line.source_ref)
        truth[name] = line
        ext = Path(name).suffix.lower()
        truth[hashlib.sha256(storage.read_bytes(line.source_ref)).hexdigest() + ext] = line
    return truth


def _result(task: dict[str, Any], truth: ManifestLine, kind: str) -> list[dict[str, Any]]:
    """What an annotator draws for the task, from the truth: LS regions in percent of the image."""
    head = truth.boxes("head-boxes")
    assert head is not None
    w, h = head[0].size.width, head[0].size.height
    common = {"to_name": "image", "original_width": w, "original_height": h, "image_rotation": 0}
    if kind == "heads":
        return [{**common, "id": f"h{i}", "from_name": "heads", "type": "rectanglelabels",
                 "value": {"x": 100 * a.left / w, "y": 100 * a.top / h, "width": 100 * a.width / w,
                           "height": 100 * a.height / h, "rotation": 0, "rectanglelabels": ["head"]}}
                for i, a in enumerate(head[0].annotations)]
    index = int(str(task["data"]["alp_item"]).rsplit("#", 1)[1])
    kps = truth.keypoints("keypoints")
    assert kps is not None
    person = next(p for p in kps[0].persons if p.head_box_index == index)
    result: list[dict[str, Any]] = []
    for k in person.keypoints:
        if k.v == 0:
            continue
        value = {"x": 100 * k.x / w, "y": 100 * k.y / h, "width": 0.6}
        result.append({**common, "id": f"k-{k.name}", "from_name": "keypoints", "type": "keypointlabels",
                       "value": {**value, "keypointlabels": [k.name]}})
        if k.v == 1:
            result.append({**common, "id": f"k-{k.name}", "from_name": "visibility", "type": "choices",
                           "value": {**value, "choices": ["occluded"]}})
    return result


def _annotate_until(stop: threading.Event, studio: StudioServer, run_dir: Path, done: list[int]) -> None:
    client = StudioClient(studio.connection.url, studio.connection.token)
    truth: dict[str, ManifestLine] = {}
    while not stop.wait(1.0):
        if not truth and (run_dir / "state.json").is_file():
            try:
                truth = _truth(run_dir)
            except (KeyError, ValueError, FileNotFoundError):
                continue
        for kind, project in studio.connection.projects.items():
            for task in client.tasks(project):
                if task.annotations or not str(task.data.get("alp_job", "")).startswith("demostudio"):
                    continue
                name = storage.basename(str(task.data["alp_item"]).split("#")[0])
                if name not in truth:
                    continue
                client.create_annotation(task.id, _result(task.model_dump(), truth[name], kind), lead_time=9.0)
                done.append(task.id)


@pytest.mark.slow
def test_the_mini_demo_waits_for_people_in_label_studio_and_learns_from_their_labels(
        studio_server: StudioServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir = tmp_path / "demo-run"
    stop = threading.Event()
    done: list[int] = []
    annotator = threading.Thread(target=_annotate_until, args=(stop, studio_server, run_dir, done), daemon=True)
    annotator.start()
    try:
        rc = _run_demo(run_dir, studio_server)
    finally:
        stop.set()
        annotator.join(timeout=30)
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-3000:]
    rows = json.loads((run_dir / "state.json").read_text())["rounds"]
    assert [r["round"] for r in rows] == [0, 1]
    assert rows[0]["human"] == 10 and rows[0]["unlabeled"] == 0, "the cold start's images labeled by the people"
    assert all(r["dataset_version"] for r in rows)
    assert len(done) >= 10 + 10, "a head task per image and a keypoint task per person were done in Label Studio"
    assert "people: head-boxes" in captured.err, "the round showed the people's progress"


def _run_demo(run_dir: Path, studio: StudioServer) -> int:
    """``alp demo --workforce studio --studio-file <the test server's studio.json>`` on the miniature sizes, with
    its own resource prefix (so the annotator tells the demo's jobs from other tests')."""
    from alp.demo.runner import DemoOptions, run_demo_cli
    from alp.demo.state import DemoConfig

    config = DemoConfig(rounds=1, pool=24, seed_images=10, test_images=8, batch_images=4, width=128, height=96,
                        imgsz=64, epochs=1, batch=8)
    options = DemoOptions(run_dir=run_dir, fresh=True, config=config, progress=False, workforce="studio",
                          studio_file=studio.run_dir / "studio.json", resource_prefix="demostudio")
    return run_demo_cli(options)
