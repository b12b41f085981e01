"""The label-studio backend against a real Label Studio server: tasks imported with the model's proposals,
annotations submitted through Label Studio's API as an annotator's browser would, the Merge holding exactly
those labels. Images and batch files live in a moto server on 127.0.0.1 (Label Studio presigns from it)."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from studio_builders import (
    DATA,
    FALSE_BOX,
    UNLABELED,
    job_tasks,
    prediction_of,
    studio_batch,
    studio_settings,
    submit,
)
from studio_fixtures import StudioServer

from alp import storage
from alp.cli import main
from alp.datasets import image_key, merge_batch_result, read_version
from alp.labeling.label_studio import LabelStudioBackend, head_answer, keypoint_answer
from alp.labeling.workflow import UNLABELED_KEY, labeling_complete, read_summary, run_label_step
from alp.manifest import read_manifest
from alp.studio.client import StudioClient, StudioUnavailable
from alp.studio.server import StudioConnection


def _job(summary_dir: str, kind: str) -> str:
    summary = read_summary(summary_dir)
    assert summary is not None
    jobs = [j for j in summary.waiting_on + summary.jobs if j.kind == kind]
    return jobs[-1].name


def test_people_label_a_batch_in_label_studio_and_the_merge_holds_exactly_their_labels(
        studio_server: StudioServer, studio_aws: str) -> None:
    """Given a batch of 2 images with the model's proposals (it missed one person on each image and proposed a
    false head box on the second), when the label step imports them and an annotator, through Label Studio's
    API as the editor submits, accepts the first image's box and adds the missed head, deletes the false box
    on the second (leaving the missed person unboxed), then accepts one person's points, places the points of
    the person the model missed, and on a third drags one point and marks another occluded, then the dataset
    version holds exactly those labels, and the step never waited for people."""
    settings = studio_settings("lsapi")
    batch_dir, truths = studio_batch("ls-api", settings, images=2, false_box_on=1)
    backend = LabelStudioBackend(settings, connection=studio_server.connection)
    client = backend.client

    first = run_label_step(batch_dir, settings, backend)
    assert first.state == "waiting" and first.waiting_on[0].kind == "head-boxes"
    head_tasks = job_tasks(client, backend.project_id("head-boxes"), first.waiting_on[0].name)
    assert len(head_tasks) == 2
    # the proposal is prefilled: a prediction with the model's boxes, and the judgement's reason as text
    proposal_0, proposal_1 = prediction_of(client, head_tasks[0]), prediction_of(client, head_tasks[1])
    assert len(proposal_0) == 1 and len(proposal_1) == 2
    assert all(r["type"] == "rectanglelabels" and r["from_name"] == "heads" for r in proposal_0 + proposal_1)
    assert "unsure" in head_tasks[0].data["reason_text"]
    truth_boxes = truths[0].boxes(settings.labeling.head_label_attribute)
    assert truth_boxes is not None
    missed = truth_boxes[0].annotations[1]
    added = {"id": "added", "from_name": "heads", "to_name": "image", "type": "rectanglelabels",
             "original_width": 640, "original_height": 480,
             "value": {"x": missed.left / 6.4, "y": missed.top / 4.8, "width": missed.width / 6.4,
                       "height": missed.height / 4.8, "rotation": 0, "rectanglelabels": ["head"]}}
    submit(client, head_tasks[0], [*proposal_0, added])
    submit(client, head_tasks[1], proposal_1[:1])  # the false box deleted

    second = run_label_step(batch_dir, settings, backend)
    assert second.state == "waiting" and second.waiting_on[0].kind == "keypoints"
    kp_tasks = job_tasks(client, backend.project_id("keypoints"), second.waiting_on[0].name)
    assert [t.data["alp_item"].rsplit("-", 1)[-1] for t in kp_tasks] == ["0.jpg#0", "0.jpg#1", "1.jpg#0"]
    accepted = prediction_of(client, kp_tasks[0])
    assert sum(r["from_name"] == "keypoints" for r in accepted) >= 10, "the model's points are prefilled"
    assert any(r["from_name"] == "person" for r in accepted), "the person's head box is outlined"
    submit(client, kp_tasks[0], accepted)
    assert not [r for r in prediction_of(client, kp_tasks[1]) if r["from_name"] == "keypoints"], \
        "the model had no points for the person it missed"
    placed = [{"id": f"p{n}", "from_name": "keypoints", "to_name": "image", "type": "keypointlabels",
               "original_width": 640, "original_height": 480,
               "value": {"x": x, "y": 30.0, "width": 0.6, "keypointlabels": [name]}}
              for n, (name, x) in enumerate((("nose", 70.0), ("left_eye", 72.0), ("right_eye", 68.0)))]
    submit(client, kp_tasks[1], placed)
    edited = prediction_of(client, kp_tasks[2])
    marked = {r["id"] for r in edited if r["from_name"] == "visibility"}
    visible = [r for r in edited if r["from_name"] == "keypoints" and r["id"] not in marked]
    drag, hide = visible[0], visible[1]  # two points the model calls visible
    drag["value"] = {**drag["value"], "x": 50.0, "y": 25.0}  # dragged
    edited.append({"id": hide["id"], "from_name": "visibility", "to_name": "image", "type": "choices",
                   "original_width": 640, "original_height": 480,
                   "value": {"x": hide["value"]["x"], "y": hide["value"]["y"], "choices": ["occluded"]}})
    submit(client, kp_tasks[2], edited)

    final = run_label_step(batch_dir, settings, backend)
    assert final.state == "complete" and final.labeled == 2 and final.unlabeled == 0
    version = merge_batch_result(batch_dir, settings, f"s3://{DATA}/")
    assert version.created
    lines = {image_key(line): line for line in read_version(version.uri)}  # source-ref: the pinned copy
    head_attr, kp_attr = settings.labeling.head_label_attribute, settings.labeling.keypoint_label_attribute
    image_0, image_1 = (lines[f"ls-api-{i}.jpg"] for i in (0, 1))
    assert storage.read_bytes(image_0.source_ref) == storage.read_bytes(f"s3://{UNLABELED}/incoming/ls-api-0.jpg")
    boxes_0, boxes_1 = image_0.boxes(head_attr), image_1.boxes(head_attr)
    assert boxes_0 is not None and boxes_1 is not None
    assert len(boxes_0[0].annotations) == 2 and len(boxes_1[0].annotations) == 1
    assert boxes_0[0].annotations[1].left == pytest.approx(missed.left, abs=0.5), "the added head"
    assert all(abs(a.left - FALSE_BOX.left) > 5 for a in boxes_1[0].annotations), "the false box is gone"
    kps_0, kps_1 = image_0.keypoints(kp_attr), image_1.keypoints(kp_attr)
    assert kps_0 is not None and kps_1 is not None
    new_person = {k.name: k for k in kps_0[0].persons[1].keypoints}
    assert (new_person["nose"].x, new_person["nose"].y, new_person["nose"].v) == pytest.approx((448.0, 144.0, 2))
    assert sum(k.v > 0 for k in new_person.values()) == 3, "points not placed are outside"
    person = {k.name: k for k in kps_1[0].persons[0].keypoints}
    dragged, hidden = person[drag["value"]["keypointlabels"][0]], person[hide["value"]["keypointlabels"][0]]
    assert (dragged.x, dragged.y, dragged.v) == pytest.approx((320.0, 120.0, 2), abs=0.5)
    assert hidden.v == 1, "marked occluded in Label Studio"
    model_points = {r["value"]["keypointlabels"][0]: r["value"] for r in accepted if r["from_name"] == "keypoints"}
    kept = {k.name: k for k in kps_0[0].persons[0].keypoints}
    assert all(kept[name].x == pytest.approx(v["x"] * 6.4, abs=0.5) for name, v in model_points.items()), \
        "the accepted proposal is what the dataset holds"


def test_completion_events_twice_or_early_make_one_dataset_version(
        studio_server: StudioServer, studio_aws: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Given a batch waiting for people, when Merge runs early, then the batch is finished and the completion
    steps run twice, then exactly one dataset version exists."""
    settings = studio_settings("lsonce")
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(settings.to_json())
    monkeypatch.setenv("ALP_SETTINGS_URI", str(settings_file))
    monkeypatch.setenv("ALP_STUDIO_FILE", str(studio_server.run_dir / "studio.json"))
    batch_dir, _ = studio_batch("ls-once", settings, images=1, persons=2)
    steps = (["label", "--batch", batch_dir], ["merge", "--batch", batch_dir, "--no-training"],
             ["requeue", "--batch", batch_dir, "--json", "--unlabeled-bucket", UNLABELED])
    datasets = f"s3://{DATA}/datasets/"

    def versions() -> set[str]:
        return {storage.parent(uri) for uri in storage.list_uris(datasets)}

    before = versions()
    for argv in steps:  # the labeling pipeline: jobs created, nothing merged
        assert main(argv) == 0
    assert versions() == before, "nothing is merged while people work"
    backend = LabelStudioBackend(settings, connection=studio_server.connection)
    client = backend.client
    for kind in ("head-boxes", "keypoints"):
        job = _job(batch_dir, kind)
        for task in job_tasks(client, backend.project_id(kind), job):
            submit(client, task, prediction_of(client, task))
        for _ in range(2):  # the completion event, delivered twice
            for argv in steps:
                assert main(argv) == 0
    assert labeling_complete(batch_dir) is not None
    assert len(versions() - before) == 1


def test_bad_annotations_deleted_and_expired_tasks_go_back_with_their_reason(
        studio_server: StudioServer, studio_aws: str) -> None:
    """Given 4 images, when one annotation has a box outside the image, one has a box without coordinates
    coordinates, one task is deleted in the UI and one is never done before the availability ends, then no
    image is labeled and each is unlabeled with its own reason (the Requeue step sends them back)."""
    settings = studio_settings("lsbad", **{"labeling.task_availability_seconds": 3600})
    batch_dir, _ = studio_batch("ls-bad", settings, images=4, persons=2)
    now = [1_000_000.0]
    backend = LabelStudioBackend(settings, connection=studio_server.connection, clock=lambda: now[0])
    client = backend.client
    first = run_label_step(batch_dir, settings, backend)
    tasks = job_tasks(client, backend.project_id("head-boxes"), first.waiting_on[0].name)
    outside = prediction_of(client, tasks[0])
    outside[0]["value"] = {**outside[0]["value"], "x": 180.0}
    submit(client, tasks[0], outside)
    submit(client, tasks[1], [{"id": "x", "from_name": "heads", "to_name": "image", "type": "rectanglelabels",
                                "value": {"rectanglelabels": ["head"]}}])
    client.delete_task(tasks[2].id)
    assert run_label_step(batch_dir, settings, backend).state == "waiting", "one task is still open"
    now[0] += 3600
    final = run_label_step(batch_dir, settings, backend)
    assert final.state == "complete" and final.labeled == 0 and final.unlabeled == 4
    reasons = {line.source_ref.rsplit("-", 1)[1]: line.data[UNLABELED_KEY]["reason"]
               for line in read_manifest(batch_dir + "labeling/unlabeled.jsonl")}
    assert "outside" in reasons["0.jpg"]
    assert "box 0 left is NoneType, not a number" in reasons["1.jpg"]
    assert "deleted in Label Studio" in reasons["2.jpg"]
    assert "task_availability_seconds" in reasons["3.jpg"]


def test_answers_translate_label_studio_regions_into_the_form_the_consolidation_reads() -> None:
    """A keypoint placed and left unset is visible, one set to occluded is occluded, one set to outside and one
    never placed are outside; percentages become pixels of the original image."""
    names = ["nose", "neck", "mouth", "left_eye"]
    result = [
        {"id": "a", "from_name": "keypoints", "type": "keypointlabels", "original_width": 200, "original_height": 100,
         "value": {"x": 50.0, "y": 50.0, "keypointlabels": ["nose"]}},
        {"id": "b", "from_name": "keypoints", "type": "keypointlabels",
         "value": {"x": 10.0, "y": 20.0, "keypointlabels": ["neck"]}},
        {"id": "b", "from_name": "visibility", "type": "choices", "value": {"choices": ["occluded"]}},
        {"id": "c", "from_name": "keypoints", "type": "keypointlabels",
         "value": {"x": 1.0, "y": 1.0, "keypointlabels": ["mouth"]}},
        {"id": "c", "from_name": "visibility", "type": "choices", "value": {"choices": ["outside"]}},
    ]
    answer = keypoint_answer(result, {}, names)
    assert answer["keypoints"]["inputImageProperties"] == {"width": 200, "height": 100}
    assert answer["keypoints"]["keypoints"] == [{"label": "nose", "x": 100.0, "y": 50.0},
                                                {"label": "neck", "x": 20.0, "y": 20.0}]
    assert [answer[f"visibility-{n}"] for n in names] == ["visible", "occluded", "outside", "outside"]
    heads = head_answer([{"from_name": "heads", "original_width": 200, "original_height": 100,
                          "value": {"x": 10.0, "y": 10.0, "width": 5.0, "height": 20.0, "rectanglelabels": ["head"]}}],
                        {})
    assert heads["heads"]["boundingBoxes"] == [{"label": "head", "left": 20.0, "top": 10.0, "width": 10.0,
                                                "height": 20.0}]


def test_label_studio_down_or_slow_fails_the_step_naming_the_url_and_loses_nothing(studio_aws: str) -> None:
    """Given Label Studio unreachable (nothing listens) or hanging (accepts, never answers), when the label step
    runs, then it fails after its retries with the URL named, and the batch has no labeling outcome yet (a
    re-run goes on)."""
    settings = studio_settings("lsdown")
    batch_dir, _ = studio_batch("ls-down", settings, images=1, persons=1)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(8)
    stop = threading.Event()
    try:
        for port, what in ((closed_port, "unreachable"), (hanging.getsockname()[1], "unreachable")):
            connection = StudioConnection(url=f"http://127.0.0.1:{port}", token="t" * 40)
            backend = LabelStudioBackend(settings, connection=connection,
                                         client_options={"retries": 2, "backoff_seconds": 0.01, "timeout": 0.5})
            with pytest.raises(StudioUnavailable, match=f"127.0.0.1:{port}.*{what}"):
                run_label_step(batch_dir, settings, backend)
            assert read_summary(batch_dir) is None
            assert not storage.exists(batch_dir + "labeling/labeled.jsonl")
    finally:
        stop.set()
        hanging.close()


def test_a_slow_answer_is_retried_then_named_with_its_status(tmp_path: Any) -> None:
    """A server answering 503 is retried, then the error names the URL and the status (never the token)."""
    import http.server

    class Busy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's handler name)
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        token = "s" * 40
        client = StudioClient(f"http://127.0.0.1:{server.server_address[1]}", token, retries=2, backoff_seconds=0.01)
        with pytest.raises(StudioUnavailable) as err:
            client.projects()
        assert "503" in str(err.value) and str(server.server_address[1]) in str(err.value)
        assert token not in str(err.value)
    finally:
        server.shutdown()


def test_the_token_in_studio_json_works_with_label_studios_own_sdk_and_is_never_logged(
        studio_server: StudioServer) -> None:
    """``LabelStudio(base_url=url, api_key=token)`` from Label Studio's SDK (installed beside the server) lists the
    projects; the server log never holds the token; studio.json is readable by its owner only; the server
    listens on 127.0.0.1 only."""
    import subprocess

    from alp.studio.server import read_record, studio_home

    connection = studio_server.connection
    record = read_record(studio_server.run_dir)
    assert record is not None
    python = studio_home(record.version) / "venv" / "bin" / "python"
    script = ("import json, sys\nfrom label_studio_sdk import LabelStudio\nc = json.load(open(sys.argv[1]))\n"
              "ls = LabelStudio(base_url=c['url'], api_key=c['token'])\n"
              "print(json.dumps(sorted(p.title for p in ls.projects.list())))\n")
    out = subprocess.run([str(python), "-c", script, str(studio_server.run_dir / "studio.json")],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-500:]
    assert isinstance(json.loads(out.stdout.strip().splitlines()[-1]), list)
    assert connection.token not in (studio_server.run_dir / "studio" / "server.log").read_text()
    assert (studio_server.run_dir / "studio.json").stat().st_mode & 0o077 == 0
    port = int(connection.url.rsplit(":", 1)[1])
    listening = [line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                 if line.split()[3] == "0A" and int(line.split()[1].split(":")[1], 16) == port]
    assert listening == [f"0100007F:{port:04X}"], "Label Studio listens on 127.0.0.1 only"


def test_alp_studio_status_reports_tasks_as_label_studio_counts_them(
        studio_server: StudioServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["studio", "status", "--run-dir", str(studio_server.run_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["running"] is True and set(out["projects"]) == {"heads", "keypoints"}
    assert all({"tasks", "finished"} <= set(p) for p in out["projects"].values())
