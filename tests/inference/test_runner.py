"""The batch runner: outputs, the invariant, re-run identity, cold start, audit, S3 (moto) and the CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import boto3
import pytest
from bundle_factory import bright_image, scripted_bundle
from PIL import Image

from alp.cli import main as cli_main
from alp.manifest import ManifestLine, read_manifest
from alp.settings import Settings
from inference.engine import InferenceEngine
from inference.runner import predict_manifest, run_batch


def _jpeg(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(bright_image(value)).save(buf, format="PNG")
    return buf.getvalue()


def _batch(root: Path) -> tuple[Path, list[str]]:
    """A batch with two confident frames, one dark frame and every kind of bad input."""
    imgs = root / "images"
    imgs.mkdir(parents=True)
    files = {
        "bright1.png": _jpeg(240), "dark.png": _jpeg(100), "bright2.png": _jpeg(245),
        "empty.jpg": b"", "text.jpg": b"hello, not a picture" * 20,
        "cut.png": _jpeg(240)[:200],
    }
    for name, data in files.items():
        (imgs / name).write_bytes(data)
    refs = [str(imgs / n) for n in files] + [str(imgs / "missing.jpg")]
    lines = [json.dumps({"source-ref": r, "alp-object": {"bucket": "b", "key": Path(r).name,
                                                        "event_time": "2026-03-01T10:00:00Z"}}) for r in refs]
    lines.insert(3, "{not json")
    manifest = root / "batch.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, refs


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return scripted_bundle(tmp_path_factory.mktemp("bundle"))


def _engine(bundle: Path, settings: Settings, tmp_path: Path) -> InferenceEngine:
    return InferenceEngine.from_bundle(str(bundle), settings, tmp_path / "cache")


def _read(out: Path, name: str) -> list[ManifestLine]:
    return read_manifest(str(out / name))


def test_outputs_routes_and_invariant_on_local_paths(bundle, tmp_path):
    manifest, refs = _batch(tmp_path)
    settings = Settings().with_overrides({"judgement.audit_fraction": 0.0, "inference.batch_size": 2})
    out = tmp_path / "out"
    summary = run_batch(str(manifest), str(out), settings, engine=_engine(bundle, settings, tmp_path))
    assert summary.inputs == 8
    assert summary.routes == {"auto": 2, "human": 1, "audit": 0, "quarantine": 5}
    assert summary.quarantine_reasons == {"bad_manifest_line": 1, "empty_file": 1, "missing_object": 1,
                                          "not_an_image": 1, "truncated": 1}
    assert summary.invariant == "inputs 8 = auto 2 + human 1 + audit 0 + quarantine 5"
    assert json.loads((out / "summary.json").read_text())["bundle_id"] == "scripted-v1"

    auto = _read(out, "auto.jsonl")
    assert [line.source_ref for line in auto] == [refs[0], refs[2]]  # input order kept
    boxes, meta = auto[0].boxes("head-boxes")
    assert meta.human_annotated == "no" and meta.job_name == "auto-scripted-v1"
    assert meta.creation_date == "2026-03-01T10:00:00.000000"  # from the event, not the clock
    assert meta.objects[0].confidence > 0.9 and len(boxes.annotations) == 1
    kpts, kmeta = auto[0].keypoints("keypoints")
    assert kmeta.human_annotated == "no" and kpts.persons[0].head_box_index == 0
    assert auto[0].route().route == "auto"

    (human,) = _read(out, "human.jsonl")
    pre = human.preannotation()
    assert human.source_ref == refs[1] and pre.route == "human" and pre.bundle_id == "scripted-v1"
    assert "head box 0 confidence 0.392 < box_threshold 0.5" in pre.reason
    assert pre.boxes[0].score == pytest.approx(0.392, abs=1e-3)
    assert all(k.score is not None and k.score_visible is not None for k in pre.persons[0].keypoints)

    quarantine = _read(out, "quarantine.jsonl")
    assert len(quarantine) == 5
    assert {q.quarantine().reason for q in quarantine} == set(summary.quarantine_reasons)
    assert all(q.quarantine().stage == "infer" for q in quarantine)
    assert _read(out, "audit_model.jsonl") == []


def test_rerun_writes_identical_bytes(bundle, tmp_path):
    manifest, _ = _batch(tmp_path)
    settings = Settings().with_overrides({"judgement.audit_fraction": 0.5})
    a, b = tmp_path / "a", tmp_path / "b"
    sa = run_batch(str(manifest), str(a), settings, engine=_engine(bundle, settings, tmp_path))
    sb = run_batch(str(manifest), str(b), settings, engine=_engine(bundle, settings, tmp_path))
    for name in ("auto.jsonl", "human.jsonl", "audit_model.jsonl", "quarantine.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert sa.model_dump(exclude={"timings"}) == sb.model_dump(exclude={"timings"})


def test_audit_items_go_to_people_and_keep_the_model_labels(bundle, tmp_path):
    manifest, _ = _batch(tmp_path)
    settings = Settings().with_overrides({"judgement.audit_fraction": 1.0})
    out = tmp_path / "out"
    summary = run_batch(str(manifest), str(out), settings, engine=_engine(bundle, settings, tmp_path))
    assert summary.routes["audit"] == 2 and summary.routes["auto"] == 0
    audits = [h for h in _read(out, "human.jsonl") if h.preannotation().route == "audit"]
    model = _read(out, "audit_model.jsonl")
    assert [m.source_ref for m in model] == [a.source_ref for a in audits]
    assert model[0].boxes("head-boxes")[1].human_annotated == "no"
    assert "head-boxes" not in audits[0].data  # the labeling job's attribute stays free


def test_cold_start_sends_readable_images_to_people(tmp_path, monkeypatch):
    manifest, _ = _batch(tmp_path)
    monkeypatch.setattr("alp.registry.latest_approved", lambda settings: None)  # an empty registry
    out = tmp_path / "out"
    assert cli_main(["infer-batch", "--manifest", str(manifest), "--out", str(out), "--executor", "local"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cold_start"] is True and summary["bundle_id"] is None
    assert summary["routes"] == {"auto": 0, "human": 3, "audit": 0, "quarantine": 5}
    assert summary["human_reasons"] == {"no_model": 3}
    human = _read(out, "human.jsonl")
    assert {h.preannotation().reason for h in human} == {"no_model"}
    assert human[0].preannotation().image_size.width == 320


def test_cli_with_explicit_bundle_prints_summary(bundle, tmp_path, capsys):
    manifest, _ = _batch(tmp_path)
    out = tmp_path / "out"
    rc = cli_main(["infer-batch", "--manifest", str(manifest), "--out", str(out), "--bundle", str(bundle),
                   "--executor", "local", "--json", "--cache-dir", str(tmp_path / "c")])
    assert rc == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(last)
    assert summary["inputs"] == 8 and sum(summary["routes"].values()) == 8


def test_runner_on_moto_s3(bundle, tmp_path, aws_mock):
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="alp-test-data")
    s3.put_object(Bucket="alp-test-data", Key="incoming/a.png", Body=_jpeg(240))
    s3.put_object(Bucket="alp-test-data", Key="incoming/b.jpg", Body=b"")
    s3.put_object(Bucket="alp-test-data", Key="incoming/c.png", Body=_jpeg(90))
    lines = [{"source-ref": f"s3://alp-test-data/incoming/{k}"} for k in ("a.png", "b.jpg", "c.png", "gone.png")]
    s3.put_object(Bucket="alp-test-data", Key="batches/b1/manifest.jsonl",
                  Body="\n".join(json.dumps(x) for x in lines).encode())
    settings = Settings().with_overrides({"judgement.audit_fraction": 0.0})
    summary = run_batch("s3://alp-test-data/batches/b1/manifest.jsonl", "s3://alp-test-data/batches/b1/inference/",
                        settings, engine=_engine(bundle, settings, tmp_path))
    assert summary.routes == {"auto": 1, "human": 1, "audit": 0, "quarantine": 2}
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="alp-test-data", Prefix="batches/b1/inference/")["Contents"]}
    assert keys == {f"batches/b1/inference/{n}" for n in
                    ("auto.jsonl", "human.jsonl", "audit_model.jsonl", "quarantine.jsonl", "summary.json")}
    auto = read_manifest("s3://alp-test-data/batches/b1/inference/auto.jsonl")
    assert auto[0].source_ref == "s3://alp-test-data/incoming/a.png"


def test_predict_manifest_labels_every_readable_image(bundle, tmp_path):
    manifest, refs = _batch(tmp_path)
    settings = Settings()
    lines = [ManifestLine.for_image(r) for r in refs]
    out = list(predict_manifest(lines, _engine(bundle, settings, tmp_path), settings))
    assert [o.source_ref for o in out] == refs
    labeled = [o for o in out if "keypoints" in o.data]
    assert len(labeled) == 3  # bright1, dark, bright2: labels whatever the route
    assert sum(1 for o in out if o.quarantine() is not None) == 4


def test_a_human_budget_sends_the_least_sure_images_to_people_and_defers_the_rest(bundle, tmp_path, capsys,
                                                                                  monkeypatch):
    """Given labeling.human_budget_share 0.34 and thresholds that doubt every readable image (3 of 8), when the
    Infer step runs, then 1 image goes to people, 2 are deferred (back in the queue), none is auto-labeled, and
    the 5 unreadable ones stay quarantined: nothing is lost."""
    manifest, _ = _batch(tmp_path)
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(Settings().with_overrides({
        "labeling.human_budget_share": 0.34, "judgement.box_threshold": 1.0, "judgement.audit_fraction": 0.0,
    }).to_json())
    monkeypatch.setenv("ALP_SETTINGS_URI", str(settings_file))
    out = tmp_path / "out"
    assert cli_main(["infer-batch", "--manifest", str(manifest), "--out", str(out), "--bundle", str(bundle),
                     "--executor", "local", "--json", "--cache-dir", str(tmp_path / "c")]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["routes"] == {"auto": 0, "human": 1, "audit": 0, "quarantine": 5, "deferred": 2}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["routes"] == printed["routes"] and summary["strategy"]["human_budget"] == 1
    assert len(_read(out, "human.jsonl")) == 1 and len(_read(out, "deferred.jsonl")) == 2
    assert not _read(out, "auto.jsonl")


def test_auto_labeling_pauses_while_the_audits_put_the_precision_under_the_target(bundle, tmp_path, capsys,
                                                                                 monkeypatch):
    """Given 40 audits of this bundle of which 30 agreed (lower bound 0.6 < 0.95), when the Infer step runs, then
    the images the judgement would auto-label go to people (prefilled) with the reason, guarantee.json says it,
    and nothing is lost; with too few audits nothing pauses."""
    from alp import storage
    from alp.audits import AuditOutcome, outcomes_dir

    manifest, _ = _batch(tmp_path)
    data_root = str(tmp_path / "data") + "/"
    monkeypatch.setenv("ALP_DATA_ROOT", data_root)
    lines = [AuditOutcome(source_ref=f"s3://u/{i}.jpg", bundle_id="scripted-v1", route="audit", score=0.9,
                          agreed=i < 30).model_dump_json() for i in range(40)]
    settings = Settings().with_overrides({"judgement.audit_fraction": 0.0})
    storage.write_text(outcomes_dir(data_root, settings, "scripted-v1") + "b0.jsonl", "\n".join(lines) + "\n")
    for min_audits, paused in ((50, False), (30, True)):
        settings_file = tmp_path / "settings.json"
        settings_file.write_text(settings.with_overrides({"judgement.min_audits": min_audits}).to_json())
        monkeypatch.setenv("ALP_SETTINGS_URI", str(settings_file))
        out = tmp_path / f"out-{min_audits}"
        assert cli_main(["infer-batch", "--manifest", str(manifest), "--out", str(out), "--bundle", str(bundle),
                         "--executor", "local", "--json", "--cache-dir", str(tmp_path / "c")]) == 0
        routes = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["routes"]
        guarantee = json.loads((out / "guarantee.json").read_text())
        assert guarantee["audits"] == 40 and guarantee["agreed"] == 30 and guarantee["lower_bound_95"] < 0.95
        assert guarantee["holds"] is (None if not paused else False)
        assert sum(routes.values()) == 8
        if paused:
            assert routes["auto"] == 0 and routes["human"] == 3
            reasons = {h.route().reason for h in _read(out, "human.jsonl")}
            assert any(r.startswith("paused: the audited precision") for r in reasons)
            assert json.loads((out / "summary.json").read_text())["paused"].startswith("paused:")
        else:
            assert routes["auto"] >= 1


def test_the_infer_step_learns_part_thresholds_from_the_bundles_audits(bundle, tmp_path, capsys, monkeypatch):
    """Given 100 persons of this bundle that people labeled blind at score 0.05, every proposal right (lower bound
    0.963 >= 0.95), when the Infer step runs, then persons scoring 0.05 or more pass (person_score_threshold 0.05,
    in thresholds.json and summary.json), the audit draw is seeded by the batch, and no part that passed without
    the learned threshold goes to people with it; with judgement.learn_thresholds off the configured checks
    apply."""
    from alp import storage
    from alp.audits import AuditOutcome, outcomes_dir

    manifest, _ = _batch(tmp_path)
    data_root = str(tmp_path / "data") + "/"
    monkeypatch.setenv("ALP_DATA_ROOT", data_root)
    lines = [AuditOutcome(source_ref=f"s3://u/{i}.jpg", bundle_id="scripted-v1", route="human", score=0.05,
                          agreed=True, part="person-0", blind=True).model_dump_json() for i in range(100)]
    settings = Settings().with_overrides({"judgement.audit_fraction": 0.0})
    storage.write_text(outcomes_dir(data_root, settings, "scripted-v1") + "b0.jsonl", "\n".join(lines) + "\n")
    parts = {}
    for learn in (False, True):
        settings_file = tmp_path / "settings.json"
        settings_file.write_text(settings.with_overrides({"judgement.learn_thresholds": learn}).to_json())
        monkeypatch.setenv("ALP_SETTINGS_URI", str(settings_file))
        out = tmp_path / f"out-{learn}"
        assert cli_main(["infer-batch", "--manifest", str(manifest), "--out", str(out), "--bundle", str(bundle),
                         "--executor", "local", "--json", "--cache-dir", str(tmp_path / "c")]) == 0
        capsys.readouterr()
        thresholds = json.loads((out / "thresholds.json").read_text())
        summary = json.loads((out / "summary.json").read_text())
        assert summary["judgement"]["audit_seed"] == f"alp-audit/{manifest.parent.name}"
        expected = 0.05 if learn else None
        assert thresholds["effective"]["person_score_threshold"] == summary["judgement"]["person_score_threshold"] \
            == expected
        if learn:
            assert thresholds["learned"]["persons"]["accepted"] == 100
            assert thresholds["learned"]["persons"]["lower_bound_95"] >= 0.95
            assert thresholds["learned"]["heads"]["threshold"] is None  # no head-box outcomes: configured checks
        parts[learn] = summary["parts"]
    assert parts[True].get("persons.auto", 0) >= parts[False].get("persons.auto", 0)
    assert sum(parts[True].values()) == sum(parts[False].values())


def test_each_batch_audits_at_least_min_audits_parts_and_a_rerun_draws_the_same(bundle, tmp_path, capsys,
                                                                                monkeypatch):
    """Given a draw that samples almost nothing (audit_fraction 0.001) and judgement.min_audits 3, when the Infer
    step runs, then the parts with the lowest draws join the blind sample until 3 are blind (a confident part
    becomes an audit, the rest of its image keeps the model's labels; a doubtful one stays with people without the
    prefill), the model's labels of audited images are in audit_model.jsonl, nothing is lost, and running the same
    batch again draws the same parts."""
    from alp.manifest import read_manifest
    from inference.budget import blind_parts

    manifest, _ = _batch(tmp_path)
    monkeypatch.setenv("ALP_DATA_ROOT", str(tmp_path / "data") + "/")
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(Settings().with_overrides({"judgement.audit_fraction": 0.001,
                                                        "judgement.min_audits": 3}).to_json())
    monkeypatch.setenv("ALP_SETTINGS_URI", str(settings_file))
    outputs = []
    for run in range(2):
        out = tmp_path / f"out-{run}"
        assert cli_main(["infer-batch", "--manifest", str(manifest), "--out", str(out), "--bundle", str(bundle),
                         "--executor", "local", "--json", "--cache-dir", str(tmp_path / "c")]) == 0
        routes = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["routes"]
        assert sum(routes.values()) == 8
        summary = json.loads((out / "summary.json").read_text())
        assert summary["min_audits_drawn"] >= 1
        people = read_manifest(str(out / "human.jsonl"))
        assert sum(blind_parts(line) for line in people) >= 3
        audits = [line for line in people if line.route().route == "audit"]
        assert all(line.route().reason.startswith("audit: drawn to reach judgement.min_audits (3)")
                   for line in audits)
        models = {line.source_ref for line in read_manifest(str(out / "audit_model.jsonl"))}
        assert {line.source_ref for line in audits} <= models
        for line in audits:  # the parts not drawn keep the model's labels
            pre = line.preannotation()
            assert pre is not None and pre.parts is not None and pre.route == "audit"
            assert "human" not in {pre.parts.heads.route, *(p.route for p in pre.parts.persons)}
        outputs.append((out / "human.jsonl").read_bytes())
    assert outputs[0] == outputs[1]


def test_infer_pins_the_bytes_it_read_in_every_output_line(tmp_path, aws_mock):
    """Given a versioned upload bucket and batch lines naming the uploaded versions (one line with no version), when
    the key gets new bytes before Infer runs, then Infer reads the batched version all the same, and every output
    line's alp-object records the sha256 of the bytes read and the version read."""
    import hashlib

    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="alp-test-uploads")
    s3.put_bucket_versioning(Bucket="alp-test-uploads", VersioningConfiguration={"Status": "Enabled"})
    first, other = _jpeg(240), _jpeg(90)
    batched = s3.put_object(Bucket="alp-test-uploads", Key="incoming/a.png", Body=first)["VersionId"]
    s3.put_object(Bucket="alp-test-uploads", Key="incoming/a.png", Body=other)  # replaced after batching
    current = s3.put_object(Bucket="alp-test-uploads", Key="incoming/b.png", Body=other)["VersionId"]
    lines = [{"source-ref": "s3://alp-test-uploads/incoming/a.png",
              "alp-object": {"bucket": "alp-test-uploads", "key": "incoming/a.png", "version_id": batched}},
             {"source-ref": "s3://alp-test-uploads/incoming/b.png",
              "alp-object": {"bucket": "alp-test-uploads", "key": "incoming/b.png"}}]
    (tmp_path / "batch.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    summary = run_batch(str(tmp_path / "batch.jsonl"), str(tmp_path / "out"), Settings(), engine=None)
    assert summary.routes["human"] == 2
    pins = {line.object_identity().key: line.object_identity() for line in _read(tmp_path / "out", "human.jsonl")}
    assert pins["incoming/a.png"].sha256 == hashlib.sha256(first).hexdigest()
    assert pins["incoming/a.png"].version_id == batched
    assert pins["incoming/b.png"].sha256 == hashlib.sha256(other).hexdigest()
    assert pins["incoming/b.png"].version_id == current


def test_a_line_whose_object_identity_is_malformed_is_quarantined_not_labeled(tmp_path):
    """A batch line whose alp-object cannot be read cannot carry a pin: it is quarantined with the reason, before
    anyone labels pixels nothing could check later."""
    (tmp_path / "a.png").write_bytes(_jpeg(240))
    line = {"source-ref": str(tmp_path / "a.png"), "alp-object": {"bucket": "b"}}  # no key
    (tmp_path / "batch.jsonl").write_text(json.dumps(line) + "\n")
    summary = run_batch(str(tmp_path / "batch.jsonl"), str(tmp_path / "out"), Settings(), engine=None)
    assert summary.routes["quarantine"] == 1 and summary.quarantine_reasons == {"bad_manifest_line": 1}
