"""``alp local up`` on real photos, people answering through Label Studio's API, a round finished, the export.

The photos ship inside ultralytics (bus.jpg: four people, zidane.jpg: two). ``up`` starts the real runner in the
background (the embedded AWS, the declared steps) and the project's own Label Studio; round 0's tasks come
prefilled by the zero-shot bundle. The test answers them as people would: head tasks as proposed, one person as
proposed, one with a moved point and a changed visibility; the round then merges, trains and gates, and the COCO
export holds exactly those values. ``down`` and ``up`` again: the round, the dataset version and the tasks are
the ones there were.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ultralytics
from studio_builders import job_tasks, prediction_of, submit

from alp.cli import main
from alp.datasets import SplitRule
from alp.settings import Settings
from alp.studio.client import StudioClient
from alp.studio.server import StudioConnection

ASSETS = Path(ultralytics.__file__).parent / "assets"
ROUND_SECONDS = 600


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _status(project: Path) -> dict[str, Any]:
    from alp.local.lifecycle import project_status
    from alp.local.project import ProjectPaths
    return project_status(ProjectPaths.of(project, Settings()))


def _wait(project: Path, done: Any, what: str, seconds: float = ROUND_SECONDS) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = _status(project)
        if done(status):
            return status
        if not status["runner"]["running"]:
            log = (project / "runner.log").read_text()[-3000:]
            pytest.fail(f"the runner stopped while waiting for {what}:\n{log}")
        time.sleep(1.0)
    pytest.fail(f"no {what} within {seconds} s: {json.dumps(_status(project))[:2000]}")


def _one_photo_in_test() -> Settings:
    """A split that puts one photo in the test split and the other in train: the round can then train a candidate
    and gate it on people's labels (with two images, the default shares would most likely leave the test split
    empty, and the round would end without training, as it says)."""
    base = Settings()
    prefix = base.storage.unlabeled_prefix
    for seed in (f"local-{i}" for i in range(1000)):
        rule = SplitRule(seed=seed, test_fraction=0.5, val_fraction=0.0)
        if {rule.split_for(f"{prefix}{name}", "human") for name in ("bus.jpg", "zidane.jpg")} == {"train", "test"}:
            return base.with_overrides({"labeling.split_seed": seed, "labeling.test_split_fraction": 0.5,
                                        "labeling.val_split_fraction": 0.0})
    raise AssertionError("no split seed puts one photo in each split")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    photos = tmp_path_factory.mktemp("photos")
    for name in ("bus.jpg", "zidane.jpg"):
        shutil.copyfile(ASSETS / name, photos / name)
    root = tmp_path_factory.mktemp("local") / "project"
    settings_file = root.parent / "settings.json"
    settings_file.write_text(_one_photo_in_test().to_json())
    # tiny training (the round's gate and registry run as they do for real); the photos' people at 640 px
    rc = main(["--settings", str(settings_file), "local", "up", "--images", str(photos), "--project-dir", str(root),
               "--port", str(_free_port()), "--first-round", "2", "--train-imgsz", "64", "--epochs", "1"])
    assert rc == 0
    try:
        yield root
    finally:
        main(["local", "down", "--project-dir", str(root)])


def _client(project: Path) -> tuple[StudioClient, StudioConnection]:
    connection = StudioConnection.read(project / "studio" / "studio.json")
    return connection.client(), connection


def _job(client: StudioClient, project_id: int) -> str:
    jobs = sorted({str(t.data["alp_job"]) for t in client.tasks(project_id)})
    assert jobs, "no tasks in the project"
    return jobs[-1]


def _moved(result: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str, dict[str, float]]:
    """The proposal with its first placed keypoint moved 2% right and marked occluded; returns the result, the
    point's name and its new position in percent."""
    out = [dict(r) for r in result if not r.get("readonly")]
    point = next(r for r in out if r["type"] == "keypointlabels")
    name = point["value"]["keypointlabels"][0]
    value = {**point["value"], "x": min(99.0, point["value"]["x"] + 2.0)}
    point["value"] = value
    out = [r for r in out if not (r["type"] == "choices" and r["id"] == point["id"])]
    out.append({**{k: point[k] for k in ("id", "to_name", "original_width", "original_height", "image_rotation")},
                "from_name": "visibility", "type": "choices",
                "value": {"x": value["x"], "y": value["y"], "width": value["width"], "choices": ["occluded"]}})
    return out, name, {"x": value["x"], "y": value["y"]}


def test_round_zero_is_prefilled_people_finish_it_and_the_export_holds_their_labels(project: Path,
                                                                                    tmp_path: Path) -> None:
    client, connection = _client(project)
    heads_project, keypoints_project = connection.projects["heads"], connection.projects["keypoints"]
    # round 0: both photos for people, the head boxes proposed by the zero-shot model
    heads = job_tasks(client, heads_project, _job(client, heads_project))
    assert len(heads) == 2
    proposed = {str(t.data["alp_item"]).rsplit("/", 1)[-1]: prediction_of(client, t) for t in heads}
    assert len(proposed["bus.jpg"]) >= 3 and len(proposed["zidane.jpg"]) >= 2, proposed
    for task in heads:
        submit(client, task, prediction_of(client, task))
    # the completion pipeline makes the person tasks, each prefilled with the zero-shot keypoints
    deadline = time.monotonic() + 300
    while not list(client.tasks(keypoints_project)) and time.monotonic() < deadline:
        time.sleep(1.0)
    persons = job_tasks(client, keypoints_project, _job(client, keypoints_project))
    assert len(persons) >= 5
    answers: dict[int, list[dict[str, Any]]] = {}
    for i, task in enumerate(persons):
        result = prediction_of(client, task)
        assert any(r["type"] == "keypointlabels" for r in result), "a person task without proposed points"
        if i == 1:
            result, moved_name, moved_at = _moved(result)
            moved_task = task
        answers[task.id] = result
        submit(client, task, result)

    status = _wait(project, lambda s: s["rounds"] and s["rounds"][0]["phase"] == "done", "round 0 to finish")
    assert status["rounds"][0]["dataset_version"] == "v0001"
    assert status["images"]["human_labeled"] == 2 and status["images"]["queued"] == 0

    out = tmp_path / "coco.json"
    assert main(["local", "export", "--project-dir", str(project), "--format", "coco", "--out", str(out)]) == 0
    from pycocotools.coco import COCO

    coco = COCO(str(out))
    names = coco.loadCats(coco.getCatIds(catNms=["person"]))[0]["keypoints"]
    image = next(im for im in coco.dataset["images"]
                 if im["file_name"] == str(moved_task.data["alp_item"]).split("#")[0].rsplit("/", 1)[-1])
    w, h = image["width"], image["height"]
    k = names.index(moved_name)
    want = (moved_at["x"] * w / 100.0, moved_at["y"] * h / 100.0)
    found = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]], catIds=coco.getCatIds(catNms=["person"])))
             if abs(a["keypoints"][3 * k] - want[0]) < 0.5 and abs(a["keypoints"][3 * k + 1] - want[1]) < 0.5]
    assert len(found) == 1, "the moved point is not in the export where the person put it"
    assert found[0]["keypoints"][3 * k + 2] == 1  # occluded, as the person said
    assert len(coco.getAnnIds(catIds=coco.getCatIds(catNms=["head"]))) >= 5

    yolo = tmp_path / "yolo"
    assert main(["local", "export", "--project-dir", str(project), "--format", "yolo", "--out", str(yolo)]) == 0
    assert list(yolo.rglob("*.yaml"))


def test_down_and_up_again_loses_nothing_and_labels_nothing_twice(project: Path) -> None:
    before = _status(project)
    client, connection = _client(project)
    tasks_before = sum(1 for key in connection.projects for _ in client.tasks(connection.projects[key]))
    assert main(["local", "down", "--project-dir", str(project)]) == 0
    assert not _status(project)["runner"]["running"]
    assert main(["local", "up", "--project-dir", str(project)]) == 0
    after = _wait(project, lambda s: s["runner"]["activity"].startswith("idle"), "the runner to resume", 300)
    assert after["rounds"] == before["rounds"]
    client, _ = _client(project)
    assert sum(1 for key in connection.projects for _ in client.tasks(connection.projects[key])) == tasks_before
