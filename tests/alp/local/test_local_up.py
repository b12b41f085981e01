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
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ultralytics
from PIL import Image
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


def _first_point(result: list[dict[str, Any]]) -> tuple[str, dict[str, float]]:
    point = next(r for r in result if r["type"] == "keypointlabels")
    return point["value"]["keypointlabels"][0], {"x": point["value"]["x"], "y": point["value"]["y"]}


def _exported(coco: Any, task: Any, name: str, at: dict[str, float]) -> int:
    """The visibility the export gives the point ``name`` that a person placed at ``at`` (percent) in the task's
    image; fails unless exactly one person of that image has the point there (within half a pixel)."""
    file_name = str(task.data["alp_item"]).split("#")[0].rsplit("/", 1)[-1]
    image = next(im for im in coco.dataset["images"] if im["file_name"] == file_name)
    names = coco.loadCats(coco.getCatIds(catNms=["person"]))[0]["keypoints"]
    k = names.index(name)
    want = (at["x"] * image["width"] / 100.0, at["y"] * image["height"] / 100.0)
    found = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]], catIds=coco.getCatIds(catNms=["person"])))
             if abs(a["keypoints"][3 * k] - want[0]) < 0.5 and abs(a["keypoints"][3 * k + 1] - want[1]) < 0.5]
    assert len(found) == 1, f"{name} of {file_name} is not in the export where the person put it"
    return int(found[0]["keypoints"][3 * k + 2])


def _tasks_and_annotations(client: StudioClient, connection: StudioConnection) -> tuple[int, list[int]]:
    tasks = [t for key in ("heads", "keypoints") for t in client.tasks(connection.projects[key])]
    return len(tasks), sorted(len(t.annotations) for t in tasks)


def _versions(project: Path) -> list[str]:
    index = next((project / "aws" / "s3").glob("*-data")) / "index.json"
    keys = json.loads(index.read_text())
    return sorted({k.split("/")[1] for k in keys if k.startswith("datasets/v") and k.endswith("/dataset.json")})


def test_a_project_from_two_photos_through_a_stop_and_a_kill(project: Path, tmp_path: Path) -> None:
    client, connection = _client(project)
    heads_project, keypoints_project = connection.projects["heads"], connection.projects["keypoints"]
    # round 0: both photos for people, the head boxes proposed by the zero-shot model
    heads = job_tasks(client, heads_project, _job(client, heads_project))
    assert len(heads) == 2
    proposed = {str(t.data["alp_item"]).rsplit("/", 1)[-1]: prediction_of(client, t) for t in heads}
    assert len(proposed["bus.jpg"]) >= 3 and len(proposed["zidane.jpg"]) >= 2, proposed
    submit(client, heads[0], prediction_of(client, heads[0]))

    # `down` in the middle of the round, `up` again: the same round, the same tasks, the answer kept
    before = _tasks_and_annotations(client, connection)
    assert main(["local", "down", "--project-dir", str(project)]) == 0
    assert not _status(project)["runner"]["running"]
    assert main(["local", "up", "--project-dir", str(project)]) == 0
    client, _ = _client(project)
    assert _tasks_and_annotations(client, connection) == before
    assert [r["phase"] for r in _status(project)["rounds"]] == ["labeling"]
    submit(client, heads[1], prediction_of(client, heads[1]))

    # the completion pipeline makes the person tasks, each prefilled with the zero-shot keypoints
    deadline = time.monotonic() + 300
    while not list(client.tasks(keypoints_project)) and time.monotonic() < deadline:
        time.sleep(1.0)
    persons = job_tasks(client, keypoints_project, _job(client, keypoints_project))
    assert len(persons) >= 5
    for task in persons:
        assert any(r["type"] == "keypointlabels" for r in prediction_of(client, task)), "a task without proposals"
    as_proposed = prediction_of(client, persons[0])
    kept_name, kept_at = _first_point(as_proposed)
    moved, moved_name, moved_at = _moved(prediction_of(client, persons[1]))
    submit(client, persons[0], as_proposed)
    submit(client, persons[1], moved)
    for task in persons[2:]:
        submit(client, task, prediction_of(client, task))

    # kill -9 while the round trains, `up` again: one dataset version, one candidate, nothing labeled twice
    _wait(project, lambda s: "training" in s["runner"]["activity"], "the training run to start", 300)
    pid = _status(project)["runner"]["pid"]
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    killed = _status(project)["runner"]
    assert not killed["running"] and "last: round 0: training" in killed["activity"]
    assert main(["local", "up", "--project-dir", str(project)]) == 0
    status = _wait(project, lambda s: s["rounds"][0]["phase"] == "done", "round 0 to finish")
    assert status["rounds"][0]["dataset_version"] == "v0001" and _versions(project) == ["v0001"]
    registry = json.loads((project / "aws" / "registry.json").read_text())
    assert len(registry) == 1 and status["rounds"][0]["candidate"] == registry[0]["bundle_id"]
    assert status["images"]["human_labeled"] == 2 and status["images"]["queued"] == 0
    tasks, annotations = _tasks_and_annotations(client, connection)
    assert annotations == [1] * tasks

    out = tmp_path / "coco.json"
    assert main(["local", "export", "--project-dir", str(project), "--format", "coco", "--out", str(out)]) == 0
    from pycocotools.coco import COCO

    coco = COCO(str(out))
    assert _exported(coco, persons[0], kept_name, kept_at) == 2  # as proposed: visible
    assert _exported(coco, persons[1], moved_name, moved_at) == 1  # moved, and occluded as the person said
    assert len(coco.getAnnIds(catIds=coco.getCatIds(catNms=["head"]))) >= 5

    yolo = tmp_path / "yolo"
    assert main(["local", "export", "--project-dir", str(project), "--format", "yolo", "--out", str(yolo)]) == 0
    assert list(yolo.rglob("*.yaml"))

    # frames added later: the next round takes them, proposed by the champion (or, while the gate approved none,
    # by the zero-shot bundle again)
    more = tmp_path / "more"
    more.mkdir()
    Image.open(ASSETS / "bus.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(more / "bus-mirrored.jpg")
    assert main(["local", "add", "--images", str(more), "--project-dir", str(project)]) == 0
    status = _wait(project, lambda s: len(s["rounds"]) == 2 and s["rounds"][1]["routes"], "round 1's routes", 300)
    champion = status["champion"]
    assert status["rounds"][1]["bundle"] == (champion["bundle_id"] if champion else status["rounds"][0]["bundle"])
    assert status["rounds"][1]["frames"] == 1
