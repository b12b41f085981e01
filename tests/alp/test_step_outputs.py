"""Outputs keyed by their inputs: only a complete record of the same inputs is reused."""

from __future__ import annotations

import hashlib
import json

from alp import step_outputs
from alp.step_outputs import RECORD_FILE, begin_output, digest, finish_output, read_record, stored_output

INPUTS = {"manifest_sha256": "a" * 64, "bundle_id": "v0001-abc", "settings_sha256": "b" * 64}
OTHER = {**INPUTS, "bundle_id": "v0002-def"}


def test_the_digest_is_canonical():
    assert digest(INPUTS) == digest(dict(reversed(list(INPUTS.items()))))
    assert digest(INPUTS) != digest(OTHER)


def test_given_a_complete_record_of_the_same_inputs_then_it_is_reused_and_nothing_else_is(tmp_path):
    out = str(tmp_path / "inference") + "/"
    assert stored_output(out, "Infer", digest(INPUTS)) is None  # nothing there
    begin_output(out, "Infer", INPUTS)
    assert not (tmp_path / "inference").exists()  # nothing to invalidate: the folder is left as it was
    finish_output(out, "Infer", INPUTS, {"routes": {"auto": 3}})
    record = stored_output(out, "Infer", digest(INPUTS))
    assert record is not None and record.result == {"routes": {"auto": 3}} and record.inputs == INPUTS
    assert stored_output(out, "Infer", digest(OTHER)) is None  # other inputs
    assert stored_output(out, "Prepare", digest(INPUTS)) is None  # another step's record


def test_given_a_rewrite_that_crashed_then_the_older_complete_output_is_not_trusted(tmp_path):
    out = str(tmp_path) + "/"
    finish_output(out, "Infer", INPUTS)
    begin_output(out, "Infer", OTHER)  # the run for OTHER starts rewriting the folder... and dies
    record = read_record(out)
    assert record is not None and not record.complete and record.inputs_sha256 == digest(OTHER)
    assert stored_output(out, "Infer", digest(INPUTS)) is None
    assert stored_output(out, "Infer", digest(OTHER)) is None


def test_a_record_that_cannot_be_read_is_no_record(tmp_path):
    (tmp_path / RECORD_FILE).write_text('{"step": "Infer", "complete": tr')  # cut off mid-write
    assert read_record(str(tmp_path)) is None
    (tmp_path / RECORD_FILE).write_text(json.dumps({"step": "Infer", "inputs": {}, "inputs_sha256": "x",
                                                    "complete": True}))
    assert read_record(str(tmp_path)) is None  # not a sha256


def test_content_sha256_is_of_the_bytes(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"source-ref": "s3://b/a.jpg"}\n')
    assert step_outputs.content_sha256(str(tmp_path / "m.jsonl")) == hashlib.sha256(
        b'{"source-ref": "s3://b/a.jpg"}\n').hexdigest()
