"""The demo's building blocks: embedded AWS, run folder/state, report. Fast; no training."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from alp import aws, storage
from alp.bundle import DESCRIPTOR_NAME, BundleDescriptor, ModelFile, sha256_bytes
from alp.demo.report import Overlay, format_table, markdown_table, write_report
from alp.demo.state import DemoConfig, RoundRecord, RunFolder, RunFolderError
from alp.machine import embedded
from alp.manifest import BoundingBoxLabel, BoxAnnotation, BoxMetadata, ImageSize, ManifestLine
from alp.resources import ResourceNames
from alp.schema import INCABIN17
from alp.settings import Settings


@pytest.fixture
def stack():
    """Given a fresh embedded AWS with the stack's resources."""
    settings = Settings()
    server = embedded.EmbeddedAws.start()
    try:
        with embedded.aws_environment(server.endpoint, settings.region):
            names = ResourceNames.from_settings(settings, embedded.account_id())
            queue_url = embedded.create_stack_resources(settings, names)
            yield settings, names, queue_url, server
    finally:
        server.stop()


def _fake_bundle(bundle_uri: str, bundle_id: str) -> None:
    """Only ``bundle.json``: registering a bundle reads nothing else of it."""
    models = {role: ModelFile(file=f"{role}.onnx", sha256=sha256_bytes(role.encode()), task=task, input_size=(96, 96))
              for role, task in (("head", "detect"), ("pose_main", "pose"), ("pose_visible", "pose"))}
    desc = BundleDescriptor(bundle_id=bundle_id, created_at="2026-01-01T00:00:00Z", imgsz=96,
                            keypoint_schema="incabin17", keypoint_names=INCABIN17.names, models=models)
    storage.write_text(storage.join(bundle_uri, DESCRIPTOR_NAME), desc.to_json())


def test_given_stack_when_an_image_is_uploaded_then_one_lambda_shaped_record_arrives(stack):
    settings, names, queue_url, _ = stack
    s3 = aws.client("s3")
    s3.put_object(Bucket=names.unlabeled_bucket, Key=f"{settings.storage.unlabeled_prefix}cab-1.jpg", Body=b"x")
    s3.put_object(Bucket=names.unlabeled_bucket, Key="elsewhere/cab-2.jpg", Body=b"x")  # outside the prefix
    records = embedded.receive_upload_records(queue_url)
    assert len(records) == 1
    rec = records[0]
    assert {"messageId", "receiptHandle", "body", "eventSourceARN"} <= set(rec)
    body = json.loads(rec["body"])
    assert body["detail-type"] == "Object Created"
    assert body["detail"]["object"]["key"] == "incoming/cab-1.jpg"
    embedded.delete_records(queue_url, records, failed_ids=set())
    assert embedded.receive_upload_records(queue_url) == []
    pipelines = {p["name"] for p in aws.client("codepipeline").list_pipelines()["pipelines"]}
    assert pipelines == {names.labeling_pipeline, names.labeling_completion_pipeline, names.training_pipeline}


def test_given_a_mirror_when_restored_in_a_new_server_then_objects_and_registry_return_without_events(
        stack, tmp_path):
    from alp.registry import list_bundles, register_bundle

    settings, names, queue_url, server = stack
    s3 = aws.client("s3")
    s3.put_object(Bucket=names.unlabeled_bucket, Key="incoming/cab-1.jpg", Body=b"img")
    embedded.delete_records(queue_url, embedded.receive_upload_records(queue_url), set())
    storage.write_text(f"s3://{names.data_bucket}/datasets/v0001/manifest.jsonl", "{}\n")
    for i, approved in ((1, True), (2, False)):
        uri = f"s3://{names.data_bucket}/models/b-{i}/"
        _fake_bundle(uri, f"b-{i}")
        register_bundle(settings, uri, approved=approved, metrics={"box_map50": 0.1 * i})
    mirror = tmp_path / "mirror"
    assert embedded.snapshot_state(settings, names, mirror) >= 8
    assert embedded.snapshot_state(settings, names, mirror) == 0  # unchanged objects are not copied again

    server.reset()  # moto forgets everything, as a new process would
    aws.reset_clients()
    queue_url = embedded.create_stack_resources(settings, names, mirror=mirror)
    assert storage.read_text(f"s3://{names.data_bucket}/datasets/v0001/manifest.jsonl") == "{}\n"
    assert storage.read_bytes(f"s3://{names.unlabeled_bucket}/incoming/cab-1.jpg") == b"img"
    assert embedded.receive_upload_records(queue_url) == []  # restoring did not re-announce uploads
    restored = sorted(list_bundles(settings), key=lambda b: b.version)
    assert [(b.bundle_id, b.status) for b in restored] == [("b-1", "Approved"), ("b-2", "Rejected")]


def test_aws_environment_restores_the_previous_environment(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    with embedded.aws_environment("http://127.0.0.1:2", "eu-west-1"):
        import os

        assert os.environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:2"
        assert os.environ["AWS_REGION"] == "eu-west-1"
    import os

    assert os.environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1"


def test_state_round_trips_and_other_flags_are_refused(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.prepare(fresh=False)
    config = DemoConfig(rounds=2, pool=40)
    state = folder.load_state(config)
    state.rounds.append(RoundRecord(round=0, images_seen=10, human=10, human_labels_total=10))
    folder.save_state(state)
    again = folder.load_state(config)
    assert again.completed_rounds == 1 and again.rounds[0].human == 10
    with pytest.raises(RunFolderError, match="--fresh"):
        folder.load_state(DemoConfig(rounds=3, pool=40))
    # the bench has no --fresh: its runs name its own way to start over
    with pytest.raises(RunFolderError, match="run the bench without --resume to start over"):
        RunFolder(folder.root, start_over="run the bench without --resume").load_state(DemoConfig(rounds=3, pool=40))
    folder.prepare(fresh=True)
    assert not folder.state_path.exists()


def test_ctrl_c_while_the_state_is_saved_acts_after_the_save():
    """The copy of the embedded AWS and state.json are written under signals_held: a Ctrl-C in between waits."""
    import os
    import signal

    from alp.machine.signals import signals_held

    done = []
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever an earlier test installed
    try:
        with pytest.raises(KeyboardInterrupt), signals_held():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("copy")
            done.append("state.json")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert done == ["copy", "state.json"]
    assert signal.getsignal(signal.SIGINT) is previous


def test_fresh_refuses_to_wipe_a_folder_the_demo_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(RunFolderError, match="not deleting"):
        RunFolder(tmp_path).prepare(fresh=True)
    assert (tmp_path / "precious.txt").exists()


def _rows() -> list[RoundRecord]:
    return [
        RoundRecord(round=0, images_seen=12, human=12, human_labels_total=12, box_map50=0.1, kpt_oks_map50=0.05,
                    visibility_accuracy=0.4, seconds=30.5),
        RoundRecord(round=1, images_seen=22, auto=12, human=5, audit=2, quarantine=1, deferred=2, human_labels_total=19,
                    audit_agreement=1.0, box_map50=0.5, kpt_oks_map50=0.3, visibility_accuracy=0.6, seconds=41.0),
    ]


def test_table_lists_every_round_and_column():
    text = format_table(_rows())
    lines = text.splitlines()
    assert len(lines) == 4 and "kpt_oks_map50" in lines[0]
    assert lines[3].split()[:8] == ["1", "22", "12", "5", "2", "1", "2", "19"]
    assert markdown_table(_rows()).count("\n") == 3


def test_report_writes_markdown_and_real_pngs(tmp_path):
    img = tmp_path / "cab.jpg"
    Image.new("RGB", (64, 48), (90, 90, 90)).save(img)
    line = ManifestLine.for_image(str(img)).with_boxes(
        "head-boxes",
        BoundingBoxLabel(image_size=[ImageSize(width=64, height=48)],
                         annotations=[BoxAnnotation(left=10, top=8, width=12, height=14)]),
        BoxMetadata(human_annotated="no"),
    )
    overlay = Overlay(image_path=img, line=line, caption="auto: score 0.91")
    path = write_report(_rows(), tmp_path / "report", title="demo", notes=["note"], auto_overlays=[overlay],
                        human_overlays=[], schema=INCABIN17, head_attr="head-boxes", kp_attr="keypoints")
    text = path.read_text()
    assert "learning_curves.png" in text and "overlays_auto.png" in text and "overlays_human.png" not in text
    for name in ("learning_curves.png", "labels_per_round.png", "overlays_auto.png"):
        with Image.open(tmp_path / "report" / name) as png:
            assert png.format == "PNG" and png.width > 100
    with Image.open(tmp_path / "report" / "overlays_auto.png") as png:
        # the red head box was drawn (scaled x2) onto the grey image
        assert png.convert("RGB").getpixel((20, 16 + 10))[0] > 200


def test_given_no_auto_labeled_image_the_report_says_why_instead_of_dropping_the_section(tmp_path):
    path = write_report(_rows(), tmp_path / "report", title="demo", notes=["note"], auto_overlays=[],
                        human_overlays=[], schema=INCABIN17, head_attr="head-boxes", kp_attr="keypoints")
    text = path.read_text()
    assert "## Auto-labeled images" in text and "judgement.box_threshold" in text
    assert "overlays_auto.png" not in text and not (tmp_path / "report" / "overlays_auto.png").exists()


def test_given_ctrl_c_during_a_round_then_moto_stops_state_is_kept_and_exit_code_is_130(tmp_path, monkeypatch,
                                                                                       capsys):
    from alp.cli import main
    from alp.demo.rounds import DemoRun

    started: list[embedded.EmbeddedAws] = []
    real_start = embedded.EmbeddedAws.start

    def recording_start(host: str = "127.0.0.1") -> embedded.EmbeddedAws:
        server = real_start(host)
        started.append(server)
        return server

    def interrupted(self, rnd):
        raise KeyboardInterrupt

    monkeypatch.setattr(embedded.EmbeddedAws, "start", staticmethod(recording_start))
    monkeypatch.setattr(DemoRun, "run_round", interrupted)
    run_dir = tmp_path / "run"
    rc = main(["demo", "--run-dir", str(run_dir), "--rounds", "1", "--pool", "16", "--seed-images", "10",
               "--test-images", "4", "--width", "64", "--height", "48", "--imgsz", "64", "--no-progress"])
    assert rc == 130
    assert "resume" in capsys.readouterr().err
    state = json.loads((run_dir / "state.json").read_text())
    assert state["rounds"] == [] and state["pool_manifest"]
    import socket

    port = int(started[0].endpoint.rsplit(":", 1)[1])
    with socket.socket() as sock:  # the server is down: its port refuses connections
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_improvement_note_states_the_change_from_first_to_last_round():
    from alp.demo.report import improvement_note

    note = improvement_note(_rows())
    assert "kpt_oks_map50 0.050 -> 0.300 (+0.250)" in note and "12 -> 19 human labels" in note
    assert "no trend" in improvement_note(_rows()[:1])


def test_the_human_budget_is_a_share_of_each_rounds_batch_and_off_by_default():
    assert DemoConfig().human_budget() is None  # by default the judgement thresholds alone decide
    assert DemoConfig(human_share=0.5).round_batch_size() == 86 and DemoConfig(human_share=0.5).human_budget() == 43
    assert DemoConfig(human_share=0.1, pool=50, seed_images=10, rounds=4).human_budget() == 1
    with pytest.raises(ValueError):
        DemoConfig(human_share=1.5)


def test_a_run_folder_of_an_earlier_state_version_is_refused_not_resumed(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.prepare(fresh=False)
    state = folder.load_state(DemoConfig())
    folder.save_state(state)
    data = json.loads(folder.state_path.read_text())
    data["state_version"] = 1
    data["config"].pop("human_share")
    folder.state_path.write_text(json.dumps(data))
    with pytest.raises(RunFolderError, match="--fresh"):
        folder.load_state(DemoConfig())


def test_a_steps_progress_reports_become_one_console_bar_at_a_time_and_none_without_progress():
    import io

    from alp import progress
    from alp.machine.console import StepBars

    console = io.StringIO()
    bars = StepBars(console, enabled=True)
    with progress.listening(bars):
        for model in ("head", "pose_main"):
            for epoch in (1, 2, 3):
                progress.report(f"train {model}", epoch, 3, "epoch")
                assert list(bars.bars) == [f"train {model}"] and bars.bars[f"train {model}"].n == epoch
    bars.close()
    assert "train head" in console.getvalue() and "train pose_main" in console.getvalue()
    progress.report("train head", 1, 3, "epoch")  # outside the block: nobody listens, nothing breaks

    quiet = io.StringIO()
    with progress.listening(StepBars(quiet, enabled=False)):
        progress.report("train head", 1, 3, "epoch")
    assert quiet.getvalue() == ""
